"""The delayed "running" status entry (``server/status_later.py``) under faults: runs created
while a df-server drains at a clean shutdown, a NATS outage longer than a few tries, a run
closed and removed between the write's open check and its create, an entry lost with
``status_delay`` 0, and the bound on the option.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import durablefuture as df
from daemons.df_server import main
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import TransportError
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.compaction import purge
from durablefuture.transport.history import Batch
from durablefuture.transport.subjects import Layout
from tests.conftest import wait_for
from tests.integration.flows import ACTIVITIES, WORKFLOWS

pytestmark = pytest.mark.asyncio

QUEUE = "tests"
LAYOUT = Layout("default")


async def _running(client: df.Client, workflow_id: str, run_id: str) -> bool:
    summary = await client.summary(workflow_id, run_id)
    return summary is not None and summary.status == RunStatus.RUNNING


async def test_runs_created_while_a_clean_shutdown_drains_get_their_entry() -> None:
    # one start admitted at a time: many are still taken but not created when the stop begins
    options = ServerOptions(status_delay=0.5, start_concurrency=1)
    n = 100
    async with LocalEnvironment(server_options=options) as env:
        client, server = env.client, env.server
        assert server is not None
        # the stop begins as soon as the first run is created (polling would see every run
        # created already when the starts go quickly)
        first = asyncio.Event()

        class Noting(dict[str, Any]):
            def __setitem__(self, key: str, value: Any) -> None:
                super().__setitem__(key, value)
                first.set()

        server._status_pending = Noting()
        starts = [
            asyncio.create_task(
                client.start_workflow("sleeper", i, id=f"w{i}", task_queue="nobody")
            )
            for i in range(n)
        ]
        await asyncio.wait_for(first.wait(), 30)  # some runs exist, the rest coming
        created_before = {w for w in (f"w{i}" for i in range(n)) if w in _ids(server)}
        await server.shutdown()
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        created, missing = [], []
        for i in range(n):
            last = await client.history.last_of_workflow(f"w{i}")
            if last is None:
                continue  # its start was not taken before the stop: it waits in the stream
            created.append(f"w{i}")
            if not await _running(client, f"w{i}", last.run_id):
                missing.append(f"w{i}")
        # runs were created during the drain, and every run created is listed as running
        assert set(created) - created_before, (len(created), len(created_before))
        assert missing == [], f"{len(missing)} of {len(created)} open runs have no entry"
        assert server._status_pending == {}


def _ids(server: Server) -> set[str]:
    return {p.workflow_id for p in server._status_pending.values()}


def _tries(records: list[logging.LogRecord], run_id: str) -> int:
    return sum(
        1 for r in records if run_id in r.getMessage() and "running status entry" in r.getMessage()
    )


async def test_pending_entries_outlive_a_nats_outage_longer_than_a_few_tries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durablefuture.server")
    nats_server = NatsServer(f"{tmp_path}/nats").start()
    try:
        server = await Server.connect(nats_server.url, ServerOptions(status_delay=0.2))
        await server.start()
        # a try while NATS is away fails when its read or PubAck times out: after 1 s, not 5 s
        server.pub.timeout = 1.0
        running = asyncio.create_task(server.run())
        client = await df.Client.connect(nats_server.url)
        try:
            handles = [
                await client.start_workflow("sleeper", i, id=f"o{i}", task_queue="nobody")
                for i in range(3)
            ]
            run_ids = [h.run_id or "" for h in handles]
            assert all(r in server._status_pending for r in run_ids)
            nats_server.stop()
            # every entry has failed five times: as many as a write was once given in all
            await wait_for(lambda: all(_tries(caplog.records, r) >= 5 for r in run_ids), 120, 0.2)
            nats_server.start()
            for h, run_id in zip(handles, run_ids, strict=True):
                await wait_for(lambda h=h, r=run_id: _running(client, h.id, r), 60, 0.2)
            assert server._status_pending == {}
            for h in handles:  # each run is still open, told by its history too
                assert (await h.describe()).status == RunStatus.RUNNING
        finally:
            await client.close()
            await server.shutdown()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    finally:
        nats_server.stop(kill=True)


async def test_a_run_closed_and_removed_between_the_check_and_the_create_loses_the_entry() -> None:
    async with (
        LocalEnvironment(server_options=ServerOptions(status_delay=60)) as env,
        env.worker(QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES),
    ):
        client, server = env.client, env.server
        assert server is not None and server.visibility is not None
        handle = await client.start_workflow("waiting_add", 1, id="gone", task_queue=QUEUE)
        run_id = handle.run_id or ""
        pending = server._status_pending.pop(run_id)
        pending.handle.cancel()

        # the write's open check answers, then waits (a busy event loop, a slow reply) while
        # the run closes and is deleted
        checked, go_on = asyncio.Event(), asyncio.Event()
        real = server.history.last_batch

        async def held(workflow_id: str, rid: str) -> Batch | None:
            batch = await real(workflow_id, rid)
            if not checked.is_set():
                checked.set()
                await go_on.wait()
            return batch

        server.history.last_batch = held  # type: ignore[method-assign]
        write = asyncio.create_task(server._status_write(run_id, pending))
        await checked.wait()
        await handle.signal("go", 1)
        assert await handle.result(timeout=30) == 4  # completed once
        await wait_for(lambda: _closed(client, "gone", run_id), 10)
        await handle.delete()
        assert await client.summary("gone", run_id) is None
        go_on.set()
        await asyncio.wait_for(write, 30)

        assert await client.summary("gone", run_id) is None  # no "running" entry left
        key = LAYOUT.status_key("gone", run_id)
        assert key not in server.visibility.index.runs
        assert await client.count_workflows("ExecutionStatus = 'Running'") == 0
        assert await client.history.last_batch("gone", run_id) is None  # the run is gone


async def test_a_failed_check_after_the_create_is_tried_again() -> None:
    async with (
        LocalEnvironment(server_options=ServerOptions(status_delay=60)) as env,
        env.worker(QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES),
    ):
        client, server = env.client, env.server
        assert server is not None and server.visibility is not None
        handle = await client.start_workflow("waiting_add", 1, id="gone2", task_queue=QUEUE)
        run_id = handle.run_id or ""
        pending = server._status_pending.pop(run_id)
        pending.handle.cancel()
        checked, go_on = asyncio.Event(), asyncio.Event()
        real = server.history.last_batch
        failed = asyncio.Event()

        async def flaky(workflow_id: str, rid: str) -> Batch | None:
            if go_on.is_set() and not failed.is_set():
                failed.set()  # the check after the create (the run is gone): no answer
                raise TransportError("reading the history failed: nats: timeout")
            batch = await real(workflow_id, rid)
            if not checked.is_set():
                checked.set()
                await go_on.wait()
            return batch

        server.history.last_batch = flaky  # type: ignore[method-assign]
        write = asyncio.create_task(server._status_write(run_id, pending))
        await checked.wait()
        await handle.signal("go", 1)
        assert await handle.result(timeout=30) == 4  # completed once
        await wait_for(lambda: _closed(client, "gone2", run_id), 10)
        await handle.delete()
        go_on.set()
        await asyncio.wait_for(write, 30)
        assert failed.is_set()
        assert await _running(client, "gone2", run_id)  # the stale entry, for now
        again = server._status_pending.pop(run_id)  # the check is due again
        again.handle.cancel()
        assert again.created > 0 and again.tries == 1
        await server._status_write(run_id, again)
        assert await client.summary("gone2", run_id) is None
        assert LAYOUT.status_key("gone2", run_id) not in server.visibility.index.runs
        assert await client.history.last_batch("gone2", run_id) is None  # the run is gone


async def _closed(client: df.Client, workflow_id: str, run_id: str) -> bool:
    summary = await client.summary(workflow_id, run_id)
    return summary is not None and summary.status in RunStatus.CLOSED


async def test_with_no_delay_a_lost_entry_is_written_at_the_runs_next_input() -> None:
    async with (
        LocalEnvironment(server_options=ServerOptions(status_delay=0)) as env,
        env.worker(QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES),
    ):
        client, server = env.client, env.server
        assert server is not None and server.visibility is not None
        handle = await client.start_workflow("poked_add", 1, id="lost", task_queue=QUEUE)
        run_id = handle.run_id or ""
        await wait_for(lambda: _waiting(handle), 30)
        assert await _running(client, "lost", run_id)
        # as a df-server killed between the start's append and its status entry leaves it:
        # no entry, and a server that knows the run only from its history
        runs = LAYOUT.runs_bucket
        subject = f"$KV.{runs}.{LAYOUT.status_key('lost', run_id)}"
        await purge(server.nc, f"KV_{runs}", subject)
        await server.visibility.forget("lost", run_id)
        server._cache.pop(run_id, None)
        assert await client.summary("lost", run_id) is None

        await handle.signal("poke")
        await wait_for(lambda: _running(client, "lost", run_id), 20)
        await handle.signal("go", 2)
        assert await handle.result(timeout=30) == 6  # completed once
        await wait_for(lambda: _closed(client, "lost", run_id), 10)


async def _waiting(handle: df.WorkflowHandle) -> bool:
    return bool((await handle.describe()).signal_waits)


async def test_the_status_delay_is_capped_with_an_error_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"status_delay.*--status-delay.*from 0 to 60"):
        ServerOptions(status_delay=61)
    with pytest.raises(ValueError, match="status_delay"):
        ServerOptions(status_delay=-1)
    assert ServerOptions(status_delay=60).status_delay == 60

    result = CliRunner().invoke(main, ["--status-delay", "61"])
    assert result.exit_code != 0
    assert "--status-delay" in result.output and "61" in result.output
