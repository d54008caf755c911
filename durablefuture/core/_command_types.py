"""The commands a workflow task sends back to the server (requests, in the imperative), each
with the ``seq`` that links it to its event. Part of :mod:`durablefuture.core.commands` (import
them from there); the yieldables the code writes are in that module.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "CancelWorkflow",
    "Command",
    "CompleteUpdate",
    "CompleteWorkflow",
    "ContinueAsNewWorkflow",
    "FailWorkflow",
    "PendingSignal",
    "PrimitiveCommand",
    "RecordLocalActivity",
    "RecordMarker",
    "RecordSideEffect",
    "RequestCancelExternalWorkflow",
    "RequestCancellation",
    "ScheduleActivity",
    "SignalExternalWorkflow",
    "StartChildWorkflow",
    "StartConditionWait",
    "StartSignalWait",
    "StartTimer",
    "TerminalCommand",
    "UpsertSearchAttributes",
]


@frozen
class ScheduleActivity:
    seq: int
    name: str
    args: tuple[JsonValue, ...] = field(converter=payloads)
    options: ActivityOptions


@frozen
class StartTimer:
    """Sleep ``duration`` seconds from workflow time ``start`` (``df.workflow.now()`` when the
    code yielded): the timer fires at ``start + duration``, like a durable alarm clock."""

    seq: int
    duration: float
    start: float | None = None


@frozen
class StartSignalWait:
    seq: int
    name: str
    timeout: float | None = None
    start: float | None = None


@frozen
class StartConditionWait:
    """Wait on a condition (``df.wait_condition``); with ``timeout`` a durable timer ends the
    wait at ``start + timeout``."""

    seq: int
    timeout: float | None = None
    start: float | None = None


@frozen
class RequestCancellation:
    """Cancel command ``target`` (an activity, timer or child workflow the code started)."""

    seq: int
    target: int


@frozen
class SignalExternalWorkflow:
    seq: int
    workflow_id: str
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)


@frozen
class RequestCancelExternalWorkflow:
    seq: int
    workflow_id: str
    reason: str = ""


@frozen
class RecordLocalActivity:
    """The outcome of local activity ``seq`` after ``attempts`` attempts, applied to the code at
    workflow time ``applied_at`` (the time of the last event it had seen)."""

    seq: int
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    result: JsonValue = None
    failure: Failure | None = None
    attempts: int = 1
    applied_at: float = 0.0


@frozen
class CompleteUpdate:
    """The handler of update ``update_id`` returned ``result`` (or raised: ``failure``)."""

    seq: int
    update_id: str
    name: str
    result: JsonValue = None
    failure: Failure | None = None


@frozen
class RecordSideEffect:
    seq: int
    value: JsonValue = None
    failure: Failure | None = None


@frozen
class RecordMarker:
    seq: int
    change_id: str


@frozen
class StartChildWorkflow:
    seq: int
    workflow_type: str
    workflow_id: str
    args: tuple[JsonValue, ...] = field(converter=payloads)
    task_queue: str
    execution_timeout: float | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL


@frozen
class UpsertSearchAttributes:
    """``df.workflow.upsert_search_attributes``: set (or, with a None value, remove) search
    attributes of the run."""

    seq: int
    search_attributes: SearchAttributes = field(factory=dict)


@frozen
class CompleteWorkflow:
    result: JsonValue = None


@frozen
class FailWorkflow:
    failure: Failure


@frozen
class CancelWorkflow:
    """The run ends cancelled (the generator let df.CancelledError escape)."""

    message: str = "workflow cancelled"


@frozen
class PendingSignal:
    """A signal the run received but its code had not consumed: it moves to the next run."""

    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)


def _pending(value: object) -> tuple[PendingSignal, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected pending signals, got {type(value).__name__}")


@frozen
class ContinueAsNewWorkflow:
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    workflow_type: str | None = None
    task_queue: str | None = None
    signals: tuple[PendingSignal, ...] = field(default=(), converter=_pending)
    """Signals received and not yet consumed; they are delivered to the new run, in order."""


PrimitiveCommand = (
    ScheduleActivity
    | StartTimer
    | StartSignalWait
    | StartConditionWait
    | RequestCancellation
    | SignalExternalWorkflow
    | RequestCancelExternalWorkflow
    | RecordLocalActivity
    | RecordSideEffect
    | RecordMarker
    | StartChildWorkflow
    | UpsertSearchAttributes
    | CompleteUpdate
)
TerminalCommand = CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow
Command = PrimitiveCommand | TerminalCommand
