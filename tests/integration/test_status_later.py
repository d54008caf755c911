"""A run's "running" status entry is written only once the run has stayed open
``ServerOptions.status_delay`` seconds (``server/status_later.py``): a short run stores one
status message (its close), a long one two; lists, counts and describe stay right in both, and
an entry lost with a SIGKILLed df-server is written by the next df-server to move the run on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.natsserver import NatsServer
from durablefuture.server import ServerOptions, status_later
from durablefuture.server.base import STATUS_WRITES, PendingStatus
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.subjects import Layout
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import ACTIVITIES, WORKFLOWS, double

pytestmark = pytest.mark.asyncio

QUEUE = "tests"
LAYOUT = Layout("default")
BUCKET_STREAM = f"KV_{LAYOUT.runs_bucket}"


def one_step(x: int):  # type: ignore[no-untyped-def]
    """Closes within milliseconds of its start: one activity."""
    return (yield df.activity(double, x, options=df.ActivityOptions(start_to_close_timeout=30)))


@asynccontextmanager
async def _env(delay: float) -> AsyncIterator[LocalEnvironment]:
    options = ServerOptions(status_delay=delay)
    async with (
        LocalEnvironment(server_options=options) as env,
        env.worker(QUEUE, workflows=[one_step, *WORKFLOWS], activities=ACTIVITIES),
    ):
        yield env


async def _stored(url: str) -> int:
    """Messages ever stored in the status bucket (its stream's last sequence: an entry
    replaced or purged still counts)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(BUCKET_STREAM)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def _entry_time_after_start(url: str, handle: df.WorkflowHandle) -> float:
    """Seconds between the run's start and the storing of its current status entry."""
    run_id = handle.run_id or ""
    history = await handle.fetch_history()
    started = history[0]
    assert isinstance(started, ev.WorkflowStarted)
    nc = await nats.connect(url)
    try:
        subject = f"$KV.{LAYOUT.runs_bucket}.{LAYOUT.status_key(handle.id, run_id)}"
        msg = await nc.jetstream().get_msg(BUCKET_STREAM, subject=subject, direct=False)
        assert msg.time is not None
        return msg.time.timestamp() - started.at
    finally:
        await nc.close()


async def _counts(client: df.Client) -> tuple[int, int]:
    running = await client.count_workflows("ExecutionStatus = 'Running'")
    completed = await client.count_workflows("ExecutionStatus = 'Completed'")
    return running, completed


async def test_a_run_that_closes_before_the_delay_stores_only_its_closed_entry() -> None:
    async with _env(30.0) as env:
        client = env.client
        before = await _stored(env.nats_url)
        handle = await client.start_workflow(one_step, 21, id="short", task_queue=QUEUE)
        assert await handle.result(timeout=30) == 42
        summary = await wait_for(lambda: client.summary("short", handle.run_id or ""), 10)
        assert summary.status == RunStatus.COMPLETED
        # one message for the run's status: its close (a "running" one before it was one more)
        assert await _stored(env.nats_url) - before == 1
        assert env.server is not None and handle.run_id not in env.server._status_pending
        assert (await handle.describe()).status == RunStatus.COMPLETED
        assert await wait_for(lambda: _counts(client), 10) == (0, 1)
        [listed] = await client.list_workflows(status="completed")
        assert listed.workflow_id == "short" and listed.run_id == handle.run_id


async def test_a_run_still_open_after_the_delay_is_listed_running_then_closed() -> None:
    delay = 2.0
    async with _env(delay) as env:
        client = env.client
        before = await _stored(env.nats_url)
        handle = await client.start_workflow("waiting_add", 4, id="long", task_queue=QUEUE)
        run_id = handle.run_id or ""
        assert (await handle.describe()).status == RunStatus.RUNNING  # from its history
        summary = await wait_for(lambda: client.summary("long", run_id), 30)
        assert summary.status == RunStatus.RUNNING
        # written once the run had been open the delay, not at its start
        assert await _entry_time_after_start(env.nats_url, handle) >= delay - 0.05
        assert await wait_for(lambda: _counts(client), 10) == (1, 0)
        [listed] = await client.list_workflows(status="running")
        assert (listed.workflow_id, listed.run_id) == ("long", run_id)

        await handle.signal("go", 1)
        assert await handle.result(timeout=30) == 10
        closed = await wait_for(
            lambda: _closed(client, "long", run_id), 10
        )  # the close replaced the running entry
        assert closed.status == RunStatus.COMPLETED and closed.result is not None
        assert await _stored(env.nats_url) - before == 2
        assert await wait_for(lambda: _counts(client), 10) == (0, 1)
        assert (await handle.describe()).status == RunStatus.COMPLETED


