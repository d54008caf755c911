"""The server's state machine, as pure functions.

``decide(state, input, now)`` returns the events an input adds to a run's history (or says why
it adds none: a duplicate, a stale or late report, an impossible request). After the server has
appended those events, ``effects_for(state, events)`` says what to do about them: dispatch
tasks, arm timers, notify a parent, start the next run. Effects are derived, never stored, so a
redelivered input whose events are already in history simply has its effects derived again.

``decide_start`` arbitrates a start request against the latest run of the same workflow id
(reuse policy, idempotent retries, signal-with-start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import frozen

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PendingSignal,
    RecordMarker,
    RecordSideEffect,
    ScheduleActivity,
    StartChildWorkflow,
    StartSignalWait,
    StartTimer,
)
from durablefuture.core.effects import (
    ActivityTask,
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    NotifyParent,
    RunStatus,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
    WorkflowTask,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import IdReusePolicy, ParentClosePolicy
from durablefuture.core.retry import decide_retry
from durablefuture.core.state import ActivityState, RunState

__all__ = [
    "APPLIED",
    "DUPLICATE",
    "IGNORED",
    "REJECTED",
    "Decision",
    "LatestRun",
    "StartDecision",
    "decide",
    "decide_start",
    "effects_for",
    "start_events",
    "wft_retry_delay",
]

APPLIED = "applied"
DUPLICATE = "duplicate"
IGNORED = "ignored"
REJECTED = "rejected"

TIMER_TOLERANCE = 0.05


@frozen
class Decision:
    """What an input does to a run.

    ``outcome`` is APPLIED (``events`` are new), DUPLICATE (already recorded as events
    ``recorded``; re-derive their effects), IGNORED (stale/late/no-op; ``reason`` says why) or
    REJECTED (impossible; the server double-checks it has the latest history, then drops it).
    ``effects`` are extra effects that come from no event (re-arming a timer, retrying a
    workflow task).
    """

    outcome: str
    events: tuple[ev.Event, ...] = ()
    effects: tuple[Effect, ...] = ()
    reason: str = ""
    recorded: tuple[int, int] | None = None
    decided_through: int = 0
    """The workflow code has already seen ``events`` up to this id (a fused activity report
    that decided nothing new): no workflow task is needed for them."""


class _Builder:
    def __init__(self, state: RunState, now: float) -> None:
        self.next_id = state.last_event_id + 1
        self.now = now
        self.events: list[ev.Event] = []

    def add(self, cls: type[ev.Event], **fields: Any) -> None:
        event = cls(event_id=self.next_id, at=self.now, **fields)
        self.events.append(event)
        self.next_id += 1

    def decision(self, effects: tuple[Effect, ...] = ()) -> Decision:
        return Decision(APPLIED, tuple(self.events), effects)


def _ignored(reason: str, effects: tuple[Effect, ...] = ()) -> Decision:
    return Decision(IGNORED, effects=effects, reason=reason)


def _rejected(reason: str) -> Decision:
    return Decision(REJECTED, reason=reason)


def wft_retry_delay(attempt: int) -> float:
    """Backoff between workflow task retries: 1 s doubling, capped at 60 s."""
    return float(min(60.0, 2.0 ** max(0, min(attempt - 1, 10))))


def _timeout_failure(timeout_type: str, message: str) -> Failure:
    return Failure(
        message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=timeout_type
    )


# ----------------------------------------------------------------------------- decide


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
        b.add(ev.SignalReceived, name=input.name, args=input.args, request_id=input.request_id)
        return b.decision()
    if isinstance(input, inp.RequestCancel):
        if state.cancel_requested:
            return _ignored("cancellation was already requested")
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


def _fusable(state: RunState, report: inp.CompleteActivityTask) -> bool:
    """The worker decided on top of exactly the history we have (plus this completion)."""
    return report.completed_at is not None and report.event_id == state.last_event_id + 1


def _complete_workflow_task(
    state: RunState,
    task: inp.CompleteWorkflowTask,
    b: _Builder,
    new_run_id: str,
    *,
    last_event_id: int | None = None,
) -> Decision:
    if task.based_on > (state.last_event_id if last_event_id is None else last_event_id):
        return _rejected(
            f"workflow task is based on event {task.based_on} but history has only "
            f"{state.last_event_id} events"
        )
    if state.last_command_event_id > task.based_on:
        return _ignored(
            f"stale workflow task: decided after event {task.based_on}, but decisions were "
            f"recorded at event {state.last_command_event_id}"
        )
    if not task.commands:
        return _ignored("workflow task has nothing to record")
    terminal_seen = False
    seq = state.next_seq
    first_seq: int | None = None
    for cmd in task.commands:
        if terminal_seen:
            return _rejected("a command follows the workflow's terminal command")
        if isinstance(
            cmd, CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow
        ):
            terminal_seen = True
            continue
        if first_seq is None:
            first_seq = cmd.seq
            if cmd.seq < state.next_seq:
                return _ignored(f"command #{cmd.seq} is already recorded")
        if cmd.seq != seq:
            return _rejected(f"expected command #{seq}, got #{cmd.seq}")
        seq += 1
    based_on = task.based_on
    for cmd in task.commands:
        if isinstance(cmd, ScheduleActivity):
            b.add(
                ev.ActivityScheduled,
                based_on=based_on,
                seq=cmd.seq,
                name=cmd.name,
                args=cmd.args,
                # a worker sends resolved options; make sure, so retries and timeouts apply
                options=cmd.options.resolved(state.started.task_queue),
            )
        elif isinstance(cmd, StartTimer):
            # in workflow time: from when the code asked (never later than now)
            start = b.now if cmd.start is None else min(cmd.start, b.now)
            b.add(
                ev.TimerStarted,
                based_on=based_on,
                seq=cmd.seq,
                duration=cmd.duration,
                fire_at=start + cmd.duration,
            )
        elif isinstance(cmd, StartSignalWait):
            start = b.now if cmd.start is None else min(cmd.start, b.now)
            deadline = None if cmd.timeout is None else start + cmd.timeout
            b.add(
                ev.SignalWaitStarted,
                based_on=based_on,
                seq=cmd.seq,
                name=cmd.name,
                timeout=cmd.timeout,
                deadline=deadline,
            )
        elif isinstance(cmd, RecordSideEffect):
            b.add(
                ev.SideEffectRecorded,
                based_on=based_on,
                seq=cmd.seq,
                value=cmd.value,
                failure=cmd.failure,
            )
        elif isinstance(cmd, RecordMarker):
            b.add(ev.MarkerRecorded, based_on=based_on, seq=cmd.seq, change_id=cmd.change_id)
        elif isinstance(cmd, StartChildWorkflow):
            b.add(
                ev.ChildWorkflowScheduled,
                based_on=based_on,
                seq=cmd.seq,
                workflow_type=cmd.workflow_type,
                workflow_id=cmd.workflow_id,
                task_queue=cmd.task_queue,
                args=cmd.args,
                execution_timeout=cmd.execution_timeout,
                parent_close_policy=cmd.parent_close_policy,
            )
        elif isinstance(cmd, CompleteWorkflow):
            b.add(ev.WorkflowCompleted, based_on=based_on, result=cmd.result)
        elif isinstance(cmd, FailWorkflow):
            b.add(ev.WorkflowFailed, based_on=based_on, failure=cmd.failure)
        elif isinstance(cmd, CancelWorkflow):
            if not state.cancel_requested:
                return _rejected("the workflow ended cancelled but no cancellation was requested")
            b.add(ev.WorkflowCancelled, based_on=based_on, message=cmd.message)
        else:
            if not new_run_id:
                return _rejected("continue-as-new needs a new run id")
            s = state.started
            later = tuple(
                PendingSignal(sig.name, sig.args)
                for sig in state.signals
                if sig.event_id > based_on
            )
            b.add(
                ev.WorkflowContinuedAsNew,
                based_on=based_on,
                new_run_id=new_run_id,
                workflow_type=cmd.workflow_type or s.workflow_type,
                task_queue=cmd.task_queue or s.task_queue,
                args=cmd.args,
                signals=cmd.signals + later,
            )
    if task.more and b.events and not isinstance(b.events[-1], ev.TERMINAL_EVENTS):
        # the worker holds more commands: give it a workflow task to send them
        trigger = b.events[-1].event_id
        return b.decision((DispatchWorkflowTask(_workflow_task(state, trigger)),))
    return b.decision()


def _fail_workflow_task(state: RunState, task: inp.FailWorkflowTask, b: _Builder) -> Decision:
    if task.based_on > state.last_event_id:
        return _rejected(
            f"workflow task is based on event {task.based_on} but history has only "
            f"{state.last_event_id} events"
        )
    if state.last_command_event_id > task.based_on:
        return _ignored("stale workflow task failure: newer decisions are recorded")
    last = state.last_wft_failure
    if last is not None and last.event_id == state.last_event_id:
        # already recorded and nothing happened since: retry later without a new event
        key = f"wft.{task.attempt}"
        return _ignored(
            "workflow task failure already recorded",
            (ArmTimer(key, b.now + wft_retry_delay(task.attempt)),),
        )
    b.add(ev.WorkflowTaskFailed, based_on=task.based_on, failure=task.failure, attempt=task.attempt)
    return b.decision()


def _current_attempt(
    state: RunState, seq: int, attempt: int
) -> tuple[ActivityState | None, Decision]:
    act = state.activities.get(seq)
    if act is None:
        return None, _rejected(f"no activity #{seq} in this run")
    if act.closed:
        return None, _ignored(f"activity #{seq} is already closed")
    if attempt < act.attempt:
        return None, _ignored(
            f"late report for attempt {attempt}; activity #{seq} is on {act.attempt}"
        )
    if attempt > act.attempt:
        return None, _rejected(f"attempt {attempt} of activity #{seq} was never scheduled")
    return act, Decision(APPLIED)


def _activity_started(state: RunState, rep: inp.ReportActivityStarted, b: _Builder) -> Decision:
    act, why = _current_attempt(state, rep.seq, rep.attempt)
    if act is None:
        return why
    if act.started_at is not None:
        return _ignored("attempt start already recorded")
    b.add(ev.ActivityStarted, seq=rep.seq, attempt=rep.attempt, worker=rep.worker)
    return b.decision()


def _attempt_failed(
    state: RunState,
    act: ActivityState,
    failure: Failure,
    heartbeat_details: tuple[object, ...],
    b: _Builder,
) -> None:
    policy = act.options.retry_policy
    assert policy is not None, "activity options are resolved when scheduled"
    details = tuple(heartbeat_details) or act.heartbeat_details
    if failure.kind == FailureKind.TIMEOUT and failure.timeout_type in (
        "schedule_to_start",
        "schedule_to_close",
    ):
        retry_ok, delay, reason = False, 0.0, "timeout"
    elif failure.kind == FailureKind.CANCELLED and state.cancel_requested:
        # the workflow asked its activities to stop (df.heartbeat raised): never run it again
        retry_ok, delay, reason = False, 0.0, "cancel_requested"
    else:
        rd = decide_retry(
            policy,
            failure,
            act.attempt,
            now=b.now,
            scheduled_at=act.scheduled_at,
            schedule_to_close_timeout=act.options.schedule_to_close_timeout,
            jitter_key=f"{state.run_id}:{act.seq}:{act.attempt}",
        )
        retry_ok, delay, reason = rd.retry, rd.delay, rd.reason
    if retry_ok:
        b.add(
            ev.ActivityRetryScheduled,
            seq=act.seq,
            attempt=act.attempt,
            failure=failure,
            delay=delay,
            retry_at=b.now + delay,
            heartbeat_details=details,
        )
    elif failure.kind == FailureKind.TIMEOUT:
        b.add(
            ev.ActivityTimedOut,
            seq=act.seq,
            attempt=act.attempt,
            timeout_type=failure.timeout_type or "",
            failure=failure,
            retry_state=reason,
        )
    else:
        b.add(
            ev.ActivityFailed, seq=act.seq, attempt=act.attempt, failure=failure, retry_state=reason
        )


def _fire_timer(state: RunState, fire: inp.FireTimer, b: _Builder) -> Decision:
    key = fire.key
    if key == "wf.exec":
        if state.started.execution_deadline is None:
            return _rejected("the run has no execution timeout")
        timeout = state.started.execution_timeout or 0.0
        b.add(ev.WorkflowTimedOut, timeout=timeout)
        return b.decision()
    if key.startswith("wft."):
        attempt = _int(key[4:])
        if attempt is None or state.last_wft_failure is None:
            return _ignored("no failing workflow task to retry")
        return _ignored(
            "workflow task retry due",
            (DispatchWorkflowTask(_workflow_task(state, state.last_event_id, attempt + 1)),),
        )
    if key.startswith("t"):
        seq = _int(key[1:])
        if seq is None or seq not in state.timers:
            return _ignored(f"timer {key} already fired or unknown")
        b.add(ev.TimerFired, seq=seq)
        return b.decision()
    if key.startswith("s"):
        seq = _int(key[1:])
        if seq is None or seq not in state.signal_waits:
            return _ignored(f"signal wait {key} already over or unknown")
        b.add(ev.SignalWaitTimedOut, seq=seq)
        return b.decision()
    if key.startswith("a"):
        return _activity_timer(state, fire, b)
    return _rejected(f"unknown timer key {key!r}")


def _int(text: str) -> int | None:
    # isdigit() alone accepts characters int() rejects, such as '²'
    return int(text) if text.isascii() and text.isdigit() else None


def _activity_timer(state: RunState, fire: inp.FireTimer, b: _Builder) -> Decision:
    parts = fire.key[1:].split(".")
    seq = _int(parts[0]) if parts else None
    act = state.activities.get(seq) if seq is not None else None
    if act is None:
        return _rejected(f"unknown activity timer {fire.key!r}")
    if act.closed:
        return _ignored(f"activity #{act.seq} already closed")
    opts = act.options
    if parts[1:] == ["s2c"]:
        failure = _timeout_failure(
            "schedule_to_close",
            f"activity {act.name!r} did not complete within its schedule_to_close_timeout of "
            f"{opts.schedule_to_close_timeout:g}s (all attempts and retries included)",
        )
        b.add(
            ev.ActivityTimedOut,
            seq=act.seq,
            attempt=act.attempt,
            timeout_type="schedule_to_close",
            failure=failure,
            retry_state="timeout",
        )
        return b.decision()
    if len(parts) != 3:
        return _rejected(f"unknown activity timer {fire.key!r}")
    attempt, kind = _int(parts[1]), parts[2]
    if attempt != act.attempt:
        return _ignored(f"timer for attempt {attempt}; activity #{act.seq} is on {act.attempt}")
    if kind == "s2s":
        if act.started_at is not None:
            return _ignored("attempt already started")
        failure = _timeout_failure(
            "schedule_to_start",
            f"no worker picked up activity {act.name!r} (attempt {act.attempt}) on task queue "
            f"{opts.task_queue!r} within its schedule_to_start_timeout of "
            f"{opts.schedule_to_start_timeout:g}s; is a worker running for that queue?",
        )
        _attempt_failed(state, act, failure, (), b)
        return b.decision()
    if act.started_at is None:
        return _ignored("attempt has not started")
    if kind == "stc":
        failure = _timeout_failure(
            "start_to_close",
            f"attempt {act.attempt} of activity {act.name!r} did not finish within its "
            f"start_to_close_timeout of {opts.start_to_close_timeout:g}s",
        )
        _attempt_failed(state, act, failure, (), b)
        return b.decision()
    if kind == "hb":
        timeout = opts.heartbeat_timeout
        if timeout is None:
            return _ignored("activity has no heartbeat timeout")
        last = max(act.started_at, fire.heartbeat_at or 0.0)
        deadline = last + timeout
        if b.now + TIMER_TOLERANCE < deadline:
            return _ignored("heartbeat received in time", (ArmTimer(fire.key, deadline),))
        failure = _timeout_failure(
            "heartbeat",
            f"attempt {act.attempt} of activity {act.name!r} sent no heartbeat for "
            f"{timeout:g}s (its heartbeat_timeout)",
        )
        _attempt_failed(state, act, failure, fire.heartbeat_details, b)
        return b.decision()
    return _rejected(f"unknown activity timer {fire.key!r}")


# ----------------------------------------------------------------------------- effects


def _workflow_task(state: RunState, trigger: int, attempt: int = 1) -> WorkflowTask:
    s = state.started
    return WorkflowTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        trigger=trigger,
        attempt=attempt,
    )


def activity_task(state: RunState, act: ActivityState) -> ActivityTask:
    s = state.started
    opts = act.options
    return ActivityTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        seq=act.seq,
        attempt=act.attempt,
        name=act.name,
        task_queue=opts.task_queue or s.task_queue,
        options=opts,
        scheduled_at=act.scheduled_at,
        attempt_scheduled_at=act.attempt_scheduled_at,
        args=act.args,
        heartbeat_details=act.heartbeat_details,
        headers=s.headers,
    )


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
                    run_id=terminal.new_run_id,
                    headers=s.headers,
                    signals=terminal.signals,
                )
            )
        )
    elif s.parent is not None:
        result = terminal.result if isinstance(terminal, ev.WorkflowCompleted) else None
        out.append(
            NotifyParent(s.parent, s.run_id, result=result, failure=_close_failure(state, terminal))
        )
    return out


_DECISION_EVENTS = (
    *ev.COMMAND_EVENTS,
    ev.WorkflowCompleted,
    ev.WorkflowFailed,
    ev.WorkflowCancelled,
    ev.WorkflowContinuedAsNew,
)


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
    need_wft = False
    for e in events:
        if isinstance(e, ev.WorkflowStarted):
            need_wft = True
            out.append(UpdateStatus(state.summary()))
            if e.execution_deadline is not None and state.is_open:
                out.append(ArmTimer("wf.exec", e.execution_deadline))
            if e.parent is not None:
                out.append(NotifyParent(e.parent, e.run_id, started=True))
        elif isinstance(e, ev.ActivityScheduled):
            act = state.activities[e.seq]
            if act.closed:
                continue
            opts = act.options
            if act.attempt == 1 and act.started_at is None:
                out.append(DispatchActivityTask(activity_task(state, act)))
                if opts.schedule_to_start_timeout is not None:
                    out.append(ArmTimer(f"a{e.seq}.1.s2s", e.at + opts.schedule_to_start_timeout))
            if opts.schedule_to_close_timeout is not None:
                out.append(ArmTimer(f"a{e.seq}.s2c", e.at + opts.schedule_to_close_timeout))
        elif isinstance(e, ev.ActivityRetryScheduled):
            act = state.activities[e.seq]
            nxt = e.attempt + 1
            if act.closed or act.attempt != nxt or act.started_at is not None:
                continue
            out.append(DispatchActivityTask(activity_task(state, act), deliver_at=e.retry_at))
            if act.options.schedule_to_start_timeout is not None:
                out.append(
                    ArmTimer(
                        f"a{e.seq}.{nxt}.s2s", e.retry_at + act.options.schedule_to_start_timeout
                    )
                )
        elif isinstance(e, ev.ActivityStarted):
            act = state.activities[e.seq]
            if act.closed or act.attempt != e.attempt:
                continue
            opts = act.options
            if opts.start_to_close_timeout is not None:
                out.append(
                    ArmTimer(f"a{e.seq}.{e.attempt}.stc", e.at + opts.start_to_close_timeout)
                )
            if opts.heartbeat_timeout is not None:
                out.append(ArmTimer(f"a{e.seq}.{e.attempt}.hb", e.at + opts.heartbeat_timeout))
        elif isinstance(e, ev.TimerStarted):
            if e.seq in state.timers:
                out.append(ArmTimer(f"t{e.seq}", e.fire_at))
        elif isinstance(e, ev.SignalWaitStarted):
            if e.deadline is not None and e.seq in state.signal_waits:
                out.append(ArmTimer(f"s{e.seq}", e.deadline))
        elif isinstance(e, ev.ChildWorkflowScheduled):
            child = state.children[e.seq]
            if child.closed or child.run_id is not None:
                continue
            s = state.started
            out.append(
                StartRun(
                    inp.StartWorkflowRequest(
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
                )
            )
        elif isinstance(e, ev.WorkflowTaskFailed):
            if state.is_open:
                out.append(ArmTimer(f"wft.{e.attempt}", e.at + wft_retry_delay(e.attempt)))
        elif isinstance(e, ev.CancelRequested):
            need_wft = True
            open_acts = tuple(state.open_activities())
            if open_acts and state.is_open:
                out.append(CancelActivities(open_acts, "workflow cancellation requested"))
            if state.is_open:
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
        elif isinstance(e, ev.TERMINAL_EVENTS):
            out.extend(_close_effects(state, e))
        elif isinstance(e, ev.RESULT_EVENTS):
            need_wft = True
    decided_on = max((e.based_on for e in events if isinstance(e, _DECISION_EVENTS)), default=None)
    if decided_on is None and decided_through:
        decided_on = decided_through
    if decided_on is not None:
        # the code decided after seeing event `decided_on`: it needs a workflow task only if
        # results arrived after that (while it was deciding)
        need_wft = state.last_deliverable_event_id > decided_on
    if need_wft and state.is_open:
        out.append(DispatchWorkflowTask(_workflow_task(state, events[-1].event_id)))
    return out


# ----------------------------------------------------------------------------- starting runs


@frozen
class LatestRun:
    """The most recent run under a workflow id, as far as arbitration needs to know."""

    run_id: str
    status: str
    request_id: str = ""


@frozen
class StartDecision:
    """``start`` a new run, return an ``existing`` one, ``signal`` it, or ``reject``."""

    action: str
    run_id: str = ""
    message: str = ""


def decide_start(request: inp.StartWorkflowRequest, latest: LatestRun | None) -> StartDecision:
    if latest is None:
        return StartDecision("start")
    if request.request_id and latest.request_id == request.request_id:
        return StartDecision("existing", latest.run_id)
    if request.continued_from is not None:
        if latest.run_id == request.continued_from and latest.status == RunStatus.CONTINUED_AS_NEW:
            return StartDecision("start")
        return StartDecision(
            "reject",
            latest.run_id,
            f"run {request.continued_from} is not the latest closed run of "
            f"{request.workflow_id!r}; not continuing it",
        )
    if latest.status == RunStatus.RUNNING:
        if request.signal_name is not None:
            return StartDecision("signal", latest.run_id)
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow {request.workflow_id!r} is already running (run {latest.run_id}); "
            "wait for it with client.get_workflow_handle(id).result(), or start with another id",
        )
    policy = request.id_reuse_policy
    if policy is IdReusePolicy.REJECT_DUPLICATE:
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow id {request.workflow_id!r} was already used (run {latest.run_id}, "
            f"{latest.status}) and the id reuse policy is REJECT_DUPLICATE",
        )
    if (
        policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
        and latest.status not in RunStatus.FAILED_LIKE
    ):
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow id {request.workflow_id!r} last run {latest.run_id} {latest.status}; "
            "the id reuse policy ALLOW_DUPLICATE_FAILED_ONLY allows a new run only after a "
            "failure",
        )
    return StartDecision("start")


def start_events(
    request: inp.StartWorkflowRequest, *, namespace: str, run_id: str, now: float
) -> list[ev.Event]:
    """The first events of a new run: WorkflowStarted (and the signal of signal-with-start)."""
    deadline = request.execution_deadline
    if deadline is None and request.execution_timeout is not None:
        deadline = now + request.execution_timeout
    out: list[ev.Event] = [
        ev.WorkflowStarted(
            event_id=1,
            at=now,
            workflow_type=request.workflow_type,
            workflow_id=request.workflow_id,
            run_id=run_id,
            namespace=namespace,
            task_queue=request.task_queue,
            args=request.args,
            execution_timeout=request.execution_timeout,
            id_reuse_policy=request.id_reuse_policy,
            parent=request.parent,
            parent_close_policy=request.parent_close_policy,
            continued_from=request.continued_from,
            first_run_id=request.first_run_id or run_id,
            request_id=request.request_id,
            execution_deadline=deadline,
            headers=dict(request.headers),
        )
    ]
    for i, pending in enumerate(request.signals):
        out.append(
            ev.SignalReceived(
                event_id=len(out) + 1,
                at=now,
                name=pending.name,
                args=pending.args,
                request_id=f"{request.request_id}:carried:{i}",
            )
        )
    if request.signal_name is not None:
        out.append(
            ev.SignalReceived(
                event_id=len(out) + 1,
                at=now,
                name=request.signal_name,
                args=request.signal_args,
                request_id=f"{request.request_id}:signal",
            )
        )
    return out
