"""The command vocabulary: one entry per command, from the command to its recorded event.

Each :class:`CommandKind` declares, for one command class, everything the rest of the core
needs to know about it:

* ``event``: the history event that records it;
* ``record``: the fields of that event, given the run's state (or why it cannot be recorded),
  which is what the server does with the command (``orchestration``);
* ``matches``: whether a recorded event is the same command again, which is how replay checks
  determinism (kind is compared first; ``matches`` compares what must not change);
* ``effects``: what the server does once that event is recorded (dispatch a task, arm a
  timer, start a child run), given the run's state with the event applied;
* ``describe`` / ``describe_event``: one line for error messages, the UI and ``df workflow``;
* ``instant``: the code does not wait on it (the UI timeline draws a point, else a bar).

Adding a command means: its class in ``_command_types.py`` (``commands.py`` re-exports every
command), its event in ``events.py`` and one entry
here (its effects, if any, in ``_command_effects.py``); if its event changes the server's view
of the run, a fold handler in ``state.py``. The UI timeline and ``df why`` need nothing: they
describe any command from its entry. Events
that are not commands (results, attempts, cancellation) have one handler each, by event type, in
``state.py`` and ``orchestration/_effects.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from attrs import frozen

from durablefuture.core import _command_effects as fx
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    Command,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PendingSignal,
    PrimitiveCommand,
    RecordLocalActivity,
    RecordMarker,
    RecordSideEffect,
    RequestCancelExternalWorkflow,
    RequestCancellation,
    ScheduleActivity,
    SignalExternalWorkflow,
    StartChildWorkflow,
    StartConditionWait,
    StartSignalWait,
    StartTimer,
    UpsertSearchAttributes,
)
from durablefuture.core.effects import (
    Effect,
    IndexRun,
)
from durablefuture.core.failure import Failure
from durablefuture.core.state import RunState

__all__ = [
    "DECIDED_TERMINAL_EVENTS",
    "KINDS",
    "TERMINAL_COMMANDS",
    "CommandKind",
    "Recording",
    "command_effects",
    "command_type_of",
    "decided_after",
    "describe_command",
    "describe_event",
    "event_fields",
    "event_type_of",
    "is_instant",
    "is_terminal",
    "matches",
]

C = TypeVar("C")
E = TypeVar("E")


@frozen
class Recording:
    """What recording a command may depend on besides the command itself."""

    state: RunState
    based_on: int
    now: float
    new_run_id: str = ""


@frozen
class CommandKind(Generic[C, E]):
    """How one command is recorded, replayed and described (see the module docstring)."""

    command: type[C]
    event: type[E]
    record: Callable[[C, Recording], dict[str, object] | str]
    """The event's fields (``event_id``, ``at`` and ``based_on`` are added), or a reason to
    reject the workflow task."""
    describe: Callable[[C], str]
    describe_event: Callable[[E], str]
    matches: Callable[[E, C], bool] = lambda _e, _c: True
    effects: Callable[[RunState, E], list[Effect]] = lambda _s, _e: []
    terminal: bool = False
    """Ends the run; its effects are the run's close effects (``orchestration/_effects.py``)."""
    instant: bool = False
    """Done when recorded (the code never waits on it): the UI draws a point, not a bar."""


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _since(start: float | None, now: float) -> float:
    # in workflow time: from when the code asked (never later than now)
    return now if start is None else min(start, now)


def _activity(args: tuple[object, ...], name: str) -> str:
    return f"activity {name!r} args={_short(list(args))}"


def _child(workflow_type: str, workflow_id: str) -> str:
    return f"child_workflow {workflow_type!r} id={workflow_id!r}"


def _record_cancel(cmd: CancelWorkflow, r: Recording) -> dict[str, object] | str:
    if not r.state.cancel_requested:
        return "the workflow ended cancelled but no cancellation was requested"
    return {"message": cmd.message}


def _record_continue(cmd: ContinueAsNewWorkflow, r: Recording) -> dict[str, object] | str:
    if not r.new_run_id:
        return "continue-as-new needs a new run id"
    s = r.state.started
    # signals recorded after the code decided: the code never saw them, the next run gets them
    later = tuple(
        PendingSignal(sig.name, sig.args) for sig in r.state.signals if sig.event_id > r.based_on
    )
    return {
        "new_run_id": r.new_run_id,
        "workflow_type": cmd.workflow_type or s.workflow_type,
        "task_queue": cmd.task_queue or s.task_queue,
        "args": cmd.args,
        "signals": cmd.signals + later,
    }


