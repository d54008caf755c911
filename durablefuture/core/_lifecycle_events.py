"""History events of a run's life as a whole: its start, its end, its workflow task failures and
cancellation requests, and the reference to a parent run. Part of :mod:`durablefuture.core.events`
(import them from there); kept apart so that module stays one screenful per concern.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core.commands import PendingSignal
from durablefuture.core.failure import Failure
from durablefuture.core.options import IdReusePolicy, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "RUN_FLAGS",
    "CancelRequested",
    "ParentRef",
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


RUN_FLAGS: tuple[str, ...] = ("cancel_losers", "condition_timers")
"""Recorded in every new run's ``WorkflowStarted.flags``:

* ``cancel_losers``: ``df.any_of`` cancels its losers by default (runs without it never do);
* ``condition_timers``: a ``df.wait_condition`` met before its timeout cancels its timer.
"""


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
    flags: tuple[str, ...] = ()
    """Behaviours this run was started with (``RUN_FLAGS`` of the engine that started it), so a
    run started before a behaviour changed replays the way it was recorded."""


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
