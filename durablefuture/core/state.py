"""A run's state as the server sees it: the fold of its history events.

``RunState.apply`` is the only way the state changes, so loading a history and replaying the
server's own decisions always agree. The state is a cache of the history, never a second truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any, TypeVar

from attrs import define, field

from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import WorkflowError
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes, apply_upsert
from durablefuture.core.types import JsonValue

__all__ = ["ActivityState", "ChildState", "RunState", "ending_summary", "status_of"]

K = TypeVar("K")
V = TypeVar("V")

_EMPTY: Mapping[Any, Any] = MappingProxyType({})
"""What a run's rarely used maps (children, signal waits, updates) are until their first
entry: one read-only empty mapping shared by every run (an empty dict is 64 bytes a run, and
tens of thousands of runs may be cached); ``_own`` swaps in a dict of the run's own."""


def _own(m: Mapping[K, V]) -> dict[K, V]:
    """``m`` if it is a dict of the run's own, else (the shared ``_EMPTY``) a new empty one."""
    if type(m) is dict:
        return m
    if m:
        raise WorkflowError("a run's state map is neither its own dict nor empty")
    return {}


@define
class ActivityState:
    seq: int
    name: str
    args: tuple[JsonValue, ...]
    options: ActivityOptions
    scheduled_at: float
    attempt: int = 1
    attempt_scheduled_at: float = 0.0
    started_at: float | None = None
    worker: str = ""
    """Identity of the worker that reported the current attempt as started."""
    closed: bool = False
    last_failure: Failure | None = None
    heartbeat_details: tuple[JsonValue, ...] = ()
    retry_at: float | None = None
    cancel_requested: bool = False
    """The workflow cancelled it (``df.cancel``, or it lost a ``df.any_of``)."""
    eager: str = ""
    """Its first attempt was granted to a worker, with no stored task (``ActivityScheduled``)."""


@define
class ChildState:
    seq: int
    workflow_type: str
    workflow_id: str
    task_queue: str
    args: tuple[JsonValue, ...]
    execution_timeout: float | None
    parent_close_policy: ParentClosePolicy
    run_id: str | None = None
    closed: bool = False
    cancel_seq: int = 0
    """The command that cancelled it (``df.cancel``), if any."""
    held_signals: list[ev.ExternalWorkflowSignalled] = field(factory=list)
    """Signals the run sent it before it started: delivered once it has started."""


