"""A report df-server appended but whose effects it could not store, with its worker killed
(SIGKILL) before it stores the report itself: df-server's own stored copy has the effects
derived again. The workflow completes once; no attempt runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server.inputs import EFFECTS_HOOK
from durablefuture.worker.reports import STORE_ANSWER_HOOK
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.eager_flows import flaky_flow
from tests.integration.helpers import check_history
from tests.integration.test_eager_crash import MODULE, executions

pytestmark = pytest.mark.asyncio

FLAKY = ("--workflows", f"{MODULE}:flaky_flow", "--activities", f"{MODULE}:flaky_step")


async def test_a_report_whose_effects_failed_outlives_its_worker(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Attempt 1 of step 0 is granted to the worker that decided it (eager: no stored task)
    and fails. df-server appends its ActivityRetryScheduled, then fails to store its effect
    (the retry timer) and answers ``store``; the worker dies at that answer (SIGKILL) before
    it stores the report. A signal then appends a newer batch, so the attempt's check finds
    its outcome recorded and not the newest: nothing but df-server's own stored copy of the
    report would ever arm the retry timer, and the run would wait with no recorded reason.
    The copy is taken as a duplicate of the batch appended: the timer is armed, attempt 2
    runs once on another worker, and the run completes once."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    server = daemons.special(
        "failing",
        "daemons.df_server",
        "--nats",
        daemons.url,
        "--eager-check",
        "8",
        "--sticky-timeout",
        "1",
        env=dict(daemons.env, **{EFFECTS_HOOK: "once"}),
    )
    await wait_namespace(daemons.url)
    doomed = daemons.special(
        "doomed",
        "daemons.df_worker",
        "--nats",
        daemons.url,
        "--task-queue",
        "tests",
        *FLAKY,
        env=dict(daemons.env, **{STORE_ANSWER_HOOK: "die"}),
    )
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow(flaky_flow, "c-1", id="c-1", task_queue="tests")
        await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 30)
        assert doomed.proc is not None and doomed.proc.returncode == -9
        await handle.signal("nudge")  # a batch newer than the attempt's outcome
        history = await handle.fetch_history()
        names = [type(e).__name__ for e in history]
        assert names[:3] == ["WorkflowStarted", "ActivityScheduled", "ActivityRetryScheduled"]
        assert history[1].eager  # type: ignore[attr-defined]
        daemons.worker(*FLAKY)
        assert await handle.result(timeout=30) == "c-1:0"
        history = await handle.fetch_history()
        check_history("c-1", history)
        retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt, e.failure.type) for e in retries] == [(1, 1, "RuntimeError")]
        assert [e.attempt for e in history if isinstance(e, ev.ActivityCompleted)] == [2]
        assert sorted(executions(log).items()) == [(("c-1", 0, 1), 1), (("c-1", 0, 2), 1)]
        assert f"stored a copy of a report of run {handle.run_id}" in server.log()
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
