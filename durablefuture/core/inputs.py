"""What the server receives: requests from clients and reports from workers and timers.

Each input names the run it is for and has an ``input_id`` that is stable across redeliveries
and unique per fact (e.g. ``act:<seq>:<attempt>``). The id is recorded with the events it
produced, so a redelivered input is recognised and its effects are re-derived, never re-applied.
"""

from __future__ import annotations

import math

from attrs import field, frozen

from durablefuture.core.commands import Command, PendingSignal
from durablefuture.core.events import ParentRef
from durablefuture.core.failure import Failure
from durablefuture.core.options import IdReusePolicy, ParentClosePolicy
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, check_text_id, check_type_name, payloads

__all__ = [
    "DECIDED_AT_MARGIN",
    "AcceptUpdate",
    "CompleteActivityTask",
    "CompleteWorkflowTask",
    "FailActivityTask",
    "FailWorkflowTask",
    "FireTimer",
    "RecordChildClosed",
    "RecordChildStartFailed",
    "RecordChildStarted",
    "ReportActivityStarted",
    "RequestCancel",
    "RunInput",
    "SignalWorkflow",
    "StartWorkflowRequest",
    "TerminateWorkflow",
]


DECIDED_AT_MARGIN = 5.0
"""Seconds by which the clock of the df-server that started a run may be ahead of the clock
of the df-server that decided an input for "the current run" of its workflow id
(``SignalWorkflow.decided_at``): a run started up to this long after the decision still
counts as the one that was current then. Hosts kept by NTP differ by milliseconds; five
seconds also allows for one whose clock was stepped. The price of the margin: an input whose
effects are derived again only after JetStream's duplicate window (2 min) reaches a run
started within it, after its predecessor closed."""


def _decided_at(_inst: object, _attr: object, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"decided_at must be a finite time in seconds, got {value!r}")