@define
class RunState:
    """Everything the orchestration core needs to decide, folded from one run's history."""

    started: ev.WorkflowStarted
    last_event_id: int = 0
    next_seq: int = 1
    last_command_event_id: int = 0
    last_deliverable_event_id: int = 0
    status: str = RunStatus.RUNNING
    terminal: ev.Event | None = None
    cancel_requested: bool = False
    activities: dict[int, ActivityState] = field(factory=dict)
    timers: dict[int, float] = field(factory=dict)  # seq -> fire_at, while not fired
    """Sleeps and condition-wait timeouts not fired yet, by seq (fire_at)."""
    signal_waits: Mapping[int, float] = _EMPTY  # seq -> deadline, while pending
    waiting_for_signals: Mapping[int, ev.SignalWaitStarted] = _EMPTY
    """Signal waits no signal has answered yet, as far as history shows (a wait the code gave
    up on, e.g. the losing branch of ``any_of``, is not in history and stays listed)."""
    unclaimed_signals: Mapping[str, int] = _EMPTY  # name -> signals no wait took yet
    children: Mapping[int, ChildState] = _EMPTY
    applied_inputs: dict[str, tuple[int, int]] = field(factory=dict)
    signal_requests: AbstractSet[str] = frozenset()
    signals: Sequence[ev.SignalReceived] = ()
    updates: Mapping[str, ev.UpdateAccepted | ev.UpdateCompleted] = _EMPTY
    """Accepted updates by id: their completion, or their acceptance while it is open."""
    last_wft_failure: ev.WorkflowTaskFailed | None = None
    search_attributes: SearchAttributes = field(factory=dict)

    @classmethod
    def from_history(cls, batches: list[tuple[str, list[ev.Event]]] | list[ev.Event]) -> RunState:
        """Fold a history given as ``(input_id, events)`` batches (or a flat event list)."""
        if not batches:
            raise WorkflowError("cannot build a run state from an empty history")
        pairs: list[tuple[str, list[ev.Event]]] = (
            batches if isinstance(batches[0], tuple) else [("", list(batches))]
        )
        first = pairs[0][1][0]
        if not isinstance(first, ev.WorkflowStarted):
            raise WorkflowError(f"history starts with {type(first).__name__}, not WorkflowStarted")
        state = cls(started=first)
        for input_id, events in pairs:
            state.apply(events, input_id)
        return state

    # ------------------------------------------------------------------ reading

    @property
    def run_id(self) -> str:
        return self.started.run_id

    @property
    def workflow_id(self) -> str:
        return self.started.workflow_id

    @property
    def is_open(self) -> bool:
        return self.status == RunStatus.RUNNING

    def open_activities(self) -> list[int]:
        return [s for s, a in self.activities.items() if not a.closed]

    def open_children(self) -> list[ChildState]:
        return [c for c in self.children.values() if not c.closed]

    def summary(self) -> RunSummary:
        result, failure, close_time, new_run_id = _ending(self.terminal)
        s = self.started
        return RunSummary(
            workflow_id=s.workflow_id,
            run_id=s.run_id,
            workflow_type=s.workflow_type,
            task_queue=s.task_queue,
            status=self.status,
            start_time=s.at,
            request_id=s.request_id,
            close_time=close_time,
            result=result,
            failure=failure,
            history_length=self.last_event_id,
            new_run_id=new_run_id,
            parent=s.parent,
            search_attributes=dict(self.search_attributes),
            memo=s.memo,
        )

    # ------------------------------------------------------------------ folding

    def apply(self, events: list[ev.Event] | tuple[ev.Event, ...], input_id: str = "") -> None:
        if not events:
            return
        for event in events:
            expected = self.last_event_id + 1
            if event.event_id != expected:
                raise WorkflowError(
                    f"run {self.run_id}: expected event {expected}, got {event.event_id} "
                    f"({type(event).__name__}); the history is not contiguous"
                )
            if self.terminal is not None:
                raise WorkflowError(
                    f"run {self.run_id}: event {event.event_id} ({type(event).__name__}) comes "
                    "after the run's terminal event"
                )
            self.last_event_id = event.event_id
            self._fold(event)
        if input_id:
            self.applied_inputs[input_id] = (events[0].event_id, events[-1].event_id)

    def _fold(self, e: ev.Event) -> None:
        if isinstance(e, ev.COMMAND_EVENTS):
            self.next_seq = e.seq + 1
            self.last_command_event_id = e.event_id
        if isinstance(e, ev.RESULT_EVENTS):
            self.last_deliverable_event_id = e.event_id
        fold = _FOLDS.get(type(e))
        if fold is not None:
            fold(self, e)
        if isinstance(e, ev.TERMINAL_EVENTS):
            self.terminal = e
            self.status = status_of(e)
            self.last_wft_failure = None
        elif isinstance(e, ev.COMMAND_EVENTS):
            self.last_wft_failure = None

    # one handler per event type that changes the state (others only advance the counters)

    def _on_started(self, e: ev.WorkflowStarted) -> None:
        if e.event_id != 1:
            raise WorkflowError(f"run {self.run_id}: WorkflowStarted must be event 1")
        self.search_attributes = dict(e.search_attributes)

    def _on_upsert(self, e: ev.SearchAttributesUpserted) -> None:
        self.search_attributes = apply_upsert(self.search_attributes, e.search_attributes)

    def _on_activity_scheduled(self, e: ev.ActivityScheduled) -> None:
        self.activities[e.seq] = ActivityState(
            seq=e.seq,
            name=e.name,
            args=e.args,
            options=e.options,
            scheduled_at=e.at,
            attempt_scheduled_at=e.at,
            eager=e.eager,
        )

    def _on_activity_started(self, e: ev.ActivityStarted) -> None:
        act = self.activities[e.seq]
        act.started_at = e.at
        act.worker = e.worker

    def _on_retry_scheduled(self, e: ev.ActivityRetryScheduled) -> None:
        act = self.activities[e.seq]
        act.attempt = e.attempt + 1
        act.attempt_scheduled_at = e.retry_at
        act.retry_at = e.retry_at
        act.started_at = None
        act.worker = ""
        act.last_failure = e.failure
        act.heartbeat_details = e.heartbeat_details

    def _on_activity_completed(self, e: ev.ActivityCompleted) -> None:
        self.activities[e.seq].closed = True

    def _on_activity_failed(self, e: ev.ActivityFailed | ev.ActivityTimedOut) -> None:
        act = self.activities[e.seq]
        act.closed = True
        act.last_failure = e.failure

    def _on_timer_started(self, e: ev.TimerStarted) -> None:
        self.timers[e.seq] = e.fire_at

    def _on_timer_fired(self, e: ev.TimerFired) -> None:
        self.timers.pop(e.seq, None)

    def _on_condition_wait_started(self, e: ev.ConditionWaitStarted) -> None:
        if e.deadline is not None:  # its timeout is a timer: TimerFired(seq) ends the wait
            self.timers[e.seq] = e.deadline

    def _on_cancellation_requested(self, e: ev.CancellationRequested) -> None:
        self.timers.pop(e.target, None)  # a cancelled timer never fires
        act = self.activities.get(e.target)
        if act is not None:
            act.cancel_requested = True
        child = self.children.get(e.target)
        if child is not None:
            child.cancel_seq = child.cancel_seq or e.seq

    def _on_external_signal(self, e: ev.ExternalWorkflowSignalled) -> None:
        # a signal to a child that has not started yet waits for its start (its run_id)
        for child in self.children.values():
            if child.workflow_id == e.workflow_id and not child.closed and child.run_id is None:
                child.held_signals.append(e)

    def _on_signal_wait_started(self, e: ev.SignalWaitStarted) -> None:
        if e.deadline is not None:
            self.signal_waits = waits = _own(self.signal_waits)
            waits[e.seq] = e.deadline
        self._wait_for_signal(e)

    def _on_signal_wait_timed_out(self, e: ev.SignalWaitTimedOut) -> None:
        if e.seq in self.signal_waits:
            self.signal_waits = waits = _own(self.signal_waits)
            del waits[e.seq]
        if e.seq in self.waiting_for_signals:
            self.waiting_for_signals = waiting = _own(self.waiting_for_signals)
            del waiting[e.seq]

    def _on_signal(self, e: ev.SignalReceived) -> None:
        if not isinstance(self.signals, list):
            self.signals = []
        self.signals.append(e)
        if e.request_id:
            if not isinstance(self.signal_requests, set):
                self.signal_requests = set()
            self.signal_requests.add(e.request_id)
        self._signal_arrived(e.name)

    def _on_update_accepted(self, e: ev.UpdateAccepted) -> None:
        self.updates = updates = _own(self.updates)
        updates.setdefault(e.update_id, e)

    def _on_update_completed(self, e: ev.UpdateCompleted) -> None:
        self.updates = updates = _own(self.updates)
        updates[e.update_id] = e

    def _on_child_scheduled(self, e: ev.ChildWorkflowScheduled) -> None:
        self.children = children = _own(self.children)
        children[e.seq] = ChildState(
            seq=e.seq,
            workflow_type=e.workflow_type,
            workflow_id=e.workflow_id,
            task_queue=e.task_queue,
            args=e.args,
            execution_timeout=e.execution_timeout,
            parent_close_policy=e.parent_close_policy,
        )

    def _on_child_started(self, e: ev.ChildWorkflowStarted) -> None:
        self.children[e.seq].run_id = e.run_id

    def _on_child_closed(self, e: ev.ChildWorkflowCompleted | ev.ChildWorkflowFailed) -> None:
        self.children[e.seq].closed = True

    def _on_cancel_requested(self, _e: ev.CancelRequested) -> None:
        self.cancel_requested = True

    def _on_task_failed(self, e: ev.WorkflowTaskFailed) -> None:
        self.last_wft_failure = e

    def _wait_for_signal(self, e: ev.SignalWaitStarted) -> None:
        # the replayer hands a wait the oldest signal of its name no earlier wait took
        if self.unclaimed_signals.get(e.name, 0) > 0:
            self.unclaimed_signals = unclaimed = _own(self.unclaimed_signals)
            unclaimed[e.name] -= 1
        else:
            self.waiting_for_signals = waiting = _own(self.waiting_for_signals)
            waiting[e.seq] = e

    def _signal_arrived(self, name: str) -> None:
        # ... and a new signal to the oldest wait for its name
        waits = [s for s, w in self.waiting_for_signals.items() if w.name == name]
        if waits:
            oldest = min(waits)
            self.waiting_for_signals = waiting = _own(self.waiting_for_signals)
            del waiting[oldest]
        else:
            self.unclaimed_signals = unclaimed = _own(self.unclaimed_signals)
            unclaimed[name] = unclaimed.get(name, 0) + 1


