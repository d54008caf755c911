"""Eager activity dispatch and eager start under crashes and hostile input: the cases a
review found broken, each marked ``xfail(strict=True)`` with the bug it shows until fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from tests.conftest import Daemons, wait_for, wait_namespace

pytestmark = pytest.mark.asyncio

FLOWS = "tests.integration.eager_review_flows"
STEPS = "tests.integration.eager_flows"
ARGS = ("--workflows", f"{FLOWS}:step_then_sleep", "--activities", f"{STEPS}:logged_step")


@pytest.mark.xfail(
    strict=True,
    reason=(
        "a check list that finds a granted attempt's outcome in history does nothing "
        "(server/checks.py _check_attempt 'done'): the effects of the batch that recorded "
        "it are never derived again when df-server died between that append and its "
        "effects and the worker that ran it died before it stored its report; a stored "
        "task would have come back and been reported again (worker/handover.py "
        "attempt_closed), a check list does not"
    ),
)
async def test_effects_of_an_eager_attempts_outcome_lost_with_both_processes_are_derived_again(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The worker granted the attempt runs it and reports it with its next decision (a
    sleep); df-server appends that batch and is SIGKILLed before its effects (the timer),
    and so is the worker waiting for the answer. A new df-server and worker must finish the
    run: the attempt's check list fires and finds its outcome recorded."""
    held, victim = tmp_path / "held", tmp_path / "victim"
    daemons.env["DF_TEST_EXEC_LOG"] = str(tmp_path / "exec.log")
    env = dict(daemons.env, DF_TEST_HELD=str(held), DF_TEST_KILL_PID=str(victim))
    server = daemons.special(
        "halting",
        "tests.integration.halting_server",
        "--nats",
        daemons.url,
        "--input-ack-wait",
        "2",
        "--eager-check",
        "1",
        env=env,
    )
    worker = daemons.worker(*ARGS)
    assert worker.proc is not None
    victim.write_text(str(worker.proc.pid))
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow("step_then_sleep", "h-1", id="h-1", task_queue="tests")
        await wait_for(held.exists, 30)
        await wait_for(lambda: server.proc is not None and server.proc.poll() is not None, 15)
        await wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None, 15)
        assert server.proc is not None and server.proc.returncode == -9
        assert worker.proc.returncode == -9
        history = await handle.fetch_history()
        kinds = [type(e) for e in history]
        # the batch is stored: the step's outcome and the timer its decision started
        assert ev.ActivityCompleted in kinds and ev.TimerStarted in kinds, kinds
        assert ev.TimerFired not in kinds
        daemons.server("--eager-check", "1")
        daemons.worker(*ARGS)
        # the check list (due a second after the grant) has long fired by now
        assert await handle.result(timeout=30) == "h-1:0"
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
