"""A report df-server appended but whose effects it could not store, with its worker killed
(SIGKILL) before it stores the report itself: df-server's own stored copy has the effects
derived again; with df-server killed as well, the attempt's check does. The workflow
completes once; no attempt runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from tests.conftest import Daemons, wait_namespace
from tests.integration.eager_flows import flaky_flow
from tests.integration.helpers import check_history, doomed_worker, hooked_server, killed
from tests.integration.test_eager_crash import MODULE, executions

pytestmark = pytest.mark.asyncio

SERVER_ARGS = ("--eager-check", "6", "--sticky-timeout", "1")
FLAKY = ("--workflows", f"{MODULE}:flaky_flow", "--activities", f"{MODULE}:flaky_step")


async def _failed_attempt_and_dead_worker(
    daemons: Daemons, server_hook: str, tmp_path: Path
) -> tuple[df.Client, df.WorkflowHandle, Path]:
    """Start ``flaky_flow`` on a worker that dies (SIGKILL) at the answer ``store`` (or none)
    to attempt 1's report, with a df-server whose effects hook is ``server_hook``; then
    signal the run (a batch newer than the attempt's outcome)."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    hooked_server(daemons, server_hook, *SERVER_ARGS)
    await wait_namespace(daemons.url)
    doomed = doomed_worker(daemons, *FLAKY)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    handle = await client.start_workflow(flaky_flow, "c-1", id="c-1", task_queue="tests")
    await killed(doomed)
    return client, handle, log


async def _completes_once(handle: df.WorkflowHandle, log: Path) -> None:
    """Attempt 1 failed once, attempt 2 completed once, and so did the run."""
    assert await handle.result(timeout=30) == "c-1:0"
    history = await handle.fetch_history()
    check_history("c-1", history)
    assert history[1].eager  # type: ignore[attr-defined]
    retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
    assert [(e.seq, e.attempt, e.failure.type) for e in retries] == [(1, 1, "RuntimeError")]
    assert [e.attempt for e in history if isinstance(e, ev.ActivityCompleted)] == [2]
    assert sorted(executions(log).items()) == [(("c-1", 0, 1), 1), (("c-1", 0, 2), 1)]


async def test_a_report_whose_effects_failed_outlives_its_worker(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Attempt 1 of step 0 is granted to the worker that decided it (eager: no stored task)
    and fails. df-server appends its ActivityRetryScheduled, then fails to store its effect
    (the retry timer) and answers ``store``; the worker dies at that answer before it stores
    the report. A signal appends a newer batch. df-server's own stored copy of the report is
    taken as a duplicate of the batch appended: the timer is armed, attempt 2 runs once on
    another worker, and the run completes once."""
    client, handle, log = await _failed_attempt_and_dead_worker(daemons, "once", tmp_path)
    try:
        await handle.signal("nudge")
        daemons.worker(*FLAKY)
        await _completes_once(handle, log)
        failing = next(d for d in daemons.started if d.name == "failing")
        assert f"stored a copy of a report of run {handle.run_id}" in failing.log()
    finally:
        await client.close()


async def test_a_failed_attempt_whose_server_and_worker_died_is_retried_by_its_check(
    daemons: Daemons, tmp_path: Path
) -> None:
    """As above, but df-server is killed (SIGKILL) between the append and the effects: no
    answer, no copy; the worker dies when no answer comes. A signal appends a newer batch, so
    the attempt's outcome is not the run's newest. The attempt's check list (stored beside
    the grant) fires on another df-server, finds the retry not begun, and derives the
    outcome's effects again: the timer is armed, attempt 2 runs once, the run completes."""
    client, handle, log = await _failed_attempt_and_dead_worker(daemons, "die", tmp_path)
    try:
        failing = next(d for d in daemons.started if d.name == "failing")
        await killed(failing)
        daemons.server(*SERVER_ARGS)
        await handle.signal("nudge")
        daemons.worker(*FLAKY)
        await _completes_once(handle, log)
        assert "stored a copy of a report" not in daemons.logs()
    finally:
        await client.close()