def _condition(timeout: float | None) -> str:
    return "wait_condition" + ("" if timeout is None else f" timeout={timeout:g}s")


def _update(name: str, update_id: str) -> str:
    return f"update {name!r} id={update_id!r}"


def _brief(failure: Failure | None) -> tuple[str, str] | None:
    # the stack names files, which differ between machines: type and message must match
    return None if failure is None else (failure.type, failure.message)


def _record_update(c: CompleteUpdate, r: Recording) -> dict[str, object] | str:
    if c.update_id not in r.state.updates:
        return f"the code completed update {c.update_id!r}, which the run has not accepted"
    if isinstance(r.state.updates[c.update_id], ev.UpdateCompleted):
        return f"the code completed update {c.update_id!r} twice"
    fields = {"seq": c.seq, "update_id": c.update_id, "name": c.name}
    return fields | {"result": c.result, "failure": c.failure}


def _record_cancellation(c: RequestCancellation, r: Recording) -> dict[str, object] | str:
    if not 0 < c.target < c.seq:
        return f"command #{c.seq} cancels #{c.target}, which the run has not issued before it"
    return {"seq": c.seq, "target": c.target}


KINDS: tuple[CommandKind[Any, Any], ...] = (
    # the vocabulary: one entry per command
    CommandKind[ScheduleActivity, ev.ActivityScheduled](
        ScheduleActivity,
        ev.ActivityScheduled,
        record=lambda c, r: {
            "seq": c.seq,
            "name": c.name,
            "args": c.args,
            # a worker sends resolved options; make sure, so retries and timeouts apply
            "options": c.options.resolved(r.state.started.task_queue),
        },
        describe=lambda c: _activity(c.args, c.name),
        describe_event=lambda e: _activity(e.args, e.name),
        matches=lambda e, c: e.name == c.name and list(e.args) == list(c.args),
        effects=fx.activity_effects,
    ),
    CommandKind[StartTimer, ev.TimerStarted](
        StartTimer,
        ev.TimerStarted,
        record=lambda c, r: {
            "seq": c.seq,
            "duration": c.duration,
            "fire_at": _since(c.start, r.now) + c.duration,
        },
        describe=lambda c: f"sleep {c.duration:g}s",
        describe_event=lambda e: f"sleep {e.duration:g}s",
        effects=fx.timer_effects,
    ),
    CommandKind[StartSignalWait, ev.SignalWaitStarted](
        StartSignalWait,
        ev.SignalWaitStarted,
        record=lambda c, r: {
            "seq": c.seq,
            "name": c.name,
            "timeout": c.timeout,
            "deadline": None if c.timeout is None else _since(c.start, r.now) + c.timeout,
        },
        describe=lambda c: f"wait_signal {c.name!r}",
        describe_event=lambda e: f"wait_signal {e.name!r}",
        matches=lambda e, c: e.name == c.name,
        effects=fx.signal_wait_effects,
    ),
    CommandKind[StartConditionWait, ev.ConditionWaitStarted](
        StartConditionWait,
        ev.ConditionWaitStarted,
        record=lambda c, r: {
            "seq": c.seq,
            "timeout": c.timeout,
            "deadline": None if c.timeout is None else _since(c.start, r.now) + c.timeout,
        },
        describe=lambda c: _condition(c.timeout),
        describe_event=lambda e: _condition(e.timeout),
        effects=fx.condition_effects,
    ),
    CommandKind[RequestCancellation, ev.CancellationRequested](
        RequestCancellation,
        ev.CancellationRequested,
        record=_record_cancellation,
        describe=lambda c: f"cancel #{c.target}",
        describe_event=lambda e: f"cancel #{e.target}",
        matches=lambda e, c: e.target == c.target,
        effects=fx.cancellation_effects,
        instant=True,
    ),
    CommandKind[SignalExternalWorkflow, ev.ExternalWorkflowSignalled](
        SignalExternalWorkflow,
        ev.ExternalWorkflowSignalled,
        record=lambda c, _r: {
            "seq": c.seq,
            "workflow_id": c.workflow_id,
            "name": c.name,
            "args": c.args,
        },
        describe=lambda c: f"signal_workflow {c.workflow_id!r} {c.name!r}",
        describe_event=lambda e: f"signal_workflow {e.workflow_id!r} {e.name!r}",
        matches=lambda e, c: (e.workflow_id, e.name) == (c.workflow_id, c.name),
        effects=fx.signal_external_effects,
        instant=True,
    ),
    CommandKind[RequestCancelExternalWorkflow, ev.ExternalCancelRequested](
        RequestCancelExternalWorkflow,
        ev.ExternalCancelRequested,
        record=lambda c, _r: {"seq": c.seq, "workflow_id": c.workflow_id, "reason": c.reason},
        describe=lambda c: f"cancel_workflow {c.workflow_id!r}",
        describe_event=lambda e: f"cancel_workflow {e.workflow_id!r}",
        matches=lambda e, c: e.workflow_id == c.workflow_id,
        effects=fx.cancel_external_effects,
        instant=True,
    ),
    CommandKind[RecordLocalActivity, ev.LocalActivityRecorded](
        RecordLocalActivity,
        ev.LocalActivityRecorded,
        record=lambda c, _r: {
            "seq": c.seq,
            "name": c.name,
            "args": c.args,
            "result": c.result,
            "failure": c.failure,
            "attempts": c.attempts,
            "applied_at": c.applied_at,
        },
        describe=lambda c: f"local_activity {c.name!r} args={_short(list(c.args))}",
        describe_event=lambda e: f"local_activity {e.name!r} args={_short(list(e.args))}",
        matches=lambda e, c: e.name == c.name and list(e.args) == list(c.args),
        instant=True,
    ),
    CommandKind[CompleteUpdate, ev.UpdateCompleted](
        CompleteUpdate,
        ev.UpdateCompleted,
        record=_record_update,
        describe=lambda c: _update(c.name, c.update_id),
        describe_event=lambda e: _update(e.name, e.update_id),
        # the handler ran again at the same point: it must have come to the same outcome
        matches=lambda e, c: (
            (e.update_id, e.result, _brief(e.failure)) == (c.update_id, c.result, _brief(c.failure))
        ),
        instant=True,
    ),
    CommandKind[RecordSideEffect, ev.SideEffectRecorded](
        RecordSideEffect,
        ev.SideEffectRecorded,
        record=lambda c, _r: {"seq": c.seq, "value": c.value, "failure": c.failure},
        describe=lambda _c: "side_effect",
        describe_event=lambda _e: "side_effect",
        instant=True,
    ),
    CommandKind[RecordMarker, ev.MarkerRecorded](
        RecordMarker,
        ev.MarkerRecorded,
        record=lambda c, _r: {"seq": c.seq, "change_id": c.change_id},
        describe=lambda c: f"patched {c.change_id!r}",
        describe_event=lambda e: f"patched {e.change_id!r}",
        matches=lambda e, c: e.change_id == c.change_id,
        instant=True,
    ),
    CommandKind[UpsertSearchAttributes, ev.SearchAttributesUpserted](
        UpsertSearchAttributes,
        ev.SearchAttributesUpserted,
        record=lambda c, _r: {"seq": c.seq, "search_attributes": c.search_attributes},
        describe=lambda c: f"upsert_search_attributes {_short(sorted(c.search_attributes))}",
        describe_event=lambda e: f"upsert_search_attributes {_short(sorted(e.search_attributes))}",
        matches=lambda e, c: e.search_attributes == c.search_attributes,
        effects=lambda s, _e: [IndexRun(s.summary())] if s.is_open else [],
        instant=True,
    ),
    CommandKind[StartChildWorkflow, ev.ChildWorkflowScheduled](
        StartChildWorkflow,
        ev.ChildWorkflowScheduled,
        record=lambda c, _r: {
            "seq": c.seq,
            "workflow_type": c.workflow_type,
            "workflow_id": c.workflow_id,
            "task_queue": c.task_queue,
            "args": c.args,
            "execution_timeout": c.execution_timeout,
            "parent_close_policy": c.parent_close_policy,
        },
        describe=lambda c: _child(c.workflow_type, c.workflow_id),
        describe_event=lambda e: _child(e.workflow_type, e.workflow_id),
        matches=lambda e, c: e.workflow_type == c.workflow_type and list(e.args) == list(c.args),
        effects=fx.child_effects,
    ),
    CommandKind[CompleteWorkflow, ev.WorkflowCompleted](
        CompleteWorkflow,
        ev.WorkflowCompleted,
        record=lambda c, _r: {"result": c.result},
        describe=lambda _c: "return (workflow completed)",
        describe_event=lambda _e: "return (workflow completed)",
        terminal=True,
    ),
    CommandKind[FailWorkflow, ev.WorkflowFailed](
        FailWorkflow,
        ev.WorkflowFailed,
        record=lambda c, _r: {"failure": c.failure},
        describe=lambda c: f"raise {c.failure.type} (workflow failed)",
        describe_event=lambda e: f"raise {e.failure.type} (workflow failed)",
        terminal=True,
    ),
    CommandKind[CancelWorkflow, ev.WorkflowCancelled](
        CancelWorkflow,
        ev.WorkflowCancelled,
        record=_record_cancel,
        describe=lambda _c: "workflow cancelled",
        describe_event=lambda _e: "workflow cancelled",
        terminal=True,
    ),
    CommandKind[ContinueAsNewWorkflow, ev.WorkflowContinuedAsNew](
        ContinueAsNewWorkflow,
        ev.WorkflowContinuedAsNew,
        record=_record_continue,
        describe=lambda _c: "continue_as_new",
        describe_event=lambda _e: "continue_as_new",
        terminal=True,
    ),
)

