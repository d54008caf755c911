"""History events: facts, in the past tense, recorded per workflow run.

Every event has ``event_id`` (1-based, contiguous within a run) and ``at`` (seconds since the
epoch, supplied by the server that recorded it). Events that record a workflow decision carry
``seq`` (the command's position, which is also the activity / timer / child id) and
``based_on``: the id of the last event the workflow code had seen when it made the decision.
Result events carry the ``seq`` of the command they answer.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core._lifecycle_events import (
    RUN_FLAGS,
    CancelRequested,
    ParentRef,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from durablefuture.core._update_events import UpdateAccepted, UpdateCompleted
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "ACTIVITY_EVENTS",
    "COMMAND_EVENTS",
    "RESULT_EVENTS",
    "RUN_FLAGS",
    "TERMINAL_EVENTS",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityRetryScheduled",
    "ActivityScheduled",
    "ActivityStarted",
    "ActivityTimedOut",
    "CancelRequested",
    "CancellationRequested",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowScheduled",
    "ChildWorkflowStarted",
    "ConditionWaitStarted",
    "Event",
    "ExternalCancelRequested",
    "ExternalWorkflowSignalled",
    "LocalActivityRecorded",
    "MarkerRecorded",
    "ParentRef",
    "SearchAttributesUpserted",
    "SideEffectRecorded",
    "SignalReceived",
    "SignalWaitStarted",
    "SignalWaitTimedOut",
    "TimerFired",
    "TimerStarted",
    "UpdateAccepted",
    "UpdateCompleted",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowContinuedAsNew",
    "WorkflowFailed",
    "WorkflowStarted",
    "WorkflowTaskFailed",
    "WorkflowTerminated",
    "WorkflowTimedOut",
]


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
    eager: str = ""
    """Its first attempt was granted to the worker that decided it, with no stored task (the
    id of the report request whose answer granted it): that attempt's task is published only
    for a report that request's worker stored instead (it ran none of its grants); otherwise
    its check list decides what became of it."""


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
class ConditionWaitStarted:
    """The code waits on ``df.wait_condition``; with a ``deadline``, ``TimerFired(seq)`` ends
    the wait (the condition was not met in time)."""

    event_id: int
    at: float
    based_on: int
    seq: int
    timeout: float | None = None
    deadline: float | None = None


@frozen
class CancellationRequested:
    """The code cancelled command ``target``: a timer never fires; an activity's attempt is
    asked to stop (unless its cancellation type is ABANDON); a child run is asked to cancel."""

    event_id: int
    at: float
    based_on: int
    seq: int
    target: int


@frozen
class LocalActivityRecorded:
    """A local activity ran in the workflow worker: its outcome after ``attempts`` attempts,
    handed to the code at workflow time ``applied_at``."""

    event_id: int
    at: float
    based_on: int
    seq: int
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    result: JsonValue = None
    failure: Failure | None = None
    attempts: int = 1
    applied_at: float = 0.0


@frozen
class ExternalWorkflowSignalled:
    """The code sent signal ``name`` to workflow ``workflow_id`` (``df.signal_workflow``,
    ``child.signal``); the df-server delivers it to that workflow's running run."""

    event_id: int
    at: float
    based_on: int
    seq: int
    workflow_id: str
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)


@frozen
class ExternalCancelRequested:
    """The code asked workflow ``workflow_id`` to cancel (``df.cancel_workflow``)."""

    event_id: int
    at: float
    based_on: int
    seq: int
    workflow_id: str
    reason: str = ""


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
    | ConditionWaitStarted
    | CancellationRequested
    | ExternalWorkflowSignalled
    | ExternalCancelRequested
    | LocalActivityRecorded
    | SignalReceived
    | UpdateAccepted
    | UpdateCompleted
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
    ConditionWaitStarted,
    CancellationRequested,
    ExternalWorkflowSignalled,
    ExternalCancelRequested,
    LocalActivityRecorded,
    SideEffectRecorded,
    MarkerRecorded,
    ChildWorkflowScheduled,
    SearchAttributesUpserted,
    UpdateCompleted,
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
    UpdateAccepted,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
)
"""Events delivered to the workflow code, in history order."""
