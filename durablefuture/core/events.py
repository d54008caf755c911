"""History events: facts, in the past tense, recorded per workflow run.

Every event has ``event_id`` (1-based, contiguous within a run) and ``at`` (seconds since the
epoch, supplied by the server that recorded it). Events that record a workflow decision carry
``seq`` (the command's position, which is also the activity / timer / child id) and
``based_on``: the id of the last event the workflow code had seen when it made the decision.
Result events carry the ``seq`` of the command they answer.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core.commands import PendingSignal
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, IdReusePolicy, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "ACTIVITY_EVENTS",
    "COMMAND_EVENTS",
    "RESULT_EVENTS",
    "TERMINAL_EVENTS",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityRetryScheduled",
    "ActivityScheduled",
    "ActivityStarted",
    "ActivityTimedOut",
    "CancelRequested",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowScheduled",
    "ChildWorkflowStarted",
    "Event",
    "MarkerRecorded",
    "ParentRef",
    "SearchAttributesUpserted",
    "SideEffectRecorded",
    "SignalReceived",
    "SignalWaitStarted",
    "SignalWaitTimedOut",
    "TimerFired",
    "TimerStarted",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowContinuedAsNew",
    "WorkflowFailed",
    "WorkflowStarted",
    "WorkflowTaskFailed",
    "WorkflowTerminated",
    "WorkflowTimedOut",
]


def _pending_signals(value: object) -> tuple[PendingSignal, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected pending signals, got {type(value).__name__}")


@frozen
class ParentRef:
    """Which run (and which of its commands) started a child workflow."""

    namespace: str
    workflow_id: str
    run_id: str
    seq: int


# ----------------------------------------------------------------- workflow lifecycle


@frozen
class WorkflowStarted:
    event_id: int
    at: float
    workflow_type: str
    workflow_id: str
    run_id: str
    namespace: str
    task_queue: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    execution_timeout: float | None = None
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    parent: ParentRef | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL
    continued_from: str | None = None
    first_run_id: str = ""
    request_id: str = ""
    attempt: int = 1
    execution_deadline: float | None = None
    headers: dict[str, str] = field(factory=dict)
    chain_request_id: str = ""
    """The request id that started the chain this run continues ("" for a chain's first run:
    then it is ``request_id``); a start request seen again after continue-as-new finds it."""
    search_attributes: SearchAttributes = field(factory=dict)
    memo: dict[str, JsonValue] = field(factory=dict)


@frozen
class WorkflowTaskFailed:
    """A workflow task could not run (non-determinism, unknown workflow, ...); it is retried."""

    event_id: int
    at: float
    based_on: int
    failure: Failure
    attempt: int = 1


@frozen
class WorkflowCompleted:
    event_id: int
    at: float
    based_on: int
    result: JsonValue = None


@frozen
class WorkflowFailed:
    event_id: int
    at: float
    based_on: int
    failure: Failure


@frozen
class WorkflowCancelled:
    event_id: int
    at: float
    based_on: int
    message: str = "workflow cancelled"


@frozen
class WorkflowContinuedAsNew:
    event_id: int
    at: float
    based_on: int
    new_run_id: str
    workflow_type: str
    task_queue: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    signals: tuple[PendingSignal, ...] = field(default=(), converter=_pending_signals)
    """Unconsumed signals handed to the new run (those the code had buffered, then any that
    arrived while it was deciding)."""


@frozen
class WorkflowTimedOut:
    event_id: int
    at: float
    timeout: float = 0.0


@frozen
class WorkflowTerminated:
    event_id: int
    at: float
    reason: str = ""


@frozen
class CancelRequested:
    event_id: int
    at: float
    reason: str = ""
    request_id: str = ""


# ----------------------------------------------------------------- activities


@frozen
class ActivityScheduled:
    event_id: int
    at: float
    based_on: int
    seq: int
    name: str
    args: tuple[JsonValue, ...] = field(converter=payloads)
    options: ActivityOptions


@frozen
class ActivityStarted:
    """An attempt has been running for a while (reported by the worker that runs it)."""

    event_id: int
    at: float
    seq: int
    attempt: int
    worker: str = ""


@frozen
class ActivityCompleted:
    event_id: int
    at: float
    seq: int
    attempt: int
    result: JsonValue = None


@frozen
class ActivityRetryScheduled:
    """Attempt ``attempt`` failed; attempt ``attempt + 1`` is dispatched at ``retry_at``."""

    event_id: int
    at: float
    seq: int
    attempt: int
    failure: Failure
    delay: float
    retry_at: float
    heartbeat_details: tuple[JsonValue, ...] = field(default=(), converter=payloads)


@frozen
class ActivityFailed:
    """The activity failed for good (no retry left); the workflow sees ActivityError."""

    event_id: int
    at: float
    seq: int
    attempt: int
    failure: Failure
    retry_state: str = ""


@frozen
class ActivityTimedOut:
    """A timeout ended the activity for good; the workflow sees ActivityError(TimeoutError)."""

    event_id: int
    at: float
    seq: int
    attempt: int
    timeout_type: str
    failure: Failure
    retry_state: str = ""


# ----------------------------------------------------------------- timers and signals


@frozen
class TimerStarted:
    event_id: int
    at: float
    based_on: int
    seq: int
    duration: float
    fire_at: float


@frozen
class TimerFired:
    event_id: int
    at: float
    seq: int


@frozen
class SignalWaitStarted:
    event_id: int
    at: float
    based_on: int
    seq: int
    name: str
    timeout: float | None = None
    deadline: float | None = None


@frozen
class SignalWaitTimedOut:
    event_id: int
    at: float
    seq: int


@frozen
class SignalReceived:
    event_id: int
    at: float
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    request_id: str = ""


# ----------------------------------------------------------------- recorded values


@frozen
class SideEffectRecorded:
    event_id: int
    at: float
    based_on: int
    seq: int
    value: JsonValue = None
    failure: Failure | None = None


@frozen
class MarkerRecorded:
    """``df.workflow.patched(change_id)`` took the new branch at this point."""

    event_id: int
    at: float
    based_on: int
    seq: int
    change_id: str


@frozen
class SearchAttributesUpserted:
    """``df.workflow.upsert_search_attributes``: these attributes were set (None: removed)."""

    event_id: int
    at: float
    based_on: int
    seq: int
    search_attributes: SearchAttributes = field(factory=dict)


# ----------------------------------------------------------------- child workflows


@frozen
class ChildWorkflowScheduled:
    event_id: int
    at: float
    based_on: int
    seq: int
    workflow_type: str
    workflow_id: str
    task_queue: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    execution_timeout: float | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL


@frozen
class ChildWorkflowStarted:
    event_id: int
    at: float
    seq: int
    run_id: str


@frozen
class ChildWorkflowCompleted:
    event_id: int
    at: float
    seq: int
    result: JsonValue = None


@frozen
class ChildWorkflowFailed:
    """The child did not complete: failed, timed out, cancelled, terminated or never started."""

    event_id: int
    at: float
    seq: int
    failure: Failure


Event = (
    WorkflowStarted
    | WorkflowTaskFailed
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowContinuedAsNew
    | WorkflowTimedOut
    | WorkflowTerminated
    | CancelRequested
    | ActivityScheduled
    | ActivityStarted
    | ActivityCompleted
    | ActivityRetryScheduled
    | ActivityFailed
    | ActivityTimedOut
    | TimerStarted
    | TimerFired
    | SignalWaitStarted
    | SignalWaitTimedOut
    | SignalReceived
    | SideEffectRecorded
    | MarkerRecorded
    | SearchAttributesUpserted
    | ChildWorkflowScheduled
    | ChildWorkflowStarted
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
)

COMMAND_EVENTS = (
    ActivityScheduled,
    TimerStarted,
    SignalWaitStarted,
    SideEffectRecorded,
    MarkerRecorded,
    ChildWorkflowScheduled,
    SearchAttributesUpserted,
)
"""Events that record a primitive command (they carry ``seq`` and ``based_on``)."""

TERMINAL_EVENTS = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
    WorkflowTimedOut,
    WorkflowTerminated,
)
"""Events that close a run. Nothing is recorded after one of them."""

ACTIVITY_EVENTS = (
    ActivityScheduled,
    ActivityStarted,
    ActivityCompleted,
    ActivityRetryScheduled,
    ActivityFailed,
    ActivityTimedOut,
)
"""Events about one activity (``seq`` is its activity id)."""

RESULT_EVENTS = (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    TimerFired,
    SignalWaitTimedOut,
    SignalReceived,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
)
"""Events delivered to the workflow code, in history order."""
