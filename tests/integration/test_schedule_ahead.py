"""Actions recorded ahead of their time (ALLOW_ALL) against a real nats-server: started at their
time and never before, exactly once across a SIGKILL of df-server or of nats-server between
"recorded ahead" and "due", and a pause, an update or a delete in that window is honoured."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.schedule_spec import iso
from durablefuture.core.schedules import ScheduleState, apply_pause, step
from durablefuture.natsserver import NatsServer
from durablefuture.schedules import Schedules
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.publisher import WrongLastSequence
from tests.conftest import Daemons, wait_for, wait_namespace


def quick(n: int):  # type: ignore[no-untyped-def]
    return n + 1
    yield  # a generator: a workflow


def every(seconds: int, prefix: str, offset: int = 0, queue: str = "sq") -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(quick, 1, id_prefix=prefix, task_queue=queue),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=seconds, offset=offset)]),
        policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
    )


def first_in(seconds: float, period: int) -> int:
    """The offset of an ``every period`` interval whose next fire time is ``seconds`` (up to
    one more, to a whole second) from now: a test waits that long for its first action, not
    for a random phase of the period. ``seconds`` stays below ``period``."""
    return math.ceil(time.time() + seconds) % period


def pending_at(state: ScheduleState, margin: float = 0.0) -> float | None:
    """The fire time of the action recorded ahead, if it is more than ``margin`` s away."""
    now = time.time()
    times = [r.fire_at for r in state.running if r.fire_at is not None and r.pending(now)]
    return times[0] if times and times[0] > now + margin else None


async def started_at(client: df.Client, wid: str) -> list[float]:
    """WorkflowStarted.at of every run of ``wid``."""
    out = []
    for _run, batch in await client.history.read_workflow(wid):
        first = batch.events[0]
        if isinstance(first, ev.WorkflowStarted):
            out.append(first.at)
    return out


async def record_ahead(client: df.Client, sid: str, margin: float) -> float:
    async def found() -> float | None:
        return pending_at(await Schedules(client).state(sid), margin)

    at: float = await wait_for(found, timeout=30)
    return at


async def test_actions_recorded_ahead_start_on_time_once_and_describe_shows_them() -> None:
    opts = ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    async with LocalEnvironment(server_options=opts) as e, e.worker("sq", workflows=[quick]):
        handle = await e.client.create_schedule("on", every(3, "on"))
        first = await record_ahead(e.client, "on", 0.0)
        d = await handle.describe()
        # recorded ahead: the next action time, not a running or taken action
        assert d.next_action_times[0].timestamp() == first
        assert d.running_actions == () and d.actions_taken == 0
        wids = [f"on-{iso(first + 3 * i)}" for i in range(3)]

        async def ran() -> bool:
            for w in wids:
                if not await started_at(e.client, w):
                    return False
            return True

        await wait_for(ran, timeout=30)
        for i, wid in enumerate(wids):
            [at] = await started_at(e.client, wid)  # exactly one run
            assert at >= first + 3 * i  # never before its time
        d = await handle.describe()
        assert d.next_action_times[0].timestamp() > time.time() - 1
        assert all(a.scheduled_time.timestamp() <= time.time() for a in d.running_actions)


async def test_pause_update_and_delete_before_the_fire_time_are_honoured() -> None:
    opts = ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    async with LocalEnvironment(server_options=opts) as e, e.worker("sq", workflows=[quick]):
        c = e.client
        period = 8
        # the next fire time 7 s away: recorded ahead in all three, at least 5 s away (a
        # loaded machine must still pause, update and delete before it)
        off = first_in(7.0, period)
        handles = {
            sid: await c.create_schedule(sid, every(period, sid, off)) for sid in ("p", "u", "d")
        }
        await c.create_schedule("ctl", every(period, "ctl", off))
        fire = await record_ahead(c, "p", 5.0)
        taken = (await handles["p"].describe()).actions_taken  # those before ``fire``
        for sid in ("u", "d"):

            async def recorded(sid: str = sid) -> bool:
                return pending_at(await Schedules(c).state(sid)) == fire

            await wait_for(recorded, timeout=5)
        await handles["p"].pause("before its time")
        moved = (off + 1) % period
        await handles["u"].update(every(period, "u", offset=moved))  # the fire time is not in it
        await handles["d"].delete()
        d = await handles["p"].describe()
        assert d.paused and d.next_action_times == () and d.running_actions == ()
        assert d.actions_taken == taken
        nxt = (await handles["u"].describe()).next_action_times[0].timestamp()
        assert nxt % period == moved and nxt > time.time() - 1  # the new spec's times

        # the same second has passed and the next one too: the control schedule ran both
        async def passed() -> bool:
            return bool(await started_at(c, f"ctl-{iso(fire + period)}"))

        await wait_for(passed, timeout=45)
        assert await started_at(c, f"ctl-{iso(fire)}")
        for sid in ("p", "u", "d"):
            assert await started_at(c, f"{sid}-{iso(fire)}") == [], sid
            assert await started_at(c, f"{sid}-{iso(fire + period)}") == [], sid
        assert len(await started_at(c, f"u-{iso(fire + 1)}")) == 1  # the updated spec runs
        assert (await handles["p"].describe()).actions_taken == taken


# df-server looks at the schedule again 1 s after an action started (--schedule-poll-interval)
# and records the next one ahead then: every 8 s leaves the starts alone at each fire time, and
# a df-server restarted after that look has several seconds before the next one is due
EVERY = 8
POLL = ("--schedule-poll-interval", "1")


def _allow_all() -> df.Schedule:
    """Every 8 s, the first time 4 s from now (the tests want it recorded ahead at least
    2 s before it)."""
    return every(EVERY, "ka", first_in(4.0, EVERY), queue="none")


async def _runs_once_on_time(client: df.Client, times: list[float]) -> None:
    for t in times:
        at = await started_at(client, f"ka-{iso(t)}")
        assert len(at) == 1, (iso(t), at)  # once
        assert at[0] >= t  # never before its time


async def test_sigkill_of_df_server_between_recorded_ahead_and_due(daemons: Daemons) -> None:
    server = daemons.server(*POLL)
    await wait_namespace(daemons.url)
    async with await df.Client.connect(daemons.url) as client:
        await client.create_schedule("ka", _allow_all())
        fire = await record_ahead(client, "ka", 2.0)
        server.kill()  # recorded, not due; df-server down through the fire time
        await wait_for(lambda: time.time() > fire + 0.5, timeout=30)
        second = daemons.server(*POLL)

        async def ran(t: float) -> bool:
            return bool(await started_at(client, f"ka-{iso(t)}"))

        await wait_for(lambda: ran(fire), timeout=40)
        nxt = await record_ahead(client, "ka", 1.0)  # fire + EVERY, or later on a slow machine
        assert nxt > fire and (nxt - fire) % EVERY == 0
        second.kill()  # recorded again; restarted before its time this once
        daemons.server(*POLL)
        await wait_for(lambda: ran(nxt), timeout=40)
        await wait_for(lambda: ran(nxt + EVERY), timeout=40)
        times = [fire + EVERY * i for i in range(int(nxt - fire) // EVERY + 2)]
        await _runs_once_on_time(client, times)


async def test_sigkill_of_nats_server_between_recorded_ahead_and_due(tmp_path: Path) -> None:
    store = str(tmp_path / "nats")
    server = NatsServer(store)
    server.start()
    daemons = Daemons(tmp_path, server.url)
    try:
        daemons.server(*POLL)
        await wait_namespace(server.url)
        async with await df.Client.connect(server.url) as client:
            await client.create_schedule("ka", _allow_all())
            fire = await record_ahead(client, "ka", 2.0)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        restarted = NatsServer(store, port=server.port)
        restarted.start()
        server = restarted
        async with await df.Client.connect(server.url) as client:

            async def ran(t: float) -> bool:
                return bool(await started_at(client, f"ka-{iso(t)}"))

            await wait_for(lambda: ran(fire + EVERY), timeout=60)
            await _runs_once_on_time(client, [fire, fire + EVERY])
    finally:
        daemons.stop_all()
        server.stop(kill=True)


async def test_a_withdrawal_stepped_before_the_fire_time_conflicts_with_the_start() -> None:
    """Another df-server's pause, stepped before the fire time but written after the action's
    timer fired, must not be committed: it would withdraw an action whose run has started (the
    record paused, the run neither running nor taken). It is refused, and stepped again."""
    opts = ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    async with LocalEnvironment(server_options=opts) as e, e.worker("sq", workflows=[quick]):
        c = e.client
        s = Schedules(c)
        await c.create_schedule("race", every(3, "race"))
        fire = await record_ahead(c, "race", 1.0)
        loaded = await s.store.load("race")
        assert loaded is not None
        state, seq = s.codec.decode_state(loaded[0]), loaded[1]
        now = time.time()
        assert now < fire
        withdrawn = step(apply_pause(state, True, "late", now, "other-server"), now, {}, 0.5, 60)
        wid = f"race-{iso(fire)}"
        assert all(r.workflow_id != wid for r in withdrawn.state.running)
        await wait_for(lambda: started_at(c, wid), timeout=30)  # the action's run started
        with pytest.raises(WrongLastSequence):
            await s.store.save("race", s.codec.encode_state(withdrawn.state), seq)
        # stepped again now, the pause keeps the started action (it is due)
        after = await s.state("race")
        now = time.time()
        again = step(apply_pause(after, True, "late", now, "other-server"), now, {}, 0.5, 60)
        assert any(r.workflow_id == wid for r in (*again.state.running, *again.state.recent))
        assert len(await started_at(c, wid)) == 1
