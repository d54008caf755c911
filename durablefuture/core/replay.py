"""Replay: drive a workflow generator over its recorded history.

How it works
------------
A :class:`WorkflowExecution` owns one run's generator. ``feed(events)`` walks new history events
in order (the first call starts with ``WorkflowStarted``; later calls continue where the last one
stopped, which is how workers keep runs cached):

* Result events (an activity finished, a timer fired, a signal arrived, cancellation was
  requested, ...) are queued and delivered to the generator **in history order**: the value is
  sent in, a failure is thrown in at the ``yield`` as ``ActivityError`` / ``ChildWorkflowError``
  / ``TimeoutError`` / ``CancelledError``.
* Every primitive command the generator yields gets the next ``seq`` (1, 2, 3, ...). If history
  already holds the event for that ``seq`` it must match (kind, name, arguments), otherwise
  :class:`NonDeterminismError` names the event, both sides and the ``file:line`` of the yield.
  Commands history does not hold yet are *new*: they are returned to be recorded.
* A command event recorded with ``based_on = b`` means "the code had seen events up to ``b`` when
  it issued this". Before checking it, every queued result up to ``b`` is delivered; by then the
  generator must have yielded that ``seq``.
* When the events run out, the remaining results are delivered (that is the "frontier": code
  runs for the first time there) and the new commands, plus the run's outcome if the generator
  finished, form the :class:`Activation` a workflow task sends back.

What it must never do: read the clock, randomness or any I/O (time comes from event timestamps,
randomness is seeded from the run id); re-issue a command history already has; deliver results
in an order other than history's. Because results are delivered strictly in history order and
the generator is deterministic, replaying any prefix of a history reproduces exactly the
commands that were recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import cast

from attrs import evolve, frozen

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    YIELDABLE_TYPES,
    ActivityCall,
    AllOf,
    AnyOf,
    CancelWorkflow,
    ChildWorkflowCall,
    Command,
    CompleteWorkflow,
    ContinueAsNew,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PendingSignal,
    PrimitiveCommand,
    RecordMarker,
    RecordSideEffect,
    ScheduleActivity,
    SideEffect,
    Sleep,
    StartChildWorkflow,
    StartSignalWait,
    StartTimer,
    TerminalCommand,
    WaitSignal,
)
from durablefuture.core.definitions import PayloadConverter, WorkflowDefinition
from durablefuture.core.failure import Failure, exception_from_failure, failure_from_exception
from durablefuture.core.options import ActivityOptions
from durablefuture.core.types import JsonValue

__all__ = [
    "Activation",
    "WorkflowContext",
    "WorkflowExecution",
    "WorkflowInfo",
    "current_context",
    "describe_command",
    "describe_event",
]


@frozen
class WorkflowInfo:
    """What ``df.workflow.info()`` returns."""

    workflow_id: str
    run_id: str
    workflow_type: str
    namespace: str
    task_queue: str
    start_time: float
    attempt: int = 1
    continued_from: str | None = None
    first_run_id: str = ""
    parent: ev.ParentRef | None = None
    history_length: int = 0
    history_size: int = 0
    is_replaying: bool = False


class WorkflowContext:
    """Per-run state read by the deterministic helpers in ``df.workflow``."""

    __slots__ = ("event_id", "execution", "extras", "is_replaying", "now")

    def __init__(self, execution: WorkflowExecution) -> None:
        self.execution = execution
        self.now = 0.0
        self.event_id = 0
        self.is_replaying = False
        self.extras: dict[str, object] = {}


_current: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "durablefuture_workflow_context", default=None
)


def current_context() -> WorkflowContext:
    """The context of the workflow whose code is running now."""
    ctx = _current.get()
    if ctx is None:
        raise errors.WorkflowError(
            "this helper only works inside workflow code (a generator run by a DurableFuture "
            "worker or df.testing.Replayer)"
        )
    return ctx


@frozen
class Activation:
    """The outcome of feeding events: new commands to record, and whether the run finished."""

    based_on: int
    commands: tuple[Command, ...] = ()
    finished: bool = False

    @property
    def terminal(self) -> TerminalCommand | None:
        if self.commands and isinstance(
            self.commands[-1],
            CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow,
        ):
            return self.commands[-1]
        return None


# ------------------------------------------------------------------ wait tree


class _Node:
    __slots__ = ("done", "error", "index", "parent", "value")

    def __init__(self) -> None:
        self.parent: _Composite | None = None
        self.index = 0
        self.done = False
        self.value: object = None
        self.error: BaseException | None = None


class _Leaf(_Node):
    __slots__ = ("kind", "name", "result_type", "seq")

    def __init__(self, seq: int, kind: str, result_type: object, name: str = "") -> None:
        super().__init__()
        self.seq = seq
        self.kind = kind
        self.result_type = result_type
        self.name = name


class _Composite(_Node):
    __slots__ = ("children", "is_any", "remaining", "values")

    def __init__(self, children: list[_Node], is_any: bool) -> None:
        super().__init__()
        self.children = children
        self.is_any = is_any
        self.values: list[object] = [None] * len(children)
        self.remaining = len(children)
        for i, child in enumerate(children):
            child.parent = self
            child.index = i


@frozen
class _Outcome:
    value: object = None
    error: BaseException | None = None


def _location(gen: Generator[object, object, object]) -> str:
    """``file:line`` of the innermost suspended yield (follows ``yield from``)."""
    inner: object = gen
    frame = None
    for _ in range(64):
        frame = getattr(inner, "gi_frame", None) or frame
        nxt = getattr(inner, "gi_yieldfrom", None)
        if nxt is None:
            break
        inner = nxt
    if frame is None:
        return "<finished generator>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


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


class WorkflowExecution:
    """One workflow run's generator, fed with its history (see the module docstring)."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        payloads: PayloadConverter,
        *,
        size_of: Callable[[ev.Event], int] | None = None,
    ) -> None:
        self.definition = definition
        self.payloads = payloads
        self._size_of = size_of
        self._fed: list[ev.Event] = []  # kept only to measure the history (size_of given)
        self._sizes: list[int] = [0]  # cumulative encoded size of events 1..n
        self.context = WorkflowContext(self)
        self.started: ev.WorkflowStarted | None = None
        self._gen: Generator[object, object, object] | None = None
        self._root: _Node | None = None
        self._leaves: dict[int, _Leaf] = {}
        self._recorded: dict[int, ev.Event] = {}
        self._new: dict[int, PrimitiveCommand] = {}
        # (seq, what was yielded, location); commands are described only for error messages
        self._trace: list[tuple[int, str | PrimitiveCommand, str]] = []
        self._next_seq = 1
        self._queue: deque[ev.Event] = deque()
        self._terminal: TerminalCommand | None = None
        self._terminal_recorded = False
        self._closed_by_server = False
        self._signals: dict[str, deque[tuple[int, tuple[JsonValue, ...]]]] = {}
        self._signal_waiters: dict[str, deque[_Leaf]] = {}
        self._cancel_delivered = False
        self._patches: dict[str, bool] = {}
        self._horizon = 0
        self.last_event_id = 0
        self._resolved: dict[ActivityOptions | None, ActivityOptions] = {}
        self._step_location = ""

    # ------------------------------------------------------------------ public

    @property
    def finished(self) -> bool:
        """True once the generator ended (or the server closed the run)."""
        return self._terminal is not None or self._closed_by_server

    @property
    def closed(self) -> bool:
        """True once history holds the run's terminal event."""
        return self._terminal_recorded or self._closed_by_server

    def is_pending(self, seq: int) -> bool:
        """True if command ``seq`` was issued but history (as fed) does not hold it yet."""
        return seq in self._new

    @property
    def has_pending_commands(self) -> bool:
        """True while commands this execution issued are not yet in the history it was fed."""
        return bool(self._new)

    @property
    def pending_commands(self) -> tuple[PrimitiveCommand, ...]:
        return tuple(self._new[s] for s in sorted(self._new))

    def info(self) -> WorkflowInfo:
        started = self._require_started()
        return WorkflowInfo(
            workflow_id=started.workflow_id,
            run_id=started.run_id,
            workflow_type=started.workflow_type,
            namespace=started.namespace,
            task_queue=started.task_queue,
            start_time=started.at,
            attempt=started.attempt,
            continued_from=started.continued_from,
            first_run_id=started.first_run_id or started.run_id,
            parent=started.parent,
            # as of the event the code is reacting to, not the last one fed: a replay feeds
            # further ahead before it delivers a result, and must see the same length
            history_length=self.context.event_id or self.last_event_id,
            history_size=self._size_upto(self.context.event_id or self.last_event_id),
            is_replaying=self.context.is_replaying,
        )

    def _size_upto(self, event_id: int) -> int:
        """Encoded size of events 1..event_id (0 without a ``size_of``), computed on demand."""
        if self._size_of is None:
            return 0
        sizes = self._sizes
        while len(sizes) <= event_id and len(sizes) - 1 < len(self._fed):
            sizes.append(sizes[-1] + self._size_of(self._fed[len(sizes) - 1]))
        return sizes[min(event_id, len(sizes) - 1)]

    def query(self, name: str, args: tuple[object, ...]) -> object:
        """Call the handler ``df.workflow.set_query_handler(name, ...)`` registered, now."""
        queries = self.context.extras.get("queries")
        handler = queries.get(name) if isinstance(queries, dict) else None
        if handler is None:
            known = sorted(queries) if isinstance(queries, dict) else []
            raise errors.QueryFailedError(
                f"workflow {self.definition.name!r} has no query handler {name!r} (it has "
                f"{known or 'none'}); register one with df.workflow.set_query_handler"
            )
        token = _current.set(self.context)
        replaying = self.context.is_replaying
        self.context.is_replaying = False
        try:
            return handler(*args)
        finally:
            self.context.is_replaying = replaying
            _current.reset(token)

    def feed(self, events: Iterable[ev.Event]) -> Activation:
        """Apply the next events of this run's history; return what is new to record."""
        batch = list(events)
        if self._size_of is not None:
            self._fed.extend(batch)
        for event in batch:
            if isinstance(event, ev.COMMAND_EVENTS):
                self._recorded[event.seq] = event
                self._horizon = max(self._horizon, event.based_on)
            elif isinstance(event, _TERMINAL_TYPES):
                self._horizon = max(self._horizon, cast(ev.WorkflowCompleted, event).based_on)
        for event in batch:
            expected = self.last_event_id + 1
            if event.event_id != expected:
                raise errors.WorkflowError(
                    f"history is not contiguous: expected event {expected}, got event "
                    f"{event.event_id} ({type(event).__name__}); reload the full history"
                )
            if self.closed:
                raise errors.WorkflowError(
                    f"history has event {event.event_id} ({type(event).__name__}) after the "
                    "run's terminal event"
                )
            self.last_event_id = event.event_id
            self._handle(event)
        self._deliver_upto(None)
        return self.activation()

    def activation(self) -> Activation:
        """The commands not yet recorded (and the outcome, if not yet recorded)."""
        cmds: list[Command] = [self._new[s] for s in sorted(self._new)]
        if self._terminal is not None and not self._terminal_recorded and not self.closed:
            cmds.append(self._terminal)
        return Activation(based_on=self.last_event_id, commands=tuple(cmds), finished=self.finished)

    # ------------------------------------------------------------------ helpers for df.workflow

    def patched(self, change_id: str) -> bool:
        """``df.workflow.patched``: True on new code paths, False when replaying old ones."""
        if change_id in self._patches:
            return self._patches[change_id]
        seq = self._next_seq
        rec = self._recorded.get(seq)
        if isinstance(rec, ev.MarkerRecorded) and rec.change_id == change_id:
            self._next_seq += 1
            self._trace.append((seq, f"patched {change_id!r}", self._step_location))
            result = True
        elif self.context.is_replaying or rec is not None:
            result = False
        else:
            self._issue(RecordMarker(seq, change_id), f"patched {change_id!r}")
            result = True
        self._patches[change_id] = result
        return result

    def deprecate_patch(self, change_id: str) -> None:
        """``df.workflow.deprecate_patch``: accept (skip) an old marker if history has one here."""
        seq = self._next_seq
        rec = self._recorded.get(seq)
        if isinstance(rec, ev.MarkerRecorded) and rec.change_id == change_id:
            self._next_seq += 1
            self._trace.append((seq, f"patched {change_id!r}", self._step_location))
        self._patches[change_id] = True

    # ------------------------------------------------------------------ event handling

    def _require_started(self) -> ev.WorkflowStarted:
        if self.started is None:
            raise errors.WorkflowError("history does not start with WorkflowStarted")
        return self.started

    def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.WorkflowStarted):
            if self.started is not None:
                raise errors.WorkflowError("history has a second WorkflowStarted event")
            self.started = event
            self._start(event)
            return
        if self.started is None:
            raise errors.WorkflowError(
                f"history starts with {type(event).__name__}, not WorkflowStarted"
            )
        if isinstance(event, ev.COMMAND_EVENTS):
            self._deliver_upto(event.based_on)
            self._check_recorded(event)
        elif isinstance(event, _TERMINAL_TYPES):
            based_on = cast(ev.WorkflowCompleted, event).based_on
            self._deliver_upto(based_on)
            self._check_terminal(event)
        elif isinstance(event, ev.WorkflowTimedOut | ev.WorkflowTerminated):
            self._closed_by_server = True
            self._queue.clear()
            self._discard_generator()
        elif isinstance(event, ev.RESULT_EVENTS):
            self._queue.append(event)
        # ActivityStarted, ActivityRetryScheduled, ChildWorkflowStarted and WorkflowTaskFailed
        # inform the server and the UI; the workflow code does not see them.

    def _check_recorded(self, event: ev.Event) -> None:
        seq = cast(ev.ActivityScheduled, event).seq
        based_on = cast(ev.ActivityScheduled, event).based_on
        if seq >= self._next_seq:
            where = self._waiting_at()
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} as command #{seq} at event "
                f"{event.event_id} (decided after event {based_on}), but the current code had "
                f"issued only {self._next_seq - 1} command(s) by then; it is {where}",
                yielded=None if self._terminal is None else describe_command(self._terminal),
            )
        pending = self._new.pop(seq, None)
        if pending is not None and not _matches(event, pending):
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} as command #{seq} at event "
                f"{event.event_id}, but the code yields {describe_command(pending)}",
                yielded=describe_command(pending),
            )

    def _check_terminal(self, event: ev.Event) -> None:
        self._terminal_recorded = True
        if self._terminal is None:
            where = self._waiting_at()
            extra = self._new[min(self._new)] if self._new else None
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} at event {event.event_id}, but the "
                f"current code has not finished by then; it is {where}",
                yielded=None if extra is None else describe_command(extra),
            )
        if _TERMINAL_KIND[type(event)] is not type(self._terminal):
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} at event {event.event_id}, but the "
                f"current code ends with {describe_command(self._terminal)}",
                yielded=describe_command(self._terminal),
            )
        if self._new:
            first = min(self._new)
            raise self._divergence(
                event,
                f"history recorded the end of the run at event {event.event_id}, but the "
                f"current code also yields {describe_command(self._new[first])} "
                f"(command #{first})",
                yielded=describe_command(self._new[first]),
            )

    def _waiting_at(self) -> str:
        if self.finished:
            return "already finished"
        return f"waiting at {self._step_location or 'its first yield'}"

    def _divergence(
        self, event: ev.Event, what: str, *, yielded: str | None
    ) -> errors.NonDeterminismError:
        started = self._require_started()
        seq = getattr(event, "seq", None)
        table = self._side_by_side(seq if isinstance(seq, int) else self._next_seq)
        message = (
            f"workflow {started.workflow_type!r} (id {started.workflow_id!r}, run "
            f"{started.run_id}) is not deterministic: {what}"
            f"{' (yield at ' + self._step_location + ')' if self._step_location else ''}. "
            "The code changed while this run was in flight: guard the change with "
            "`if df.workflow.patched('change-id'):` so old runs replay the old path, or let "
            f"old runs finish before deploying.\n{table}"
        )
        return errors.NonDeterminismError(
            message,
            event_id=event.event_id,
            seq=seq if isinstance(seq, int) else None,
            recorded=describe_event(event),
            yielded=yielded,
            location=self._step_location or None,
        )

    def _side_by_side(self, around: int) -> str:
        recorded = {s: describe_event(e) for s, e in self._recorded.items()}
        yielded = {
            s: f"{d if isinstance(d, str) else describe_command(d)} @ {loc}"
            for s, d, loc in self._trace
        }
        lo = max(1, around - 4)
        hi = around + 2
        lines = [f"  {'#':>4}  {'history recorded':<48}  code yields"]
        for s in range(lo, hi + 1):
            if s not in recorded and s not in yielded:
                continue
            mark = "=>" if s == around else "  "
            lines.append(f"{mark}{s:>4}  {recorded.get(s, '-'):<48}  {yielded.get(s, '-')}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ delivering results

    def _deliver_upto(self, limit: int | None) -> None:
        queue = self._queue
        while queue and (limit is None or queue[0].event_id <= limit):
            self._deliver(queue.popleft())

    def _deliver(self, event: ev.Event) -> None:
        if self.finished:
            terminal = self._terminal
            if (
                isinstance(event, ev.SignalReceived)
                and isinstance(terminal, ContinueAsNewWorkflow)
                and not self._terminal_recorded
            ):
                # A signal after the code decided to continue as new (later in the same feed,
                # or fed later: a worker feeds history as it comes): the decision, based on
                # this event too, hands it to the next run.
                self._terminal = evolve(
                    terminal, signals=(*terminal.signals, PendingSignal(event.name, event.args))
                )
            return
        if isinstance(event, ev.SignalReceived):
            waiters = self._signal_waiters.get(event.name)
            if waiters:
                leaf = waiters.popleft()
                self._resolve(leaf, _Outcome(value=self._signal_value(event.args, leaf)), event)
            else:
                self._signals.setdefault(event.name, deque()).append((event.event_id, event.args))
            return
        if isinstance(event, ev.CancelRequested):
            if self._cancel_delivered or self._root is None:
                return
            self._cancel_delivered = True
            root = self._root
            self._root = None
            self._abandon(root)
            message = "workflow cancellation requested"
            if event.reason:
                message += f": {event.reason}"
            self._step(None, errors.CancelledError(message), event)
            return
        seq = cast(ev.ActivityCompleted, event).seq
        if seq >= self._next_seq:
            raise self._divergence(
                event,
                f"history has {type(event).__name__} for command #{seq} at event "
                f"{event.event_id}, but the current code has issued only {self._next_seq - 1} "
                "command(s)",
                yielded=None,
            )
        pending = self._leaves.get(seq)
        if pending is None:
            return  # the code stopped waiting for it (any_of winner elsewhere, fail-fast)
        self._resolve(pending, self._outcome_of(event, pending), event)

    def _signal_value(self, args: tuple[JsonValue, ...], leaf: _Leaf) -> object:
        if not args:
            return None
        if len(args) == 1:
            return self.payloads.from_payload(
                args[0], leaf.result_type, f"the argument of signal {leaf.name!r}"
            )
        return tuple(self.payloads.from_payload(a) for a in args)

    def _outcome_of(self, event: ev.Event, leaf: _Leaf) -> _Outcome:
        if isinstance(event, ev.ActivityCompleted | ev.ChildWorkflowCompleted):
            what = "activity" if leaf.kind == "activity" else "child workflow"
            try:
                return _Outcome(
                    value=self.payloads.from_payload(
                        event.result, leaf.result_type, f"the result of {what} {leaf.name!r}"
                    )
                )
            except Exception as exc:
                return _Outcome(error=exc)
        if isinstance(event, ev.TimerFired):
            return _Outcome(value=None)
        if isinstance(event, ev.ActivityFailed | ev.ActivityTimedOut):
            err = errors.ActivityError(
                f"activity {leaf.name!r} (#{leaf.seq}) failed after {event.attempt} attempt(s): "
                f"{event.failure.describe()}",
                activity_name=leaf.name,
                activity_id=leaf.seq,
                attempt=event.attempt,
                retry_state=event.retry_state,
            )
            err.__cause__ = exception_from_failure(event.failure)
            return _Outcome(error=err)
        if isinstance(event, ev.ChildWorkflowFailed):
            child = errors.ChildWorkflowError(
                f"child workflow {leaf.name!r} (#{leaf.seq}) did not complete: "
                f"{event.failure.describe()}",
                workflow_type=leaf.name,
            )
            child.__cause__ = exception_from_failure(event.failure)
            return _Outcome(error=child)
        if isinstance(event, ev.SignalWaitTimedOut):
            waiters = self._signal_waiters.get(leaf.name)
            if waiters and leaf in waiters:
                waiters.remove(leaf)
            return _Outcome(
                error=errors.TimeoutError(
                    f"signal {leaf.name!r} was not received in time", timeout_type="signal"
                )
            )
        raise errors.WorkflowError(f"cannot deliver {type(event).__name__}")  # pragma: no cover

    def _resolve(self, node: _Node, outcome: _Outcome, trigger: ev.Event) -> None:
        node.done = True
        node.value = outcome.value
        node.error = outcome.error
        if isinstance(node, _Leaf):
            self._leaves.pop(node.seq, None)
        parent = node.parent
        while parent is not None:
            if parent.done:
                return
            if node.error is not None:
                parent.done = True
                parent.error = node.error
            elif parent.is_any:
                parent.done = True
                parent.value = (node.index, node.value)
            else:
                parent.values[node.index] = node.value
                parent.remaining -= 1
                if parent.remaining == 0:
                    parent.done = True
                    parent.value = list(parent.values)
            if not parent.done:
                return
            for sibling in parent.children:
                if not sibling.done:
                    self._abandon(sibling)
            node = parent
            parent = node.parent
        if node is self._root:
            self._root = None
            self._step(node.value, node.error, trigger)

    def _abandon(self, node: _Node) -> None:
        node.done = True
        if isinstance(node, _Leaf):
            self._leaves.pop(node.seq, None)
            waiters = self._signal_waiters.get(node.name) if node.kind == "signal" else None
            if waiters and node in waiters:
                waiters.remove(node)
        elif isinstance(node, _Composite):
            for child in node.children:
                if not child.done:
                    self._abandon(child)

    # ------------------------------------------------------------------ running the generator

    def _start(self, started: ev.WorkflowStarted) -> None:
        self._set_time(started)
        token = _current.set(self.context)
        try:
            args = self.definition.structure_args(self.payloads, started.args)
            produced = self.definition.fn(*args)
        except Exception as exc:
            self._finish(FailWorkflow(self._failure(exc)))
            return
        finally:
            _current.reset(token)
        if inspect.isgenerator(produced):
            self._gen = cast(Generator[object, object, object], produced)
            self._step(None, None, started)
        elif inspect.iscoroutine(produced):
            produced.close()
            err = errors.WorkflowError(
                f"workflow {self.definition.name!r} is an async function; workflows are "
                "generator functions: write `result = yield df.activity(...)`"
            )
            self._finish(FailWorkflow(self._failure(err)))
        else:
            self._complete(produced)

    def _set_time(self, event: ev.Event) -> None:
        self.context.now = event.at
        self.context.event_id = event.event_id
        self.context.is_replaying = event.event_id <= self._horizon

    def _step(self, value: object, error: BaseException | None, trigger: ev.Event) -> None:
        gen = self._gen
        if gen is None or self.finished:
            return
        self._set_time(trigger)
        while True:
            token = _current.set(self.context)
            try:
                yielded = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                self._complete(stop.value)
                return
            except errors.CancelledError as exc:
                if self._cancel_delivered:
                    self._finish(CancelWorkflow(str(exc) or "workflow cancelled"))
                else:
                    self._finish(FailWorkflow(self._failure(exc)))
                return
            except errors.NonDeterminismError:
                raise
            except Exception as exc:
                self._finish(FailWorkflow(self._failure(exc)))
                return
            finally:
                _current.reset(token)
            self._step_location = _location(gen)
            if isinstance(yielded, ContinueAsNew):
                # signals the code never took: the buffered ones here; those not delivered yet
                # are added as they are delivered (``_deliver``), up to the decision's event
                unconsumed = sorted(
                    (eid, name, args) for name, q in self._signals.items() for eid, args in q
                )
                self._finish(
                    ContinueAsNewWorkflow(
                        args=yielded.args,
                        workflow_type=yielded.workflow_type,
                        task_queue=yielded.task_queue,
                        signals=tuple(PendingSignal(n, a) for _, n, a in unconsumed),
                    )
                )
                return
            try:
                node = self._build(yielded)
            except errors.NonDeterminismError:
                raise
            except errors.DurableFutureError as exc:
                value, error = None, exc
                continue
            if node.done:
                value, error = node.value, node.error
                continue
            self._root = node
            return

    def _complete(self, value: object) -> None:
        try:
            payload = self.payloads.to_payload(
                value, f"the result of workflow {self.definition.name!r}"
            )
        except Exception as exc:
            self._finish(FailWorkflow(self._failure(exc)))
            return
        self._finish(CompleteWorkflow(payload))

    def _finish(self, terminal: TerminalCommand) -> None:
        self._terminal = terminal
        self._gen = None
        self._root = None
        for leaf in list(self._leaves.values()):
            self._abandon(leaf)

    def _discard_generator(self) -> None:
        # Unwind the code now rather than when the garbage collector closes it: a `finally`
        # that yields (cleanup on cancellation) would otherwise print "generator ignored
        # GeneratorExit" whenever a worker drops a suspended run. Each close() runs the code
        # to its next yield; nothing it does there can be recorded any more.
        gen, self._gen, self._root = self._gen, None, None
        for _ in range(64):
            if gen is None or getattr(gen, "gi_frame", None) is None:
                return
            with contextlib.suppress(Exception):
                gen.close()

    def __del__(self) -> None:
        self._discard_generator()

    def _failure(self, exc: BaseException) -> Failure:
        def enc(details: tuple[object, ...]) -> tuple[JsonValue, ...]:
            return tuple(self.payloads.to_payload(d, "error detail") for d in details)

        return failure_from_exception(exc, enc)

    # ------------------------------------------------------------------ yields -> commands

    def _build(self, item: object) -> _Node:
        if isinstance(item, ActivityCall):
            options = self._resolved.get(item.options)
            if options is None:
                started = self._require_started()
                options = (item.options or ActivityOptions()).resolved(started.task_queue)
                self._resolved[item.options] = options
            seq = self._next_seq
            cmd = ScheduleActivity(seq, item.name, item.args, options)
            return self._leaf(cmd, "activity", item.result_type, item.name)
        if isinstance(item, Sleep):
            timer = StartTimer(self._next_seq, item.duration, self.context.now)
            return self._leaf(timer, "timer", None)
        if isinstance(item, WaitSignal):
            return self._wait_signal(item)
        if isinstance(item, SideEffect):
            return self._side_effect(item)
        if isinstance(item, ChildWorkflowCall):
            started = self._require_started()
            seq = self._next_seq
            child_id = item.workflow_id or f"{started.workflow_id}-{started.run_id[:8]}-{seq}"
            child = StartChildWorkflow(
                seq,
                item.workflow_type,
                child_id,
                item.args,
                item.task_queue or started.task_queue,
                item.execution_timeout,
                item.parent_close_policy,
            )
            return self._leaf(child, "child", item.result_type, item.workflow_type)
        if isinstance(item, AllOf | AnyOf):
            if isinstance(item, AnyOf) and not item.items:
                raise errors.WorkflowError(
                    f"df.any_of() needs at least one command (at {self._step_location})"
                )
            children = [self._build(child) for child in item.items]
            node = _Composite(children, isinstance(item, AnyOf))
            self._settle_composite(node)
            return node
        raise errors.WorkflowError(self._bad_yield(item))

    def _bad_yield(self, item: object) -> str:
        name = self.definition.name
        hint = f"yield {_VALID_YIELDS}"
        if inspect.iscoroutine(item):
            item.close()
            hint = (
                "a coroutine cannot be yielded: run async code as an activity with "
                "df.activity(fn, ...)"
            )
        elif callable(item):
            hint = f"to run it, yield df.activity({getattr(item, '__name__', 'fn')}, ...)"
        elif (
            isinstance(item, list | tuple)
            and item
            and all(isinstance(i, YIELDABLE_TYPES) for i in item)
        ):
            hint = "to run several commands at once, yield df.all_of(...) (or df.any_of(...))"
        return (
            f"workflow {name!r} yielded {_short(item)} ({type(item).__name__}) at "
            f"{self._step_location}, which is not a DurableFuture command; {hint}"
        )

    def _settle_composite(self, node: _Composite) -> None:
        if not node.children:
            node.done = True
            node.value = []
            return
        for child in node.children:
            if child.done:
                if child.error is not None:
                    node.done, node.error = True, child.error
                elif node.is_any:
                    node.done, node.value = True, (child.index, child.value)
                else:
                    node.values[child.index] = child.value
                    node.remaining -= 1
                if node.done:
                    break
        if not node.done and not node.is_any and node.remaining == 0:
            node.done, node.value = True, list(node.values)
        if node.done:
            for child in node.children:
                if not child.done:
                    self._abandon(child)

    def _issue(self, cmd: PrimitiveCommand, description: str | None = None) -> None:
        seq = cmd.seq
        self._next_seq = seq + 1
        self._trace.append((seq, cmd if description is None else description, self._step_location))
        recorded = self._recorded.get(seq)
        if recorded is not None:
            if not _matches(recorded, cmd):
                description = description or describe_command(cmd)
                raise self._divergence(
                    recorded,
                    f"history recorded {describe_event(recorded)} as command #{seq} at event "
                    f"{recorded.event_id}, but the code now yields {description}",
                    yielded=description,
                )
        else:
            self._new[seq] = cmd

    def _leaf(self, cmd: PrimitiveCommand, kind: str, result_type: object, name: str = "") -> _Leaf:
        self._issue(cmd)
        leaf = _Leaf(cmd.seq, kind, result_type, name)
        self._leaves[cmd.seq] = leaf
        return leaf

    def _wait_signal(self, item: WaitSignal) -> _Leaf:
        cmd = StartSignalWait(self._next_seq, item.name, item.timeout, self.context.now)
        leaf = self._leaf(cmd, "signal", item.result_type, item.name)
        buffered = self._signals.get(item.name)
        if buffered:
            _, args = buffered.popleft()
            leaf.done = True
            leaf.value = self._signal_value(args, leaf)
            self._leaves.pop(leaf.seq, None)
        else:
            self._signal_waiters.setdefault(item.name, deque()).append(leaf)
        return leaf

    def _side_effect(self, item: SideEffect) -> _Leaf:
        seq = self._next_seq
        recorded = self._recorded.get(seq)
        leaf = _Leaf(seq, "side_effect", item.result_type)
        leaf.done = True
        if isinstance(recorded, ev.SideEffectRecorded):
            self._issue(RecordSideEffect(seq, recorded.value, recorded.failure), "side_effect")
            if recorded.failure is not None:
                leaf.error = exception_from_failure(recorded.failure)
            else:
                try:
                    leaf.value = self.payloads.from_payload(
                        recorded.value, item.result_type, "the side_effect result"
                    )
                except Exception as exc:
                    leaf.error = exc
            return leaf
        if recorded is not None:
            # let _issue raise the divergence with both sides named
            self._issue(RecordSideEffect(seq), "side_effect")
        try:
            value = item.fn()
            payload = self.payloads.to_payload(value, "side_effect result")
        except Exception as exc:
            failure = self._failure(exc)
            self._issue(RecordSideEffect(seq, None, failure), "side_effect")
            # the code sees what a replay will see: the error rebuilt from its record
            leaf.error = exception_from_failure(failure)
            return leaf
        self._issue(RecordSideEffect(seq, payload), "side_effect")
        # ... and the value as decoded from its payload, not the object fn returned
        try:
            leaf.value = self.payloads.from_payload(
                payload, item.result_type, "the side_effect result"
            )
        except Exception as exc:
            leaf.error = exc
        return leaf