_BY_COMMAND: dict[type, CommandKind[Any, Any]] = {k.command: k for k in KINDS}
_BY_EVENT: dict[type, CommandKind[Any, Any]] = {k.event: k for k in KINDS}

TERMINAL_COMMANDS: tuple[type, ...] = tuple(k.command for k in KINDS if k.terminal)
"""The command classes that end a run (``CompleteWorkflow``, ``FailWorkflow``, ...)."""

DECIDED_TERMINAL_EVENTS: tuple[type, ...] = tuple(k.event for k in KINDS if k.terminal)
"""The events of the run's own end (not a timeout or a termination from outside)."""


def is_terminal(cmd: Command) -> bool:
    """True if ``cmd`` ends the run."""
    return _BY_COMMAND[type(cmd)].terminal


def event_type_of(cmd: Command) -> type[ev.Event]:
    """The event class that records ``cmd``."""
    event: type[ev.Event] = _BY_COMMAND[type(cmd)].event
    return event


def command_type_of(event: ev.Event) -> type | None:
    """The command class ``event`` records, or None if no command records it."""
    kind = _BY_EVENT.get(type(event))
    return None if kind is None else kind.command


def event_fields(cmd: Command, recording: Recording) -> dict[str, object] | str:
    """The fields of the event that records ``cmd``, or why it cannot be recorded."""
    return _BY_COMMAND[type(cmd)].record(cmd, recording)


