"""One-line descriptions of commands and events, and whether a recorded event matches a command.

Used in non-determinism errors (both sides of a divergence), the UI and ``df workflow``.
"""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PrimitiveCommand,
    RecordMarker,
    RecordSideEffect,
    ScheduleActivity,
    StartChildWorkflow,
    StartSignalWait,
    StartTimer,
)

__all__ = ["describe_command", "describe_event"]


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_command(cmd: Command) -> str:
    """A one-line description of a command, for error messages and tables."""
    if isinstance(cmd, ScheduleActivity):
        return f"activity {cmd.name!r} args={_short(list(cmd.args))}"
    if isinstance(cmd, StartTimer):
        return f"sleep {cmd.duration:g}s"
    if isinstance(cmd, StartSignalWait):
        return f"wait_signal {cmd.name!r}"
    if isinstance(cmd, RecordSideEffect):
        return "side_effect"
    if isinstance(cmd, RecordMarker):
        return f"patched {cmd.change_id!r}"
    if isinstance(cmd, StartChildWorkflow):
        return f"child_workflow {cmd.workflow_type!r} id={cmd.workflow_id!r}"
    if isinstance(cmd, CompleteWorkflow):
        return "return (workflow completed)"
    if isinstance(cmd, FailWorkflow):
        return f"raise {cmd.failure.type} (workflow failed)"
    if isinstance(cmd, CancelWorkflow):
        return "workflow cancelled"
    return "continue_as_new"


def describe_event(event: ev.Event) -> str:
    """A one-line description of a recorded event."""
    if isinstance(event, ev.ActivityScheduled):
        return f"activity {event.name!r} args={_short(list(event.args))}"
    if isinstance(event, ev.TimerStarted):
        return f"sleep {event.duration:g}s"
    if isinstance(event, ev.SignalWaitStarted):
        return f"wait_signal {event.name!r}"
    if isinstance(event, ev.SideEffectRecorded):
        return "side_effect"
    if isinstance(event, ev.MarkerRecorded):
        return f"patched {event.change_id!r}"
    if isinstance(event, ev.ChildWorkflowScheduled):
        return f"child_workflow {event.workflow_type!r} id={event.workflow_id!r}"
    if isinstance(event, ev.WorkflowCompleted):
        return "return (workflow completed)"
    if isinstance(event, ev.WorkflowFailed):
        return f"raise {event.failure.type} (workflow failed)"
    if isinstance(event, ev.WorkflowCancelled):
        return "workflow cancelled"
    if isinstance(event, ev.WorkflowContinuedAsNew):
        return "continue_as_new"
    return type(event).__name__


_KIND_OF_EVENT: dict[type, type] = {
    ev.ActivityScheduled: ScheduleActivity,
    ev.TimerStarted: StartTimer,
    ev.SignalWaitStarted: StartSignalWait,
    ev.SideEffectRecorded: RecordSideEffect,
    ev.MarkerRecorded: RecordMarker,
    ev.ChildWorkflowScheduled: StartChildWorkflow,
}

_TERMINAL_KIND: dict[type, type] = {
    ev.WorkflowCompleted: CompleteWorkflow,
    ev.WorkflowFailed: FailWorkflow,
    ev.WorkflowCancelled: CancelWorkflow,
    ev.WorkflowContinuedAsNew: ContinueAsNewWorkflow,
}
_TERMINAL_TYPES = tuple(_TERMINAL_KIND)


def _matches(recorded: ev.Event, cmd: PrimitiveCommand) -> bool:
    if _KIND_OF_EVENT.get(type(recorded)) is not type(cmd):
        return False
    if isinstance(recorded, ev.ActivityScheduled) and isinstance(cmd, ScheduleActivity):
        return recorded.name == cmd.name and list(recorded.args) == list(cmd.args)
    if isinstance(recorded, ev.SignalWaitStarted) and isinstance(cmd, StartSignalWait):
        return recorded.name == cmd.name
    if isinstance(recorded, ev.MarkerRecorded) and isinstance(cmd, RecordMarker):
        return recorded.change_id == cmd.change_id
    if isinstance(recorded, ev.ChildWorkflowScheduled) and isinstance(cmd, StartChildWorkflow):
        return recorded.workflow_type == cmd.workflow_type and list(recorded.args) == list(cmd.args)
    return True


_VALID_YIELDS = (
    "df.activity(...), df.sleep(...), df.wait_signal(...), df.side_effect(...), "
    "df.child_workflow(...), df.all_of(...), df.any_of(...) or df.continue_as_new(...)"
)
