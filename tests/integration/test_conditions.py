"""``df.wait_condition`` with signal handlers through df-server and df-worker processes."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace


def approval_gate(needed: int, timeout: float) -> Generator[Any, Any, Any]:
    approvals: list[str] = []
    df.workflow.set_signal_handler("approve", approvals.append)
    df.workflow.set_query_handler("approvals", lambda: approvals)
    ok = yield df.wait_condition(lambda: len(approvals) >= needed, timeout=timeout)
    return {"approved": ok, "by": approvals}


WORKFLOWS = [approval_gate]


async def test_conditions_through_the_daemons_and_a_worker_sigkill(daemons: Daemons) -> None:
    args = ("--workflows", "tests.integration.test_conditions:WORKFLOWS")
    # the killed worker's tasks go to the task queue after the sticky timeout (1 s, not 5 s)
    daemons.server("--sticky-timeout", "1")
    worker = daemons.worker(*args)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        met = await client.start_workflow(approval_gate, 2, 600.0, id="met", task_queue="tests")
        late = await client.start_workflow(approval_gate, 2, 1.0, id="late", task_queue="tests")

        async def waiting(h: df.WorkflowHandle) -> bool:
            return any(isinstance(e, ev.ConditionWaitStarted) for e in await h.fetch_history())

        await wait_for(lambda: waiting(met), 20)
        await met.signal("approve", "ann")
        await wait_for(lambda: _count_signals(met, 1), 20)
        # the worker dies with the run cached mid-wait; a new one rebuilds it by replay
        worker.kill()
        worker = daemons.worker(*args)
        await met.signal("approve", "bob")
        assert await met.result(timeout=30) == {"approved": True, "by": ["ann", "bob"]}
        assert await late.result(timeout=30) == {"approved": False, "by": []}
        history = await met.fetch_history()
        late_history = await late.fetch_history()
    finally:
        await client.close()
    kinds = [type(e).__name__ for e in history]
    assert kinds.count("ConditionWaitStarted") == 1 and "TimerFired" not in kinds
    assert [type(e).__name__ for e in late_history][-2:] == ["TimerFired", "WorkflowCompleted"]
    Replayer([approval_gate]).replay(history)
    Replayer([approval_gate]).replay(late_history)


async def _count_signals(h: df.WorkflowHandle, n: int) -> bool:
    return sum(isinstance(e, ev.SignalReceived) for e in await h.fetch_history()) >= n
