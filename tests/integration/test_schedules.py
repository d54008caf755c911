"""Schedules against a real nats-server: actions start workflows with stable ids, describe,
pause/unpause, trigger, backfill, delete, overlap policies; SIGKILL of df-server and of
nats-server neither loses nor duplicates an action."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

import durablefuture as df
from durablefuture.core.schedule_spec import iso
from durablefuture.natsserver import NatsServer
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.subjects import Layout, decode_token
from tests.conftest import ROOT, Daemons, wait_for, wait_namespace


def quick(n: int):  # type: ignore[no-untyped-def]
    return n + 1
    yield  # a generator: a workflow


def gated(n: int):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go", timeout=300)
    return n


def every_second(workflow: object, overlap: df.Overlap, **policy: object) -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(workflow, 1, id_prefix="job", task_queue="sq"),  # type: ignore[arg-type]
        spec=df.ScheduleSpec(intervals=[df.Interval(every=timedelta(seconds=1))]),
        policy=df.SchedulePolicy(overlap=overlap, **policy),  # type: ignore[arg-type]
    )


def env() -> LocalEnvironment:
    return LocalEnvironment(
        server_options=ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    )


async def test_actions_run_with_stable_ids_and_the_handle_works() -> None:
    async with env() as e, e.worker("sq", workflows=[quick]):
        client = e.client
        handle = await client.create_schedule("s1", every_second(quick, df.Overlap.SKIP))
        with pytest.raises(df.ScheduleAlreadyExistsError):
            await client.create_schedule("s1", every_second(quick, df.Overlap.SKIP))

        async def done(n: int) -> bool:
            d = await handle.describe()
            return sum(a.status == "completed" for a in d.recent_actions) >= n

        await wait_for(lambda: done(2), timeout=20)
        d = await handle.describe()
        assert len(d.next_action_times) == 10
        for a in d.recent_actions:
            assert a.workflow_id == f"job-{iso(a.scheduled_time.timestamp())}"
            assert a.run_id
            assert await client.get_workflow_handle(a.workflow_id).result() == 2

        await handle.pause("maintenance")
        d = await handle.describe()
        assert d.paused and d.schedule.note == "maintenance" and d.next_action_times == ()
        taken = d.actions_taken
        await handle.trigger()  # runs even while paused
        await wait_for(lambda: _taken(handle, taken + 1), timeout=10)
        await handle.unpause()
        assert not (await handle.describe()).paused

        listed = await client.list_schedules()
        assert [s.schedule_id for s in listed] == ["s1"]
        await handle.delete()
        assert await client.list_schedules() == []
        with pytest.raises(df.ScheduleNotFoundError):
            await handle.describe()


async def _taken(handle: df.ScheduleHandle, n: int) -> bool:
    return (await handle.describe()).actions_taken >= n


async def test_backfill_starts_each_past_time_once() -> None:
    async with env() as e:
        sched = df.Schedule(
            action=df.ScheduleStartWorkflow(quick, 1, id_prefix="bf", task_queue="sq"),
            spec=df.ScheduleSpec(intervals=[df.Interval(every=60)]),
            policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
        )
        handle = await e.client.create_schedule("bf", sched)
        start = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
        await handle.backfill(start, start + timedelta(minutes=4))
        await handle.backfill(start, start + timedelta(minutes=4))  # again: nothing new
        d = await handle.describe()
        assert d.actions_taken == 5
        for k in range(5):
            wid = f"bf-{iso((start + timedelta(minutes=k)).timestamp())}"
            await wait_for(lambda w=wid: _exists(e.client, w), timeout=10)


async def _exists(client: df.Client, wid: str) -> bool:
    try:
        await client.latest_run_id(wid)
        return True
    except df.DurableFutureError:
        return False


async def _signal_running(client: df.Client, handle: df.ScheduleHandle) -> None:
    for a in (await handle.describe()).running_actions:
        if a.run_id:
            await client.get_workflow_handle(a.workflow_id).signal("go")


async def test_overlap_skip() -> None:
    async with env() as e, e.worker("sq", workflows=[gated]):
        handle = await e.client.create_schedule("sk", every_second(gated, df.Overlap.SKIP))
        await wait_for(lambda: _skipped(handle, 2), timeout=20)
        d = await handle.describe()
        assert len(d.running_actions) == 1 and d.actions_taken == 1
        await _signal_running(e.client, handle)
        await wait_for(lambda: _taken(handle, 2), timeout=20)


async def _skipped(handle: df.ScheduleHandle, n: int) -> bool:
    return (await handle.describe()).actions_skipped >= n


async def test_overlap_buffer_one() -> None:
    async with env() as e, e.worker("sq", workflows=[gated]):
        handle = await e.client.create_schedule("b1", every_second(gated, df.Overlap.BUFFER_ONE))
        await wait_for(lambda: _skipped(handle, 1), timeout=20)
        d = await handle.describe()
        assert len(d.buffered) == 1 and len(d.running_actions) == 1
        buffered = d.buffered[0]
        await _signal_running(e.client, handle)

        async def started() -> bool:
            d = await handle.describe()
            return any(a.scheduled_time == buffered for a in d.running_actions)

        await wait_for(started, timeout=20)


async def test_overlap_allow_all_and_terminate_other() -> None:
    async with env() as e, e.worker("sq", workflows=[gated]):
        handle = await e.client.create_schedule("aa", every_second(gated, df.Overlap.ALLOW_ALL))

        async def running(n: int) -> bool:
            return len((await handle.describe()).running_actions) >= n

        await wait_for(lambda: running(3), timeout=20)
        await handle.delete()
        t = await e.client.create_schedule("to", every_second(gated, df.Overlap.TERMINATE_OTHER))
        await wait_for(lambda: _taken(t, 3), timeout=20)

        async def terminated() -> bool:
            d = await t.describe()
            return any(a.status == "terminated" for a in d.recent_actions)

        await wait_for(terminated, timeout=20)
        assert len((await t.describe()).running_actions) <= 2


# ------------------------------------------------------------------ crash tests


async def _action_runs(url: str, prefix: str) -> dict[str, int]:
    """workflow id -> number of runs, for every workflow whose id starts with ``prefix``."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        layout = Layout("default")
        info = await js.stream_info(layout.stream, subjects_filter=f"{layout.prefix}.h.>")
        runs: dict[str, int] = {}
        for subject in info.state.subjects or {}:
            wid = decode_token(subject.split(".")[3])
            if wid.startswith(prefix):
                runs[wid] = runs.get(wid, 0) + 1
        return runs
    finally:
        await nc.close()


