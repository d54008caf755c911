"""Granted (eager) attempts with no lease yet, through SIGKILL: of the worker running one
before ``eager_claim_after`` (it costs the attempt a recorded timeout, attempt 2 completes),
and of the df-server that granted one after its append and before its answer (the worker's
stored report has its task stored). The workflow completes once; no attempt runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server.report_requests import BEFORE_ANSWER_HOOK
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.eager_flows import logged_flow
from tests.integration.helpers import watch
from tests.integration.test_eager_crash import ARGS, _finish, executions

pytestmark = pytest.mark.asyncio


def _lost_retries(history: list[ev.Event]) -> list[tuple[int, int]]:
    """(seq, attempt) of every attempt recorded timed out as lost with its worker."""
    out = []
    for e in history:
        if isinstance(e, ev.ActivityRetryScheduled):
            assert e.failure.timeout_type == "start_to_close", e.failure
            assert "lost with its worker" in e.failure.message, e.failure
            out.append((e.seq, e.attempt))
    return out


async def test_a_worker_killed_mid_attempt_before_it_claims_the_lease(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The granted worker runs step 0 (slow) with no lease and is SIGKILLed in the middle:
    the check finds neither outcome nor lease, records attempt 1 timed out, and attempt 2
    (a stored task) runs on another worker."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.server("--eager-check", "1", "--sticky-timeout", "1")
    slow_env = dict(daemons.env, DF_TEST_ACTIVITY_SECONDS="30")
    slow = daemons.special(
        "slow",
        "daemons.df_worker",
        "--nats",
        daemons.url,
        "--task-queue",
        "tests",
        "--eager-claim-after",
        "20",
        *ARGS,
        env=slow_env,
    )
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        tasks = await watch(client, f"{client.layout.prefix}.at.>")
        leases = await watch(client, f"$KV.{client.layout.activity_bucket}.lease.>")
        h = await client.start_workflow(logged_flow, "m-1", id="m-1", task_queue="tests")
        await wait_for(lambda: ("m-1", 0, 1) in executions(log), 30)
        slow.kill()
        daemons.worker(*ARGS, "--eager-claim-after", "0.3")
        histories = await _finish(client, ["m-1"], log, once=False)
        assert sorted(executions(log)) == [("m-1", 0, 1), ("m-1", 0, 2), ("m-1", 1, 1)]
        assert _lost_retries(histories["m-1"]) == [(1, 1)]
        await client.pub.nc.flush()
        stored = [client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.run_id, t.seq, t.attempt) for t in stored] == [(h.run_id, 1, 2)]
        # the killed attempt never claimed one; attempt 2 (a stored task) claimed its own;
        # step 1 ran where it was decided, with none
        assert [m.subject.split(".")[-3:] for m in leases] == [[h.run_id, "1", "2"]]
    finally:
        await client.close()


async def test_effects_derived_again_after_a_df_server_killed_before_its_answer(
    daemons: Daemons, tmp_path: Path
) -> None:
    """df-server appends the report that schedules step 0, grants its attempt, stores its
    check list and dies (SIGKILL) before the answer goes out. The worker, with no answer,
    ran none of that request's grants and stores its report, naming the request: the next
    df-server takes it as a duplicate, derives its effects again and stores attempt 1's task
    (that worker runs nothing granted by it). Attempt 1 runs once, through its task; the
    dead server's check finds its outcome; nothing is timed out."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    # the check comes well after the stored report (had it come first, finding neither an
    # outcome nor a lease, it would have recorded the attempt timed out)
    server_args = ("--eager-check", "8", "--sticky-timeout", "1")
    doomed = daemons.special(
        "doomed",
        "daemons.df_server",
        "--nats",
        daemons.url,
        *server_args,
        env=dict(daemons.env, **{BEFORE_ANSWER_HOOK: "die"}),
    )
    await wait_namespace(daemons.url)
    daemons.worker(*ARGS, "--eager-claim-after", "0.3")
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    try:
        tasks = await watch(client, f"{client.layout.prefix}.at.>")
        h = await client.start_workflow(logged_flow, "a-1", id="a-1", task_queue="tests")
        await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 30)
        assert doomed.proc is not None and doomed.proc.returncode == -9
        daemons.server(*server_args)
        histories = await _finish(client, ["a-1"], log, once=True)
        history = histories["a-1"]
        assert _lost_retries(history) == []
        scheduled = [e for e in history if isinstance(e, ev.ActivityScheduled)]
        assert [(e.seq, bool(e.eager)) for e in scheduled] == [(1, True), (2, True)]
        await client.pub.nc.flush()
        stored = [client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.run_id, t.seq, t.attempt) for t in stored] == [(h.run_id, 1, 1)]
    finally:
        await client.close()