_FOLDS: dict[type, Callable[[RunState, Any], None]] = {
    ev.WorkflowStarted: RunState._on_started,
    ev.ActivityScheduled: RunState._on_activity_scheduled,
    ev.ActivityStarted: RunState._on_activity_started,
    ev.ActivityRetryScheduled: RunState._on_retry_scheduled,
    ev.ActivityCompleted: RunState._on_activity_completed,
    ev.ActivityFailed: RunState._on_activity_failed,
    ev.ActivityTimedOut: RunState._on_activity_failed,
    ev.TimerStarted: RunState._on_timer_started,
    ev.TimerFired: RunState._on_timer_fired,
    ev.SignalWaitStarted: RunState._on_signal_wait_started,
    ev.ConditionWaitStarted: RunState._on_condition_wait_started,
    ev.CancellationRequested: RunState._on_cancellation_requested,
    ev.ExternalWorkflowSignalled: RunState._on_external_signal,
    ev.SignalWaitTimedOut: RunState._on_signal_wait_timed_out,
    ev.SignalReceived: RunState._on_signal,
    ev.UpdateAccepted: RunState._on_update_accepted,
    ev.UpdateCompleted: RunState._on_update_completed,
    ev.ChildWorkflowScheduled: RunState._on_child_scheduled,
    ev.ChildWorkflowStarted: RunState._on_child_started,
    ev.ChildWorkflowCompleted: RunState._on_child_closed,
    ev.ChildWorkflowFailed: RunState._on_child_closed,
    ev.CancelRequested: RunState._on_cancel_requested,
    ev.WorkflowTaskFailed: RunState._on_task_failed,
    ev.SearchAttributesUpserted: RunState._on_upsert,
}

