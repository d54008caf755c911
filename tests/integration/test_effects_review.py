"""Effects lost between an append and its effects on paths with no stored input to deliver
again: df-server and the process that asked (a worker, a client) both killed (SIGKILL) right
after the append (the hook ``DF_TEST_EFFECTS_FAIL=die:<input class>[:<field>]``). Each test
names what must then happen to the run, and what makes it happen:

- a granted attempt's outcome, alone or under a newer batch: its check (``server/checks.py``)
  derives the outcome's effects again (the decisions fused into it, the workflow task it
  implies under a batch that wakes none) whenever another df-server recorded it and the run
  is open;
- a large decision in parts: the workflow task delivered again finds the first parts
  recorded and reports them again before the rest (``worker/workflow_tasks.py``);
- a signal with start for a running run is not asked of df-server: the client stores it
  (``server/starts.py``), and the stored start is acknowledged after its effects.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.effects_flows import PARTS
from tests.integration.helpers import doomed_worker, hooked_server, killed
from tests.integration.test_eager_crash import MODULE, executions

pytestmark = pytest.mark.asyncio

FLOWS = "tests.integration.effects_flows"
SERVER_ARGS = ("--eager-check", "15", "--sticky-timeout", "1")
STEP = ("--activities", f"{MODULE}:logged_step")


async def _fused_and_both_killed(
    daemons: Daemons, tmp_path: Path, flow: str, *, newer: bool, fused: bool = True
) -> tuple[df.Client, df.WorkflowHandle, Path]:
    """Start ``flow`` on a worker granted its step 0; its completion, reported with the
    decisions the code made on it, is appended by a df-server killed (SIGKILL) before any
    of that batch's effects is stored; the worker dies when no answer comes, before it
    stores the report. Then another df-server and worker start; with ``newer``, a signal
    appends a batch after the completion's (as a parallel branch's result would)."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    failing = hooked_server(daemons, "die:CompleteActivityTask", *SERVER_ARGS)
    await wait_namespace(daemons.url)
    workflows = ("--workflows", f"{FLOWS}:{flow}")
    doomed = doomed_worker(daemons, *workflows, *STEP)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    handle = await client.start_workflow(flow, "f-1", id="f-1", task_queue="tests")
    await killed(failing, doomed)
    history = await handle.fetch_history()
    completed = [e for e in history if isinstance(e, ev.ActivityCompleted)]
    assert [(e.seq, e.attempt) for e in completed] == [(1, 1)]  # appended, then both died
    assert next(e for e in history if isinstance(e, ev.ActivityScheduled)).eager
    if fused:
        assert isinstance(history[-1], ev.ActivityScheduled | ev.TimerStarted)  # its decision
    else:
        assert isinstance(history[-1], ev.ActivityCompleted)  # reported alone
    daemons.server(*SERVER_ARGS)
    if newer:
        await handle.signal("nudge")
    daemons.worker(*workflows, *STEP)
    return client, handle, log


async def _completes_once(handle: df.WorkflowHandle, log: Path, expected: object) -> None:
    try:
        assert await handle.result(timeout=40) == expected
    finally:
        ran = executions(log)
        assert all(n == 1 for n in ran.values()), f"steps that ran twice: {ran}"


