"""``effects_for``: what the server must do about events it has recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core._command_effects import child_started_effects
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    NotifyParent,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
    activity_task,
    workflow_task,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import ParentClosePolicy
from durablefuture.core.orchestration._decision import _timeout_failure, wft_retry_delay
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey, TimerKind
from durablefuture.core.vocabulary import command_effects, decided_after


def _act_key(kind: TimerKind, seq: int, attempt: int = 0) -> str:
    return TimerKey.activity(kind, seq, attempt).encode()


def _close_failure(state: RunState, terminal: ev.Event) -> Failure | None:
    if isinstance(terminal, ev.WorkflowFailed):
        return terminal.failure
    if isinstance(terminal, ev.WorkflowTimedOut):
        return _timeout_failure(
            "execution", f"workflow {state.workflow_id!r} reached its execution timeout"
        )
    if isinstance(terminal, ev.WorkflowCancelled):
        return Failure(message=terminal.message, type="CancelledError", kind=FailureKind.CANCELLED)
    if isinstance(terminal, ev.WorkflowTerminated):
        return Failure(
            message=f"terminated: {terminal.reason}" if terminal.reason else "terminated",
            type="TerminatedError",
            kind=FailureKind.TERMINATED,
        )
    return None


def _close_effects(state: RunState, terminal: ev.Event) -> list[Effect]:
    out: list[Effect] = [UpdateStatus(state.summary())]
    s = state.started
    open_acts = tuple(state.open_activities())
    if open_acts:
        out.append(CancelActivities(open_acts, f"workflow run {state.status}"))
    for child in state.open_children():
        rid = f"{s.run_id}:{child.seq}:parent-closed"
        reason = f"parent workflow {s.workflow_id!r} {state.status}"
        if child.parent_close_policy is ParentClosePolicy.TERMINATE:
            out.append(TerminateChildRun(child.workflow_id, child.run_id, rid, reason))
        elif child.parent_close_policy is ParentClosePolicy.REQUEST_CANCEL:
            out.append(CancelChildRun(child.workflow_id, child.run_id, rid, reason))
    if isinstance(terminal, ev.WorkflowContinuedAsNew):
        out.append(
            StartRun(
                inp.StartWorkflowRequest(
                    workflow_id=s.workflow_id,
                    workflow_type=terminal.workflow_type,
                    task_queue=terminal.task_queue,
                    request_id=f"can:{s.run_id}",
                    args=terminal.args,
                    execution_timeout=s.execution_timeout,
                    execution_deadline=s.execution_deadline,
                    id_reuse_policy=s.id_reuse_policy,
                    parent=s.parent,
                    parent_close_policy=s.parent_close_policy,
                    continued_from=s.run_id,
                    first_run_id=s.first_run_id or s.run_id,
                    chain_request_id=s.chain_request_id or s.request_id,
                    run_id=terminal.new_run_id,
                    headers=s.headers,
                    signals=terminal.signals,
                    search_attributes=state.search_attributes,
                    memo=s.memo,
                )
            )
        )
    elif s.parent is not None:
        result = terminal.result if isinstance(terminal, ev.WorkflowCompleted) else None
        out.append(
            NotifyParent(s.parent, s.run_id, result=result, failure=_close_failure(state, terminal))
        )
    return out


def _started(state: RunState, e: ev.WorkflowStarted) -> list[Effect]:
    out: list[Effect] = [UpdateStatus(state.summary())]
    if e.execution_deadline is not None and state.is_open:
        out.append(ArmTimer(TimerKey.execution().encode(), e.execution_deadline))
    if e.parent is not None:
        out.append(NotifyParent(e.parent, e.run_id, started=True))
    return out


def _retry_scheduled(state: RunState, e: ev.ActivityRetryScheduled) -> list[Effect]:
    act = state.activities[e.seq]
    nxt = e.attempt + 1
    if act.closed or act.attempt != nxt or act.started_at is not None:
        return []
    out: list[Effect] = [DispatchActivityTask(activity_task(state, act), deliver_at=e.retry_at)]
    if act.options.schedule_to_start_timeout is not None:
        out.append(
            ArmTimer(
                _act_key(TimerKind.SCHEDULE_TO_START, e.seq, nxt),
                e.retry_at + act.options.schedule_to_start_timeout,
            )
        )
    return out


def _attempt_started(state: RunState, e: ev.ActivityStarted) -> list[Effect]:
    act = state.activities[e.seq]
    if act.closed or act.attempt != e.attempt:
        return []
    opts = act.options
    out: list[Effect] = []
    if opts.start_to_close_timeout is not None:
        key = _act_key(TimerKind.START_TO_CLOSE, e.seq, e.attempt)
        out.append(ArmTimer(key, e.at + opts.start_to_close_timeout))
    if opts.heartbeat_timeout is not None:
        key = _act_key(TimerKind.HEARTBEAT, e.seq, e.attempt)
        out.append(ArmTimer(key, e.at + opts.heartbeat_timeout))
    return out


def _task_failed(state: RunState, e: ev.WorkflowTaskFailed) -> list[Effect]:
    if not state.is_open:
        return []
    key = TimerKey.workflow_task_retry(e.attempt).encode()
    return [ArmTimer(key, e.at + wft_retry_delay(e.attempt))]


def _cancel_requested(state: RunState, e: ev.CancelRequested) -> list[Effect]:
    if not state.is_open:
        return []
    out: list[Effect] = []
    open_acts = tuple(state.open_activities())
    if open_acts:
        out.append(CancelActivities(open_acts, "workflow cancellation requested"))
    s = state.started
    for child in state.open_children():
        if child.parent_close_policy is not ParentClosePolicy.ABANDON:
            out.append(
                CancelChildRun(
                    child.workflow_id,
                    child.run_id,
                    f"{s.run_id}:{child.seq}:parent-cancelled",
                    f"parent workflow {s.workflow_id!r} was cancelled",
                )
            )
    return out


# One handler per event type that has effects. The effects of a command's own event (an
# activity scheduled, a timer started, ...) are declared with the command, in ``vocabulary``.
_HANDLERS: dict[type, Callable[[RunState, Any], list[Effect]]] = {
    ev.WorkflowStarted: _started,
    ev.ActivityRetryScheduled: _retry_scheduled,
    ev.ActivityStarted: _attempt_started,
    ev.WorkflowTaskFailed: _task_failed,
    ev.CancelRequested: _cancel_requested,
    ev.ChildWorkflowStarted: child_started_effects,
    **dict.fromkeys(ev.TERMINAL_EVENTS, _close_effects),
}
# events the workflow code must see: a workflow task follows them (unless the code had seen them)
_WAKES = (ev.WorkflowStarted, *ev.RESULT_EVENTS)


def effects_for(
    state: RunState, events: Sequence[ev.Event], *, decided_through: int = 0
) -> list[Effect]:
    """The effects of ``events``, which are already applied to ``state``.

    Each effect is filtered by the current state (an activity attempt that has since finished
    is not dispatched again), so this also serves to re-derive the effects of an old batch.
    """
    out: list[Effect] = []
    if not events:
        return out
    for e in events:
        handler = _HANDLERS.get(type(e))
        if handler is not None:
            out.extend(handler(state, e))
        else:
            out.extend(command_effects(state, e))
    if _needs_wft(state, events, decided_through) and state.is_open:
        out.append(DispatchWorkflowTask(workflow_task(state, events[-1].event_id)))
    return out


def _needs_wft(state: RunState, events: Sequence[ev.Event], decided_through: int = 0) -> bool:
    """Whether ``events`` leave the code something to see: an event it must see, and no
    decision recorded after it (a decision made while results arrived leaves those)."""
    decided = [b for b in map(decided_after, events) if b is not None]
    decided_on = max(decided, default=None)
    if decided_on is None and decided_through:
        decided_on = decided_through
    if decided_on is not None:
        # the code decided after seeing event `decided_on`: it needs a workflow task only if
        # results arrived after that (while it was deciding)
        return state.last_deliverable_event_id > decided_on
    return any(isinstance(e, _WAKES) for e in events)


def effects_again(
    state: RunState, events: Sequence[ev.Event], first: int, last: int
) -> list[Effect]:
    """The effects of the recorded batch ``events[first - 1 : last]`` (event ids ``first`` to
    ``last`` of the run's ``events``), derived again from the run as it is now (a report or
    input that came back after its batch was appended: its effects may never have been done).

    A batch that is not the run's newest keeps its own effects (the activity tasks, timers,
    child starts it implies, each filtered by the current state), but not its workflow task:
    what its code has not seen may have been decided on since. The workflow task, if the run
    needs one now, is the one the batch and everything after it imply together (triggered by
    the newest event). An older batch's own workflow task would be triggered by an event the
    code has decided on since: its worker would find that decision, report it again (as it
    reports any decision it finds recorded for its task) and have the next batch's effects
    derived again, and so on along the history. While the newest workflow task's failure
    waits for its retry timer, none is sent; once the run is closed, neither are an older
    batch's activity tasks and timers."""
    batch = effects_for(state, events[first - 1 : last])
    if last >= len(events):
        return batch
    out: list[Effect] = [e for e in batch if not isinstance(e, DispatchWorkflowTask)]
    if not state.is_open:
        # closed since (by the newest batch, which derives its own effects): the activities
        # still open were cancelled and the timers purged by the close; none is sent again
        return [e for e in out if not isinstance(e, DispatchActivityTask | ArmTimer)]
    failed = state.last_wft_failure
    if failed is not None and state.last_deliverable_event_id < failed.event_id:
        # the task the run needs failed since, and nothing woke the code after: its retry
        # is the timer's (with backoff, the next attempt), not an attempt 1 sent now
        return out
    # (whether the run needs one only: the effects of every later batch are not derived)
    if _needs_wft(state, events[first - 1 :]):
        out.append(DispatchWorkflowTask(workflow_task(state, events[-1].event_id)))
    return out