_STATUS: dict[type, str] = {
    ev.WorkflowCompleted: RunStatus.COMPLETED,
    ev.WorkflowFailed: RunStatus.FAILED,
    ev.WorkflowCancelled: RunStatus.CANCELLED,
    ev.WorkflowContinuedAsNew: RunStatus.CONTINUED_AS_NEW,
    ev.WorkflowTimedOut: RunStatus.TIMED_OUT,
    ev.WorkflowTerminated: RunStatus.TERMINATED,
}


def status_of(terminal: ev.Event) -> str:
    """The run status a terminal event closes the run with."""
    return _STATUS[type(terminal)]


def _ending(
    t: ev.Event | None,
) -> tuple[JsonValue, Failure | None, float | None, str | None]:
    """What a terminal event (None: the run is open) says of the run's end: its result,
    failure, close time and next run, as a status entry carries them."""
    result: JsonValue = None
    failure: Failure | None = None
    close_time: float | None = None
    new_run_id: str | None = None
    if t is not None:
        close_time = t.at
        if isinstance(t, ev.WorkflowCompleted):
            result = t.result
        elif isinstance(t, ev.WorkflowFailed):
            failure = t.failure
        elif isinstance(t, ev.WorkflowContinuedAsNew):
            new_run_id = t.new_run_id
        elif isinstance(t, ev.WorkflowTerminated):
            failure = Failure(
                message=t.reason or "terminated",
                type="TerminatedError",
                kind=FailureKind.TERMINATED,
            )
    return result, failure, close_time, new_run_id


def ending_summary(workflow_id: str, run_id: str, terminal: ev.Event) -> RunSummary:
    """How a run ended, read from its terminal event alone: the status, result, failure,
    close time and next run of its status entry (what a result needs), without the fields
    only the whole history gives (type, start, search attributes: left empty)."""
    result, failure, close_time, new_run_id = _ending(terminal)
    return RunSummary(
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type="",
        task_queue="",
        status=status_of(terminal),
        start_time=0.0,
        close_time=close_time,
        result=result,
        failure=failure,
        history_length=terminal.event_id,
        new_run_id=new_run_id,
    )