class _Decided(Protocol):
    based_on: int


def decided_after(event: ev.Event) -> int | None:
    """For the event of a command, the last event the code had seen when it issued the
    command (its ``based_on``); None for any other event."""
    return cast(_Decided, event).based_on if type(event) in _BY_EVENT else None


def command_effects(state: RunState, event: ev.Event) -> list[Effect]:
    """The effects of the event of a command (none for any other event)."""
    kind = _BY_EVENT.get(type(event))
    return [] if kind is None else kind.effects(state, event)


def is_instant(event: ev.Event) -> bool:
    """True for the event of a command the code does not wait on (``CommandKind.instant``)."""
    kind = _BY_EVENT.get(type(event))
    return kind is not None and kind.instant


def matches(recorded: ev.Event, cmd: PrimitiveCommand) -> bool:
    """True if ``recorded`` is the event of the same command as ``cmd`` (replay's check)."""
    kind = _BY_EVENT.get(type(recorded))
    return kind is not None and kind.command is type(cmd) and kind.matches(recorded, cmd)


def describe_command(cmd: Command) -> str:
    """A one-line description of a command, for error messages and tables."""
    return _BY_COMMAND[type(cmd)].describe(cmd)


def describe_event(event: ev.Event) -> str:
    """A one-line description of a recorded event."""
    kind = _BY_EVENT.get(type(event))
    return type(event).__name__ if kind is None else kind.describe_event(event)