def _assert_contiguous(runs: dict[str, int], prefix: str) -> int:
    assert all(n == 1 for n in runs.values()), runs  # never started twice
    times = sorted(datetime.fromisoformat(w[len(prefix) + 1 :]).timestamp() for w in runs)
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a != 1]
    assert gaps == [], f"lost actions: {gaps}"  # every second exactly once
    return len(times)


async def _create(url: str, schedule: df.Schedule, sid: str) -> None:
    async with await df.Client.connect(url) as client:
        await client.create_schedule(sid, schedule)


def _allow_all_every_second() -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow("quick", 1, id_prefix="k", task_queue="none"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=1)]),
        policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
    )


async def test_sigkill_of_df_server_loses_and_duplicates_nothing(daemons: Daemons) -> None:
    server = daemons.server()
    await wait_namespace(daemons.url)
    await _create(daemons.url, _allow_all_every_second(), "kill")
    await wait_for(lambda: _count_at_least(daemons.url, 3), timeout=20)
    server.kill()
    down = len(await _action_runs(daemons.url, "k-"))
    # no server runs until the next one has started: the actions due meanwhile are caught up
    second = daemons.server()
    await wait_for(lambda: _count_at_least(daemons.url, down + 4), timeout=30)
    second.kill()
    third = daemons.server()  # and once more, killed mid-flight and restarted
    await wait_for(lambda: _count_at_least(daemons.url, down + 7), timeout=30)
    third.kill()
    runs = await _action_runs(daemons.url, "k-")
    assert _assert_contiguous(runs, "k") >= down + 7, daemons.logs()


