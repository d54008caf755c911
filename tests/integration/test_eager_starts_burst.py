"""A burst of eager starts with nats-server SIGKILLed in the middle of it, restarted on the
same store: every workflow completes exactly once (one run per id), and no activity attempt
runs that history does not record (an eager start's activity task stored without its batch
is never run: ``worker/first_batch.py``).

A start that fails while NATS is away is asked again with the same request id, as a client
that got no answer does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core.errors import DurableFutureError
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import check_history
from tests.integration.test_nats_restart import (
    ARGS,
    STEPS,
    WORKER_ARGS,
    executions,
    recorded_attempts,
    restart_flow,
)

pytestmark = pytest.mark.asyncio


async def _start(client: df.Client, wid: str) -> None:
    options = df.WorkflowOptions(task_queue="tests", request_id=f"req-{wid}")
    for _ in range(20):  # bounded: NATS is back within seconds
        try:
            await client.start_workflow(restart_flow, wid, id=wid, options=options)
            return
        except DurableFutureError:
            await asyncio.sleep(0.5)  # asked again, as a client that got no answer does
    raise AssertionError(f"{wid} could not be started")


async def test_nats_sigkill_during_a_burst_of_eager_starts(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.05"
    # a grant whose answer the kill lost is checked after 3 s, not the default 30 s; an attempt
    # still running by then has claimed its lease (--eager-claim-after) and is left running
    daemons.server("--input-ack-wait", "10", "--eager-start-wait", "0.2", "--eager-check", "3")
    lazy = ("--eager-claim-after", "0.5")
    workers = [daemons.worker(*ARGS, *WORKER_ARGS, *lazy) for _ in range(2)]
    await wait_namespace(daemons.url)
    for w in workers:  # they take offers
        await wait_for(lambda w=w: "polling task queue" in w.log(), 30)
    client = await df.Client.connect(daemons.url, connect_timeout=30)
    client.request_timeout = 60
    ids = [f"burst-{i}" for i in range(120)]
    try:
        burst = asyncio.gather(*(_start(client, wid) for wid in ids))
        # the first activity ran: starts are being made (most still to come)
        await wait_for(lambda: bool(executions(log)), 60, 0.005)
        nats_server.stop(kill=True)
        await asyncio.sleep(2.0)  # nats-server is down this long
        nats_server.start()
        await burst
        results = await asyncio.gather(
            *(client.get_workflow_handle(wid).result(timeout=90) for wid in ids)
        )
        histories = {wid: await client.get_workflow_handle(wid).fetch_history() for wid in ids}
        runs = {wid: await client.history.read_workflow(wid) for wid in ids}
    finally:
        await client.close()
    for wid, result in zip(ids, results, strict=True):
        assert result == [f"{wid}:{s}" for s in range(STEPS)], (wid, result)
        check_history(wid, histories[wid])
        assert len({run for run, _ in runs[wid]}) == 1, wid  # one run per id
    ran = executions(log)
    twice = {k: n for k, n in ran.items() if n > 1}
    unrecorded = [
        (wid, step, attempt)
        for wid, step, attempt in ran
        if attempt not in recorded_attempts(histories[wid]).get(step + 1, set())
    ]
    # created eagerly: the first batch holds the first activity too
    eager = sum(1 for wid in ids if len(runs[wid][0][1].events) > 1)
    print(f"{len(ids)} runs ({eager} started eagerly), {sum(ran.values())} executions")
    assert eager > 0
    assert not twice, f"attempts that ran more than once: {sorted(twice.items())}"
    assert not unrecorded, f"executions of attempts history does not have: {unrecorded}"