async def test_the_entries_of_a_burst_are_written_a_few_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The running entries of runs started together fall due together (just when their
    timers of the same length fire): at most ``STATUS_WRITES`` are written at once, the
    others wait their turn, and every one is written."""
    n = 30
    monkeypatch.setattr(status_later, "WRITE_TURN_WAIT", 120.0)  # none goes ahead here
    async with _env(0.2) as env:
        server, client = env.server, env.client
        assert server is not None
        write = server._status_write_now
        inside = [0, 0]  # now, most
        go = asyncio.Event()

        async def held_write(run_id: str, pending: PendingStatus) -> None:
            inside[0] += 1
            inside[1] = max(inside)
            try:
                await go.wait()  # every write stays in until all due ones are seen
                await write(run_id, pending)
            finally:
                inside[0] -= 1

        server._status_write_now = held_write  # type: ignore[method-assign]
        handles = await asyncio.gather(
            *(
                client.start_workflow("waiting_add", i, id=f"burst-{i}", task_queue=QUEUE)
                for i in range(n)
            )
        )

        async def all_due() -> bool:
            return not server._status_pending and inside[0] > 0

        await wait_for(all_due, 30)
        for _ in range(50):  # the writes due run until they wait: in a write, or for a turn
            await asyncio.sleep(0)
        assert inside[1] == STATUS_WRITES, f"{inside[1]} entries were written at once"
        go.set()

        async def listed() -> bool:
            return await _counts(client) == (n, 0)

        await wait_for(listed, 30)
        assert inside[1] == STATUS_WRITES
        for i, handle in enumerate(handles):
            await handle.signal("go", 1)
            assert await handle.result(timeout=30) == 2 * (i + 1)


async def test_an_entry_waits_for_its_turn_a_while_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries that wait for a turn behind writes that do not finish (a sustained flow of
    starts writes more entries than eight at a time can) are written anyway after
    ``WRITE_TURN_WAIT``: the waiting ones do not pile up without end."""
    n = 20
    monkeypatch.setattr(status_later, "WRITE_TURN_WAIT", 0.5)
    async with _env(0.2) as env:
        server, client = env.server, env.client
        assert server is not None
        write = server._status_write_now
        stuck = [0]
        go = asyncio.Event()

        async def held_write(run_id: str, pending: PendingStatus) -> None:
            if stuck[0] < STATUS_WRITES:  # the first ones hold every turn until ``go``
                stuck[0] += 1
                await go.wait()
            await write(run_id, pending)

        server._status_write_now = held_write  # type: ignore[method-assign]
        handles = await asyncio.gather(
            *(
                client.start_workflow("waiting_add", i, id=f"burst-{i}", task_queue=QUEUE)
                for i in range(n)
            )
        )

        async def the_others_listed() -> bool:
            return await _counts(client) == (n - STATUS_WRITES, 0)

        try:
            await wait_for(the_others_listed, 30)
        finally:
            go.set()

        async def listed() -> bool:
            return await _counts(client) == (n, 0)

        await wait_for(listed, 30)
        for i, handle in enumerate(handles):
            await handle.signal("go", 1)
            assert await handle.result(timeout=30) == 2 * (i + 1)


async def _closed(client: df.Client, workflow_id: str, run_id: str) -> object:
    summary = await client.summary(workflow_id, run_id)
    return summary if summary is not None and summary.status in RunStatus.CLOSED else None


