"""Recording a workflow task: its commands become events (or why not), or its failure."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import TerminalCommand
from durablefuture.core.effects import (
    ArmTimer,
    DispatchWorkflowTask,
    workflow_task,
)
from durablefuture.core.orchestration._decision import (
    Decision,
    _Builder,
    _ignored,
    _rejected,
    wft_retry_delay,
)
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey
from durablefuture.core.vocabulary import Recording, event_fields, event_type_of


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
        if isinstance(cmd, TerminalCommand):
            terminal_seen = True
            continue
        if first_seq is None:
            first_seq = cmd.seq
            if cmd.seq < state.next_seq:
                return _ignored(f"command #{cmd.seq} is already recorded")
        if cmd.seq != seq:
            return _rejected(f"expected command #{seq}, got #{cmd.seq}")
        seq += 1
    recording = Recording(state, task.based_on, b.now, new_run_id)
    for cmd in task.commands:
        fields = event_fields(cmd, recording)
        if isinstance(fields, str):
            return _rejected(fields)
        b.add(event_type_of(cmd), based_on=task.based_on, **fields)
    if task.more and b.events and not isinstance(b.events[-1], ev.TERMINAL_EVENTS):
        # the worker holds more commands: give it a workflow task to send them
        trigger = b.events[-1].event_id
        return b.decision((DispatchWorkflowTask(workflow_task(state, trigger)),))
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