async def test_a_fused_completion_whose_server_and_worker_died_is_finished_by_its_check(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Nothing after the fused batch: the step's check finds its outcome the run's newest
    batch and derives its effects again (step 1's task is stored); the run completes, each
    step ran once."""
    client, handle, log = await _fused_and_both_killed(
        daemons, tmp_path, "then_once_flow", newer=False
    )
    try:
        await _completes_once(handle, log, ["f-1:0", "f-1:1"])
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("flow", "expected"),
    [("then_once_flow", ["f-1:0", "f-1:1"]), ("then_sleep_flow", ["f-1:0"])],
)
async def test_a_fused_completion_under_a_newer_batch_is_finished(
    daemons: Daemons, tmp_path: Path, flow: str, expected: object
) -> None:
    """As above, but a signal appends a batch after the fused completion's before its check
    fires: the decisions it carried (step 1's stored task; the sleep's timer) must still be
    carried out and the run complete, each step once."""
    client, handle, log = await _fused_and_both_killed(daemons, tmp_path, flow, newer=True)
    try:
        await _completes_once(handle, log, expected)
    except BaseException:
        print(daemons.logs()[-3000:])
        raise
    finally:
        await client.close()


async def test_a_completion_under_a_newer_batch_that_wakes_nothing_is_seen(
    daemons: Daemons, tmp_path: Path
) -> None:
    """``any_of(step 0, endless_step)``: step 0's completion (reported alone) is appended by
    a df-server killed before its effects, its worker killed too; then ``endless_step``
    starts on another queue (its ActivityStarted, a batch after the completion's, wakes no
    workflow task) and heartbeats on. The completion's workflow task must still come: the
    run ends with step 0's result, step 0 ran once."""
    client, handle, log = await _fused_and_both_killed(
        daemons, tmp_path, "first_of_flow", newer=False, fused=False
    )
    try:
        daemons.worker("--activities", f"{FLOWS}:endless_step", task_queue="elsewhere")

        async def started() -> bool:
            history = await handle.fetch_history()
            return isinstance(history[-1], ev.ActivityStarted)

        await wait_for(started, 10)  # before the step's check (``--eager-check``) fires
        await _completes_once(handle, log, "f-1:0")
    except BaseException:
        print(daemons.logs()[-3000:])
        raise
    finally:
        await client.close()


async def test_the_first_part_of_a_decision_whose_server_and_worker_died_is_carried_out(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A decision of ``PARTS`` activities too large for one report goes out in parts. The
    first part is appended by a df-server killed (SIGKILL) before its effects (the activity
    tasks); the worker dies when no answer comes, holding the workflow task. The task is
    delivered again to another worker, which finds the first part recorded and reports the
    rest: every activity must run once and the run complete."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    failing = hooked_server(daemons, "die:CompleteWorkflowTask:more", *SERVER_ARGS)
    await wait_namespace(daemons.url)
    parted = ("--workflows", f"{FLOWS}:parted_flow", "--activities", f"{FLOWS}:sized_step")
    doomed = doomed_worker(daemons, "--workflow-task-timeout", "2", *parted)
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow("parted_flow", "p-1", id="p-1", task_queue="tests")
        await killed(failing, doomed)
        history = await handle.fetch_history()
        scheduled = [e for e in history if isinstance(e, ev.ActivityScheduled)]
        assert 0 < len(scheduled) < PARTS  # the first part appended, then both died
        daemons.server(*SERVER_ARGS)
        daemons.worker(*parted)
        await _completes_once(handle, log, PARTS)
        assert sorted(executions(log)) == [("p-1", i, 1) for i in range(PARTS)]
    except BaseException:
        print(daemons.logs()[-3000:])
        raise
    finally:
        await client.close()


async def test_a_signal_with_start_whose_server_and_client_died_reaches_the_run(
    daemons: Daemons,
) -> None:
    """A run waits for signal ``go``. A client asks df-server to start the id with that
    signal (a start request: the run is open, so the signal is appended to it); df-server
    is killed (SIGKILL) between the append and its effects, the client before it stores the
    start. Another df-server starts: the run must see its signal and complete."""
    failing = hooked_server(daemons, "die:SignalWorkflow")
    await wait_namespace(daemons.url)
    daemons.worker("--workflows", f"{FLOWS}:signalled_flow")
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow("signalled_flow", "s-1", id="s-1", task_queue="tests")

        async def waiting() -> bool:
            history = await handle.fetch_history()
            return any(isinstance(e, ev.SignalWaitStarted) for e in history)

        await wait_for(waiting, 30)
        asker = daemons.special("asker", FLOWS, daemons.url, "s-1")
        await killed(failing)
        asker.kill()  # (it waits a minute for its answer before it would store the start)
        assert asker.proc is not None and asker.proc.returncode == -9
        history = await handle.fetch_history()
        assert any(isinstance(e, ev.SignalReceived) for e in history)  # appended, then died
        daemons.server()
        assert await handle.result(timeout=30) == "x"
    except BaseException:
        print(daemons.logs()[-3000:])
        raise
    finally:
        await client.close()
