"""``decide``: route one input to the handler of its kind."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.orchestration._activities import (
    _activity_started,
    _attempt_failed,
    _current_attempt,
)
from durablefuture.core.orchestration._decision import (
    APPLIED,
    DUPLICATE,
    Decision,
    _Builder,
    _ignored,
    _rejected,
)
from durablefuture.core.orchestration._timers import _fire_timer
from durablefuture.core.orchestration._workflow_tasks import (
    _complete_workflow_task,
    _fail_workflow_task,
)
from durablefuture.core.state import RunState


def decide(state: RunState, input: inp.RunInput, now: float, *, new_run_id: str = "") -> Decision:
    """Decide what ``input`` adds to the run's history (see :class:`Decision`)."""
    recorded = state.applied_inputs.get(input.input_id)
    if recorded is not None:
        return Decision(DUPLICATE, recorded=recorded, reason="already recorded")
    if not state.is_open:
        return _ignored(f"run is {state.status}")
    b = _Builder(state, now)
    if isinstance(input, inp.CompleteWorkflowTask):
        return _complete_workflow_task(state, input, b, new_run_id)
    if isinstance(input, inp.FailWorkflowTask):
        return _fail_workflow_task(state, input, b)
    if isinstance(input, inp.ReportActivityStarted):
        return _activity_started(state, input, b)
    if isinstance(input, inp.CompleteActivityTask):
        act, why = _current_attempt(state, input.seq, input.attempt)
        if act is None:
            return why
        if _fusable(state, input):
            assert input.completed_at is not None
            fused = _Builder(state, input.completed_at)
            fused.add(
                ev.ActivityCompleted, seq=input.seq, attempt=input.attempt, result=input.result
            )
            if not input.commands:
                return Decision(APPLIED, tuple(fused.events), decided_through=input.event_id)
            fused.now = now
            decided = _complete_workflow_task(
                state,
                inp.CompleteWorkflowTask(
                    input.run_id, input.event_id, input.commands, more=input.more
                ),
                fused,
                new_run_id,
                last_event_id=input.event_id,
            )
            if decided.outcome == APPLIED:
                return decided
        b.add(ev.ActivityCompleted, seq=input.seq, attempt=input.attempt, result=input.result)
        return b.decision()
    if isinstance(input, inp.FailActivityTask):
        act, why = _current_attempt(state, input.seq, input.attempt)
        if act is None:
            return why
        _attempt_failed(state, act, input.failure, input.heartbeat_details, b)
        return b.decision()
    if isinstance(input, inp.FireTimer):
        return _fire_timer(state, input, b)
    if isinstance(input, inp.SignalWorkflow):
        if input.request_id in state.signal_requests:
            return Decision(DUPLICATE, reason="signal already recorded")
        if _started_after(state, input.decided_at):
            return _ignored(_LATER_RUN)
        b.add(ev.SignalReceived, name=input.name, args=input.args, request_id=input.request_id)
        return b.decision()
    if isinstance(input, inp.AcceptUpdate):
        if input.update_id in state.updates:
            return Decision(DUPLICATE, reason="update already accepted")
        b.add(ev.UpdateAccepted, update_id=input.update_id, name=input.name, args=input.args)
        return b.decision()
    if isinstance(input, inp.RequestCancel):
        if state.cancel_requested:
            return _ignored("cancellation was already requested")
        if _started_after(state, input.decided_at):
            return _ignored(_LATER_RUN)
        b.add(ev.CancelRequested, reason=input.reason, request_id=input.request_id)
        return b.decision()
    if isinstance(input, inp.TerminateWorkflow):
        b.add(ev.WorkflowTerminated, reason=input.reason)
        return b.decision()
    if isinstance(input, inp.RecordChildStarted):
        child = state.children.get(input.seq)
        if child is None:
            return _rejected(f"no child workflow #{input.seq}")
        if child.closed or child.run_id is not None:
            return _ignored("child start already recorded")
        b.add(ev.ChildWorkflowStarted, seq=input.seq, run_id=input.child_run_id)
        return b.decision()
    if isinstance(input, inp.RecordChildStartFailed | inp.RecordChildClosed):
        child = state.children.get(input.seq)
        if child is None:
            return _rejected(f"no child workflow #{input.seq}")
        if child.closed:
            return _ignored("child outcome already recorded")
        if isinstance(input, inp.RecordChildClosed) and input.failure is None:
            b.add(ev.ChildWorkflowCompleted, seq=input.seq, result=input.result)
        else:
            assert input.failure is not None
            b.add(ev.ChildWorkflowFailed, seq=input.seq, failure=input.failure)
        return b.decision()


_LATER_RUN = (
    "this run started after the input was decided for the run of its workflow id current "
    "then, which has closed since"
)


def _started_after(state: RunState, decided_at: float | None) -> bool:
    """Whether the run began after an input for "the current run" was decided (beyond the
    clock margin between df-servers): it was meant for an earlier run, closed since, and
    reaches this one only because its effects were derived again after JetStream's
    duplicate window. Dropped, as it would have been had it arrived after that run's close
    and before this one's start (no run running)."""
    return decided_at is not None and state.started.at > decided_at + inp.DECIDED_AT_MARGIN


def _fusable(state: RunState, report: inp.CompleteActivityTask) -> bool:
    """The worker decided on top of exactly the history we have (plus this completion)."""
    return report.completed_at is not None and report.event_id == state.last_event_id + 1
