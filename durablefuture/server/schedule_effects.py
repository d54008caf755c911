"""What a schedule's effects send, and what it observes of its actions' runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from durablefuture import metrics
from durablefuture.codec.wire import Codec, InputEnvelope
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import RunStatus
from durablefuture.core.options import IdReusePolicy
from durablefuture.core.schedule_draft import GONE, start_lost
from durablefuture.core.schedules import (
    CancelAction,
    Observed,
    ScheduleEffect,
    ScheduleState,
    StartAction,
    Step,
    TerminateAction,
)
from durablefuture.core.state import status_of
from durablefuture.server.sources import SERVER
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout

__all__ = ["count_step", "observe", "perform", "start_once", "start_request", "stop_input"]

log = logging.getLogger("durablefuture.schedules")


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


async def observe(
    history: HistoryStore, state: ScheduleState, now: float, lost_after: float | None = None
) -> dict[str, Observed]:
    """The latest run of each running action's workflow id, and whether it has closed (not of
    an action recorded ahead that is not due yet: it has no run). No run of an action never
    seen running is ``GONE`` when its start was due more than ``lost_after`` seconds ago."""
    records = {r.workflow_id: r for r in state.running}

    async def one(wid: str) -> tuple[str, Observed]:
        last = await history.last_of_workflow(wid)
        if last is None:
            if lost_after is not None and start_lost(records[wid], now, lost_after):
                return wid, Observed(status=GONE)
            return wid, Observed()
        status = RunStatus.RUNNING
        for e in last.batch.events:
            if isinstance(e, ev.TERMINAL_EVENTS):
                status = status_of(e)
        return wid, Observed(last.run_id, status)

    pairs = await asyncio.gather(*(one(r.workflow_id) for r in state.running if not r.pending(now)))
    return dict(pairs)


def count_step(ns: str, result: Step) -> None:
    """The metrics of one step: actions taken, skipped and missed, and start lateness."""
    if result.taken:
        metrics.SCHEDULE_ACTIONS.inc(ns, "taken", amount=result.taken)
    if result.skipped:
        metrics.SCHEDULE_ACTIONS.inc(ns, "skipped", amount=result.skipped)
    if result.missed:
        sid = result.state.schedule_id
        metrics.SCHEDULE_ACTIONS.inc(ns, "missed", amount=result.missed)
        log.warning(
            "schedule %s: %d actions missed (older than the catch-up window)",
            sid,
            result.missed,
            extra={"schedule_id": sid},
        )
    for late in result.lateness:
        metrics.SCHEDULE_LATENESS_SECONDS.observe(late, ns)


async def perform(
    pub: Publisher,
    layout: Layout,
    codec: Codec,
    start: Callable[[inp.StartWorkflowRequest], Awaitable[object]] | None,
    state: ScheduleState,
    effect: ScheduleEffect,
) -> Awaitable[object] | None:
    """Send one effect (idempotent: stable request ids and ``Nats-Msg-Id``); what to await for
    it. A start runs in df-server's own start path (``start``) when there is one."""
    if isinstance(effect, StartAction):
        request = start_request(state, effect)
        if start is not None:
            return start(request)
        data = codec.encode_input(InputEnvelope(effect.workflow_id, start=request))
        return await pub.send(layout.input(SERVER), data, {MSG_ID: f"start:{effect.request_id}"})
    if not effect.run_id:
        return None  # not seen yet: the next step sends it
    message = stop_input(state, effect)
    data = codec.encode_input(InputEnvelope(effect.workflow_id, input=message))
    msg_id = f"{effect.run_id}:{message.input_id}"
    return await pub.send(layout.input("run"), data, {MSG_ID: msg_id})


async def start_once(
    start: Callable[[inp.StartWorkflowRequest], Awaitable[object]],
    request: inp.StartWorkflowRequest,
    forget: Callable[[], None],
) -> None:
    """Start an action in this process; ``forget`` that it is under way if that fails."""
    try:
        await start(request)
    except BaseException:
        forget()
        raise
