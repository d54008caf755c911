"""Recording a workflow task: its commands become events (or why not), or its failure."""

from __future__ import annotations

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
    ArmTimer,
    DispatchWorkflowTask,
)
from durablefuture.core.orchestration._decision import (
    Decision,
    _Builder,
    _ignored,
    _rejected,
    wft_retry_delay,
)
from durablefuture.core.orchestration._tasks import _workflow_task
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey


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
        key = TimerKey.workflow_task_retry(task.attempt).encode()
        return _ignored(
            "workflow task failure already recorded",
            (ArmTimer(key, b.now + wft_retry_delay(task.attempt)),),
        )
    b.add(ev.WorkflowTaskFailed, based_on=task.based_on, failure=task.failure, attempt=task.attempt)
    return b.decision()
