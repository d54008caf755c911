"""What workflow code yields, and what a workflow task sends back to the server.

Two layers:

* **Yieldables** (``ActivityCall``, ``Sleep``, ``AllOf``, ...) are what a workflow generator
  yields. The public helpers ``df.activity(...)``, ``df.sleep(...)``, ``df.all_of(...)`` build them.
  They live in ``yieldables.py`` and are importable from here too.
* **Commands** (``ScheduleActivity``, ``StartTimer``, ``CompleteWorkflow``, ...) are requests,
  in the imperative, that the replayer derives from yieldables. Each primitive command carries
  ``seq``: its position (1-based) among the commands the run has issued. ``seq`` is also the
  activity id / timer id that links a later result event back to its command.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads
from durablefuture.core.yieldables import (
    YIELDABLE_TYPES,
    ActivityCall,
    AllOf,
    AnyOf,
    Cancel,
    CancelExternal,
    ChildWorkflowCall,
    ContinueAsNew,
    Handle,
    SideEffect,
    SignalExternal,
    Site,
    Sleep,
    Start,
    WaitCondition,
    WaitSignal,
    Yieldable,
    describe_yieldable,
)

__all__ = [
    "YIELDABLE_TYPES",
    "ActivityCall",
    "AllOf",
    "AnyOf",
    "Cancel",
    "CancelExternal",
    "CancelWorkflow",
    "ChildWorkflowCall",
    "Command",
    "CompleteWorkflow",
    "ContinueAsNew",
    "ContinueAsNewWorkflow",
    "FailWorkflow",
    "Handle",
    "PendingSignal",
    "PrimitiveCommand",
    "RecordMarker",
    "RecordSideEffect",
    "RequestCancelExternalWorkflow",
    "RequestCancellation",
    "ScheduleActivity",
    "SideEffect",
    "SignalExternal",
    "SignalExternalWorkflow",
    "Site",
    "Sleep",
    "Start",
    "StartChildWorkflow",
    "StartConditionWait",
    "StartSignalWait",
    "StartTimer",
    "TerminalCommand",
    "UpsertSearchAttributes",
    "WaitCondition",
    "WaitSignal",
    "Yieldable",
    "describe_yieldable",
]


# --------------------------------------------------------------------------- commands


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
class RecordSideEffect:
    seq: int
    value: JsonValue = None
    failure: Failure | None = None


@frozen
class RecordMarker:
    seq: int
    change_id: str


@frozen
class UpsertSearchAttributes:
    """``df.workflow.upsert_search_attributes``: set (or, with a None value, remove) search
    attributes of the run."""

    seq: int
    search_attributes: SearchAttributes = field(factory=dict)


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
    | RecordSideEffect
    | RecordMarker
    | StartChildWorkflow
    | UpsertSearchAttributes
)
TerminalCommand = CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow
Command = PrimitiveCommand | TerminalCommand