def _pending(value: object) -> tuple[PendingSignal, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected pending signals, got {type(value).__name__}")


def _cmds(value: object) -> tuple[Command, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected a tuple of commands, got {type(value).__name__}")


@frozen
class StartWorkflowRequest:
    """Start a run (from a client, a parent workflow, or continue-as-new)."""

    workflow_id: str
    workflow_type: str
    task_queue: str
    request_id: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    execution_timeout: float | None = None
    execution_deadline: float | None = None
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    parent: ParentRef | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL
    continued_from: str | None = None
    first_run_id: str = ""
    run_id: str | None = None
    signal_name: str | None = None
    signal_args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    headers: dict[str, str] = field(factory=dict)
    """Context that travels with the run (e.g. the trace context of whoever started it)."""
    signals: tuple[PendingSignal, ...] = field(default=(), converter=_pending)
    """Signals to deliver to the new run first (carried over by continue-as-new)."""
    chain_request_id: str = ""
    """Continue-as-new: the request id of the chain's first run (see ``WorkflowStarted``)."""
    search_attributes: SearchAttributes = field(factory=dict)
    memo: dict[str, JsonValue] = field(factory=dict)


@frozen
class CompleteWorkflowTask:
    """The commands the workflow code issued after seeing events up to ``based_on``.

    ``more`` says the worker holds further commands (a report carries a bounded number): the
    server dispatches another workflow task after recording these.
    """

    run_id: str
    based_on: int
    commands: tuple[Command, ...] = field(default=(), converter=_cmds)
    worker: str = ""
    more: bool = False

    @property
    def input_id(self) -> str:
        return f"wtc:{self.based_on}"


@frozen
class FailWorkflowTask:
    run_id: str
    based_on: int
    failure: Failure
    attempt: int = 1
    worker: str = ""

    @property
    def input_id(self) -> str:
        return f"wtf:{self.based_on}:{self.attempt}"


@frozen
class ReportActivityStarted:
    run_id: str
    seq: int
    attempt: int
    worker: str = ""

    @property
    def input_id(self) -> str:
        return f"ast:{self.seq}:{self.attempt}"


@frozen
class CompleteActivityTask:
    """An attempt succeeded.

    A worker that also holds the run's live generator may add what the workflow code decides
    next: ``commands``, decided as if the completion were event ``event_id`` recorded at
    ``completed_at``. The server records them with the completion, in one batch, if the history
    is still where the worker saw it; otherwise it records the completion alone and dispatches
    a workflow task as usual.
    """

    run_id: str
    seq: int
    attempt: int
    result: JsonValue = None
    commands: tuple[Command, ...] = field(default=(), converter=_cmds)
    event_id: int = 0
    completed_at: float | None = None
    more: bool = False

    @property
    def input_id(self) -> str:
        return f"act:{self.seq}:{self.attempt}"


@frozen
class FailActivityTask:
    run_id: str
    seq: int
    attempt: int
    failure: Failure
    heartbeat_details: tuple[JsonValue, ...] = field(default=(), converter=payloads)

    @property
    def input_id(self) -> str:
        return f"act:{self.seq}:{self.attempt}"


@frozen
class FireTimer:
    """A durable timer (or its local fast path) is due. ``key`` names what it guards."""

    run_id: str
    key: str
    heartbeat_at: float | None = None
    heartbeat_details: tuple[JsonValue, ...] = field(default=(), converter=payloads)

    @property
    def input_id(self) -> str:
        return f"tmr:{self.key}"


@frozen
class SignalWorkflow:
    run_id: str
    name: str
    request_id: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    decided_at: float | None = field(default=None, validator=_decided_at)
    """For "the current run" (``run_id`` ""), sent on a workflow's decision recorded at this
    time: not for a run started after it (by more than ``DECIDED_AT_MARGIN``), which began
    after the run it was meant for had closed (the input's effects derived again late: the
    new run's history does not hold its request id to tell it a duplicate)."""

    @property
    def input_id(self) -> str:
        return f"sig:{self.request_id}"


@frozen
class AcceptUpdate:
    """Record update ``name`` (its validator let it through); applied once per ``update_id``."""

    run_id: str
    update_id: str = field(validator=lambda _i, _a, v: check_text_id(v, "update id"))
    name: str = field(validator=lambda _i, _a, v: check_type_name(v, "update name"))
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)

    @property
    def input_id(self) -> str:
        return f"upd:{self.update_id}"


@frozen
class RequestCancel:
    run_id: str
    request_id: str
    reason: str = ""
    decided_at: float | None = field(default=None, validator=_decided_at)
    """As ``SignalWorkflow.decided_at``."""

    @property
    def input_id(self) -> str:
        return f"cxl:{self.request_id}"


@frozen
class TerminateWorkflow:
    run_id: str
    request_id: str
    reason: str = ""

    @property
    def input_id(self) -> str:
        return f"trm:{self.request_id}"


@frozen
class RecordChildStarted:
    run_id: str
    seq: int
    child_run_id: str

    @property
    def input_id(self) -> str:
        return f"chs:{self.seq}"


@frozen
class RecordChildStartFailed:
    run_id: str
    seq: int
    failure: Failure

    @property
    def input_id(self) -> str:
        return f"chc:{self.seq}"


@frozen
class RecordChildClosed:
    run_id: str
    seq: int
    child_run_id: str
    result: JsonValue = None
    failure: Failure | None = None

    @property
    def input_id(self) -> str:
        return f"chc:{self.seq}"


RunInput = (
    CompleteWorkflowTask
    | FailWorkflowTask
    | ReportActivityStarted
    | CompleteActivityTask
    | FailActivityTask
    | FireTimer
    | SignalWorkflow
    | AcceptUpdate
    | RequestCancel
    | TerminateWorkflow
    | RecordChildStarted
    | RecordChildStartFailed
    | RecordChildClosed
)
"""An input addressed to an existing run."""
