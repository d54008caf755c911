"""What the df-server does once a command's event is recorded: the ``effects`` of the entries
of :mod:`durablefuture.core.vocabulary` (one function per command that has any)."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DeliverInput,
    DispatchActivityTask,
    Effect,
    StartRun,
    activity_task,
)
from durablefuture.core.inputs import RequestCancel, SignalWorkflow, StartWorkflowRequest
from durablefuture.core.options import ActivityCancellationType
from durablefuture.core.state import ChildState, RunState
from durablefuture.core.timers import TimerKey, TimerKind

__all__ = [
    "activity_effects",
    "cancel_child",
    "cancel_external_effects",
    "cancellation_effects",
    "child_effects",
    "child_started_effects",
    "condition_effects",
    "signal_external_effects",
    "signal_input",
    "signal_wait_effects",
    "timer_effects",
]


def activity_effects(state: RunState, e: ev.ActivityScheduled) -> list[Effect]:
    act = state.activities[e.seq]
    if act.closed:
        return []
    opts = act.options
    out: list[Effect] = []
    if act.attempt == 1 and act.started_at is None:
        out.append(DispatchActivityTask(activity_task(state, act)))
        if opts.schedule_to_start_timeout is not None:
            key = TimerKey.activity(TimerKind.SCHEDULE_TO_START, e.seq, 1)
            out.append(ArmTimer(key.encode(), e.at + opts.schedule_to_start_timeout))
    if opts.schedule_to_close_timeout is not None:
        key = TimerKey.activity(TimerKind.SCHEDULE_TO_CLOSE, e.seq)
        out.append(ArmTimer(key.encode(), e.at + opts.schedule_to_close_timeout))
    return out


def timer_effects(state: RunState, e: ev.TimerStarted) -> list[Effect]:
    if e.seq not in state.timers:
        return []
    return [ArmTimer(TimerKey.timer(e.seq).encode(), e.fire_at)]


def signal_wait_effects(state: RunState, e: ev.SignalWaitStarted) -> list[Effect]:
    if e.deadline is None or e.seq not in state.signal_waits:
        return []
    return [ArmTimer(TimerKey.signal_wait(e.seq).encode(), e.deadline)]


def condition_effects(state: RunState, e: ev.ConditionWaitStarted) -> list[Effect]:
    if e.deadline is None or e.seq not in state.timers:
        return []
    return [ArmTimer(TimerKey.timer(e.seq).encode(), e.deadline)]


def cancellation_effects(state: RunState, e: ev.CancellationRequested) -> list[Effect]:
    # a timer needs nothing: the fold dropped it, so it never fires
    act = state.activities.get(e.target)
    if act is not None:
        if act.closed or act.options.cancellation_type is ActivityCancellationType.ABANDON:
            return []
        return [CancelActivities((e.target,), "cancelled by its workflow")]
    child = state.children.get(e.target)
    if child is None or child.closed or child.run_id is None:
        return []  # a child that has not started is cancelled once it has (child_started_effects)
    return [cancel_child(state, child)]


def signal_external_effects(state: RunState, e: ev.ExternalWorkflowSignalled) -> list[Effect]:
    run_id = ""  # the running run of that workflow
    for child in state.children.values():
        if child.workflow_id == e.workflow_id and not child.closed:
            if child.run_id is None:
                return []  # held until the child has started (child_started_effects)
            run_id = child.run_id
    return [signal_input(state, e, run_id)]


def signal_input(state: RunState, e: ev.ExternalWorkflowSignalled, run_id: str) -> DeliverInput:
    request_id = f"{state.run_id}:{e.seq}:signal"
    # for "the current run": the one current when the signal was recorded (a held signal
    # names its child's run, which started after it)
    decided_at = None if run_id else e.at
    signal = SignalWorkflow(run_id, e.name, request_id, e.args, decided_at)
    return DeliverInput(e.workflow_id, signal)


def cancel_child(state: RunState, child: ChildState) -> CancelChildRun:
    s = state.started
    reason = f"cancelled by its parent workflow {s.workflow_id!r}"
    rid = f"{s.run_id}:{child.cancel_seq}:cancel"
    return CancelChildRun(child.workflow_id, child.run_id, rid, reason)


def child_started_effects(state: RunState, e: ev.ChildWorkflowStarted) -> list[Effect]:
    """What the run held back until its child ``e.seq`` had started."""
    child = state.children[e.seq]
    if child.closed:
        return []
    out: list[Effect] = [signal_input(state, s, e.run_id) for s in child.held_signals]
    if child.cancel_seq:
        out.append(cancel_child(state, child))
    return out


def cancel_external_effects(state: RunState, e: ev.ExternalCancelRequested) -> list[Effect]:
    reason = e.reason or f"cancelled by workflow {state.workflow_id!r}"
    cancel = RequestCancel("", f"{state.run_id}:{e.seq}:cancel", reason, decided_at=e.at)
    return [DeliverInput(e.workflow_id, cancel)]


def child_effects(state: RunState, e: ev.ChildWorkflowScheduled) -> list[Effect]:
    child = state.children[e.seq]
    if child.closed or child.run_id is not None:
        return []
    s = state.started
    request = StartWorkflowRequest(
        workflow_id=e.workflow_id,
        workflow_type=e.workflow_type,
        task_queue=e.task_queue,
        request_id=f"child:{s.run_id}:{e.seq}",
        args=e.args,
        execution_timeout=e.execution_timeout,
        parent=ev.ParentRef(s.namespace, s.workflow_id, s.run_id, e.seq),
        parent_close_policy=e.parent_close_policy,
        headers=s.headers,
    )
    return [StartRun(request)]