async def _count_at_least(url: str, n: int) -> bool:
    return len(await _action_runs(url, "k-")) >= n


async def test_sigkill_of_nats_server_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    store = str(tmp_path / "nats")
    server = NatsServer(store)
    server.start()
    daemons = Daemons(tmp_path, server.url)
    try:
        daemons.server()
        await wait_namespace(server.url)
        await _create(server.url, _allow_all_every_second(), "kill")
        await wait_for(lambda: _count_at_least(server.url, 3), timeout=20)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        restarted = NatsServer(store, port=server.port)
        restarted.start()
        server = restarted
        before = len(await _action_runs(server.url, "k-"))
        try:
            await wait_for(lambda: _count_at_least(server.url, before + 4), timeout=40)
        except AssertionError as exc:  # say what the daemons did meanwhile
            after = len(await _action_runs(server.url, "k-")) - before
            nats_log = Path(server.log_file).read_text(errors="replace")[-4000:]
            raise AssertionError(
                f"{exc}: {after} actions after the restart\n{daemons.logs()}\n"
                f"--- nats-server\n{nats_log}"
            ) from None
        runs = await _action_runs(server.url, "k-")
        assert _assert_contiguous(runs, "k") >= before + 4, daemons.logs()
    finally:
        daemons.stop_all()
        server.stop(kill=True)


# ------------------------------------------------------------------ the df schedule commands


async def _df(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemons.df_cli", "--nats", url, "schedule", *args]
    return await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_schedule_cli() -> None:
    async with env() as e:
        url = e.nats_url
        out = await _df(
            url,
            "create",
            "nightly",
            "--workflow",
            "report",
            "--input",
            '["eu"]',
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--overlap",
            "buffer_one",
            "--catchup-window",
            "10m",
            "--json",
        )
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout)
        assert created["schedule_id"] == "nightly"
        assert len(created["next_action_times"]) == 5
        assert created["schedule"]["policy"]["overlap"] == "buffer_one"

        out = await _df(url, "describe", "nightly")
        assert out.returncode == 0 and "overlap=BUFFER_ONE" in out.stdout, out.stderr
        assert (await _df(url, "pause", "nightly", "--note", "freeze")).returncode == 0
        out = await _df(url, "list", "--json")
        assert [s["schedule"]["paused"] for s in json.loads(out.stdout)] == [True]
        assert (await _df(url, "unpause", "nightly")).returncode == 0
        out = await _df(
            url,
            "backfill",
            "nightly",
            "--start",
            "2024-03-30T00:00:00Z",
            "--end",
            "2024-04-01T00:00:00Z",
            "--overlap",
            "allow_all",
        )
        assert out.returncode == 0, out.stderr
        d = await e.client.get_schedule_handle("nightly").describe()
        # 2024-03-30 02:30 CET and the spring-forward day's 03:00 CEST
        assert [a.workflow_id for a in d.running_actions] == [
            "nightly-2024-03-30T01:30:00Z",
            "nightly-2024-03-31T01:00:00Z",
        ]
        assert (await _df(url, "trigger", "nightly")).returncode == 0
        assert (await _df(url, "delete", "nightly")).returncode == 0
        out = await _df(url, "describe", "nightly")
        assert out.returncode != 0 and "no schedule 'nightly'" in out.stderr
        out = await _df(url, "create", "bad", "--workflow", "w", "--cron", "99 * * * *")
        assert out.returncode == 2 and "invalid" in out.stderr
