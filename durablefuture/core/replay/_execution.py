"""The replay: :class:`WorkflowExecution` feeds a run's history through its workflow code.

How it works is in the package docstring (``durablefuture/core/replay/__init__.py``). This
module holds the public surface and the walk over history events (``feed`` -> ``_handle``),
including the determinism checks of recorded commands and of the run's end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from attrs import frozen

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    Command,
    LocalActivityCall,
    PrimitiveCommand,
    RecordLocalActivity,
    RecordMarker,
    TerminalCommand,
    UpsertSearchAttributes,
)
from durablefuture.core.failure import Failure
from durablefuture.core.replay._context import (
    Activation,
    SourceFrame,
    WaitingFor,
    WorkflowInfo,
    _current,
    _frames,
)
from durablefuture.core.replay._running import _Running
from durablefuture.core.search_attributes import SearchAttributes, apply_upsert
from durablefuture.core.types import JsonValue
from durablefuture.core.vocabulary import (
    DECIDED_TERMINAL_EVENTS,
    command_type_of,
    describe_command,
    describe_event,
    matches,
)


@frozen
class _Moment:
    """When a local activity's outcome reaches the code: after event ``event_id``, at ``at``."""

    event_id: int
    at: float


class WorkflowExecution(_Running):
    """One workflow run's generator, fed with its history (see the package docstring)."""

    history_warning: tuple[int, int] = (10_240, 10 * 1024 * 1024)
    """(events, bytes) from which ``info().continue_as_new_suggested`` is true: the
    namespace's history warning (workers set it from the namespace's settings)."""

    # ------------------------------------------------------------------ public

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
        # as of the event the code is reacting to, not the last one fed: a replay feeds
        # further ahead before it delivers a result, and must see the same length
        length = self.context.event_id or self.last_event_id
        size = self._size_upto(length)
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
            history_length=length,
            history_size=size,
            is_replaying=self.context.is_replaying,
            continue_as_new_suggested=(
                length >= self.history_warning[0] or size >= self.history_warning[1]
            ),
        )

    def _size_upto(self, event_id: int) -> int:
        """Encoded size of events 1..event_id (0 without a ``size_of``), computed on demand."""
        if self._size_of is None:
            return 0
        sizes = self._sizes
        while len(sizes) <= event_id and len(sizes) - 1 < len(self._fed):
            sizes.append(sizes[-1] + self._size_of(self._fed[len(sizes) - 1]))
        return sizes[min(event_id, len(sizes) - 1)]

    @property
    def outcome(self) -> TerminalCommand | None:
        """How the code ended (returned, raised, was cancelled, continued as new), recorded in
        history yet or not; None while it runs and when the server closed the run."""
        return self._terminal

    @property
    def suspended_at(self) -> str | None:
        """``file:line`` of the yield the code is paused at; None before it starts and once it
        has finished."""
        if self._gen is None or self.finished:
            return None
        return self._step_location or None

    def suspended_stack(self) -> tuple[SourceFrame, ...]:
        """The frames of the paused code: the workflow function first, the innermost yield
        (through ``yield from``) last; empty before it starts and once it has finished."""
        if self._gen is None or self.finished:
            return ()
        return _frames(self._gen)

    @property
    def waiting_for(self) -> tuple[WaitingFor, ...]:
        """The commands the paused code waits on (its yield's open activities, timers, signal
        waits and children), by seq."""
        leaves = sorted(self._leaves.items())
        return tuple(WaitingFor(seq, leaf.kind, leaf.name) for seq, leaf in leaves)

    @property
    def query_handlers(self) -> dict[str, Callable[..., object]]:
        """The handlers ``df.workflow.set_query_handler`` registered so far, by name (a copy)."""
        queries = self.context.extras.get("queries")
        return dict(queries) if isinstance(queries, dict) else {}

    def look_ahead(self, events: Iterable[ev.Event]) -> None:
        """Know the decisions recorded in ``events`` before they are fed.

        A replay that stops at event N (to show the run as it was then) still runs the code on
        to its next yield once the results up to N are delivered. Given the rest of the history
        first, that stretch takes what the run recorded, as the run did: a side effect's value
        (its function is not called), a patch marker's branch, the same "replaying" flag for
        the logger; the commands it yields are matched against history, not new. Feeding those
        events later checks them as usual.
        """
        self._note_recorded(list(events))

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
        self._note_recorded(batch)
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
            self._last_at = event.at
            self._handle(event)
        self._deliver_upto(None)
        return self.activation()

    def _note_recorded(self, batch: list[ev.Event]) -> None:
        for event in batch:
            if isinstance(event, ev.COMMAND_EVENTS):
                self._recorded[event.seq] = event
                self._horizon = max(self._horizon, event.based_on)
            elif isinstance(event, DECIDED_TERMINAL_EVENTS):
                self._horizon = max(self._horizon, cast(ev.WorkflowCompleted, event).based_on)

    def activation(self) -> Activation:
        """The commands not yet recorded (and the outcome, if not yet recorded)."""
        cmds: list[Command] = [self._new[s] for s in sorted(self._new)]
        if self._terminal is not None and not self._terminal_recorded and not self.closed:
            cmds.append(self._terminal)
        return Activation(based_on=self.last_event_id, commands=tuple(cmds), finished=self.finished)

    # ------------------------------------------------------------------ helpers for df.workflow

    def set_signal_handler(self, name: str, handler: Callable[..., object]) -> None:
        """``df.workflow.set_signal_handler``: call ``handler(*args)`` for every signal
        ``name`` no ``df.wait_signal`` takes, in history order; signals buffered before it
        was registered are handed to it now."""
        self._signal_handlers[name] = handler
        buffered = self._signals.pop(name, None)
        while buffered and not self.finished:
            _, args = buffered.popleft()
            self._call_signal_handler(name, args)

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

    def upsert_search_attributes(self, attributes: SearchAttributes) -> SearchAttributes:
        """``df.workflow.upsert_search_attributes``: record the change (checked against history
        on replay) and return the run's attributes with it applied."""
        cmd = UpsertSearchAttributes(self._next_seq, attributes)
        self._issue(cmd, f"upsert_search_attributes {sorted(attributes)}")
        current = self.started.search_attributes if self.started is not None else {}
        upserted = self._extras_upserts()
        upserted.append(attributes)
        for a in upserted:
            current = apply_upsert(current, a)
        return current

    def _extras_upserts(self) -> list[SearchAttributes]:
        ups = self.context.extras.setdefault("search_attribute_upserts", [])
        assert isinstance(ups, list)
        return ups

    def deprecate_patch(self, change_id: str) -> None:
        """``df.workflow.deprecate_patch``: accept (skip) an old marker if history has one here."""
        seq = self._next_seq
        rec = self._recorded.get(seq)
        if isinstance(rec, ev.MarkerRecorded) and rec.change_id == change_id:
            self._next_seq += 1
            self._trace.append((seq, f"patched {change_id!r}", self._step_location))
        self._patches[change_id] = True

    # ------------------------------------------------------------------ event handling

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
        elif isinstance(event, DECIDED_TERMINAL_EVENTS):
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
        if isinstance(event, ev.LocalActivityRecorded) and seq in self._local:
            self._local_recorded(event)
            return
        pending = self._new.pop(seq, None)
        if pending is not None and not matches(event, pending):
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} as command #{seq} at event "
                f"{event.event_id}, but the code yields {describe_command(pending)}",
                yielded=describe_command(pending),
            )

    # ------------------------------------------------------------------ local activities

    @property
    def pending_local_activities(self) -> tuple[tuple[int, LocalActivityCall], ...]:
        """The local activities the code issued that have not run yet, by seq (the worker
        runs each, then calls :meth:`resolve_local`)."""
        return tuple(sorted(self._local.items()))

    def resolve_local(
        self, seq: int, result: JsonValue, failure: Failure | None, attempts: int
    ) -> Activation:
        """Hand the outcome of local activity ``seq`` to the code (at the time of the last
        event fed) and add its record to the commands; returns the new activation."""
        item = self._local.pop(seq)
        cmd = RecordLocalActivity(
            seq, item.name, item.args, result, failure, attempts, self._last_at
        )
        self._new[seq] = cmd
        self._apply_local(seq, cmd, self.last_event_id)
        return self.activation()

    def _local_recorded(self, event: ev.LocalActivityRecorded) -> None:
        item = self._local.pop(event.seq)
        cmd = RecordLocalActivity(event.seq, item.name, item.args)
        if not matches(event, cmd):
            raise self._divergence(
                event,
                f"history recorded {describe_event(event)} as command #{event.seq} at event "
                f"{event.event_id}, but the code yields {describe_command(cmd)}",
                yielded=describe_command(cmd),
            )
        self._apply_local(event.seq, event, event.based_on)

    def _apply_local(
        self, seq: int, rec: RecordLocalActivity | ev.LocalActivityRecorded, based_on: int
    ) -> None:
        leaf = self._leaves.get(seq)
        if leaf is None:
            return  # nobody waits for it any more (an any_of that another branch won)
        moment = cast(ev.Event, _Moment(based_on, rec.applied_at))
        self._resolve(leaf, self._local_outcome(leaf, rec), moment)

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
        if command_type_of(event) is not type(self._terminal):
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