async def test_with_no_delay_the_running_entry_is_written_before_the_start_is_answered() -> None:
    async with _env(0.0) as env:
        handle = await env.client.start_workflow("waiting_add", 1, id="now", task_queue=QUEUE)
        summary = await env.client.summary("now", handle.run_id or "")
        assert summary is not None and summary.status == RunStatus.RUNNING
        await handle.signal("go", 1)
        assert await handle.result(timeout=30) == 4


async def test_a_clean_shutdown_writes_the_pending_entries() -> None:
    async with _env(60.0) as env:
        handle = await env.client.start_workflow("waiting_add", 1, id="pending", task_queue=QUEUE)
        run_id = handle.run_id or ""
        assert env.server is not None and run_id in env.server._status_pending
        assert await env.client.summary("pending", run_id) is None
        await env.server.shutdown()
        summary = await env.client.summary("pending", run_id)
        assert summary is not None and summary.status == RunStatus.RUNNING


async def test_a_late_write_for_a_run_closed_and_removed_meanwhile_writes_nothing() -> None:
    async with _env(60.0) as env:
        client, server = env.client, env.server
        assert server is not None
        handle = await client.start_workflow("waiting_add", 1, id="gone", task_queue=QUEUE)
        run_id = handle.run_id or ""
        pending = server._status_pending[run_id]
        await handle.signal("go", 1)
        assert await handle.result(timeout=30) == 4
        await wait_for(lambda: _closed(client, "gone", run_id), 10)
        await handle.delete()
        assert await client.summary("gone", run_id) is None
        before = await _stored(env.nats_url)
        # the write a df-server that did not see the close would still have pending
        server._cache.pop(run_id, None)
        await server._status_write(run_id, pending)
        assert await client.summary("gone", run_id) is None
        assert await _stored(env.nats_url) == before


async def test_an_entry_lost_with_a_killed_df_server_is_written_by_the_next_one(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    # this one would write the entry only after a minute: it is killed long before
    first = daemons.server("--status-delay", "60")
    daemons.worker(
        "--workflows",
        "tests.integration.flows:WORKFLOWS",
        "--activities",
        "tests.integration.flows:ACTIVITIES",
    )
    await wait_namespace(url)
    client = await df.Client.connect(url)
    try:
        moved = await client.start_workflow("poked_add", 1, id="moved", task_queue=QUEUE)
        idle = await client.start_workflow("waiting_add", 2, id="idle", task_queue=QUEUE)
        for h in (moved, idle):  # both have handled their first workflow task: now waiting
            await wait_for(lambda h=h: _waiting(h), 30)
            assert await client.summary(h.id, h.run_id or "") is None
        first.kill()
        daemons.server("--status-delay", "1")  # a df-server again, as after any crash

        # the next input of a run brings it to a df-server, which writes its entry
        await moved.signal("poke")
        summary = await wait_for(lambda: client.summary("moved", moved.run_id or ""), 30)
        assert summary.status == RunStatus.RUNNING
        await wait_for(lambda: _listed_running(client, "moved"), 20)
        # a run with no input since is told right by its history, and listed at its close
        assert (await idle.describe()).status == RunStatus.RUNNING
        await idle.signal("go", 3)
        assert await idle.result(timeout=30) == 10
        await moved.signal("go", 2)
        assert await moved.result(timeout=30) == 6
        for h in (moved, idle):
            closed = await wait_for(lambda h=h: _closed(client, h.id, h.run_id or ""), 10)
            assert closed.status == RunStatus.COMPLETED
            completed = [e for e in await h.fetch_history() if isinstance(e, ev.WorkflowCompleted)]
            assert len(completed) == 1  # each completed once
    finally:
        await client.close()


async def _waiting(handle: df.WorkflowHandle) -> bool:
    return bool((await handle.describe()).signal_waits)


async def _listed_running(client: df.Client, workflow_id: str) -> bool:
    runs = await client.list_workflows("ExecutionStatus = 'Running'", page_size=10)
    return workflow_id in {r.workflow_id for r in runs}
