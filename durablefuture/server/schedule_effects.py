"""What a schedule's effects send, and what it observes of its actions' runs."""

from __future__ import annotations

import asyncio

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import RunStatus
from durablefuture.core.options import IdReusePolicy
from durablefuture.core.schedules import (
    CancelAction,
    Observed,
    ScheduleState,
    StartAction,
    TerminateAction,
)
from durablefuture.core.state import status_of
from durablefuture.transport.history import HistoryStore

__all__ = ["observe", "start_request", "stop_input"]


def start_request(state: ScheduleState, effect: StartAction) -> inp.StartWorkflowRequest:
    """The action's start: a stable workflow id and request id, duplicates rejected."""
    action = state.schedule.action
    return inp.StartWorkflowRequest(
        workflow_id=effect.workflow_id,
        workflow_type=action.workflow_type,
        task_queue=action.task_queue,
        request_id=effect.request_id,
        args=action.args,
        execution_timeout=action.execution_timeout,
        id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
        headers={"df-schedule-id": state.schedule_id},
    )


def stop_input(state: ScheduleState, effect: CancelAction | TerminateAction) -> inp.RunInput:
    """The cancel request or termination an overlap policy sends to a running action."""
    policy = state.schedule.policy.overlap.name
    reason = f"schedule {state.schedule_id!r}: overlap policy {policy}"
    if isinstance(effect, CancelAction):
        return inp.RequestCancel(effect.run_id, effect.request_id, reason)
    return inp.TerminateWorkflow(effect.run_id, effect.request_id, reason)


async def observe(history: HistoryStore, state: ScheduleState) -> dict[str, Observed]:
    """The latest run of each running action's workflow id, and whether it has closed."""

    async def one(wid: str) -> tuple[str, Observed]:
        last = await history.last_of_workflow(wid)
        if last is None:
            return wid, Observed()
        status = RunStatus.RUNNING
        for e in last.batch.events:
            if isinstance(e, ev.TERMINAL_EVENTS):
                status = status_of(e)
        return wid, Observed(last.run_id, status)

    pairs = await asyncio.gather(*(one(r.workflow_id) for r in state.running))
    return dict(pairs)
