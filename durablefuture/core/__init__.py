"""The pure core of DurableFuture: history in, decisions out.

Nothing here does I/O. No asyncio, nats, orjson, time, random or uuid is imported (a test
enforces it): time, ids and randomness are passed in, which is what makes replay deterministic
and the core testable with hypothesis.

* ``events``        the history vocabulary (facts, past tense)
* ``commands``      what workflow code yields, and the commands a workflow task returns
* ``vocabulary``    one entry per command: its event, how replay matches it, its effects and
                    its description (a new command is a class, an event and an entry here)
* ``replay/``       drives a workflow generator over its history  <- replay happens here:
                    ``replay/_execution.py`` (``WorkflowExecution``); how it works is in
                    ``replay/__init__.py``
* ``state``         a run's state as the server sees it (fold of its events)
* ``orchestration/`` the server's decisions: ``decide`` / ``effects_for`` / ``decide_start``
* ``timers``        ``TimerKey``: durable timer keys, typed, and their wire strings
* ``retry``         backoff math
* ``failure``       structured errors recorded in history
* ``errors``        the error tree
"""

from durablefuture.core.errors import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    DecodeError,
    DurableFutureError,
    FailureError,
    InvalidArgumentError,
    JetStreamUnavailableError,
    MessageRejectedError,
    NatsUnavailableError,
    NonDeterminismError,
    NotRegisteredError,
    PayloadError,
    ServerUnavailableError,
    TerminatedError,
    TimeoutError,
    TransportError,
    WorkflowAlreadyStartedError,
    WorkflowCancelledError,
    WorkflowContinuedAsNewError,
    WorkflowError,
    WorkflowExecutionError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTerminatedError,
    WorkflowTimedOutError,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import (
    ActivityOptions,
    Backoff,
    IdReusePolicy,
    ParentClosePolicy,
    RetryPolicy,
    WorkflowOptions,
)
from durablefuture.core.types import JsonValue

__all__ = [
    "ActivityError",
    "ActivityOptions",
    "ApplicationError",
    "Backoff",
    "CancelledError",
    "ChildWorkflowError",
    "DecodeError",
    "DurableFutureError",
    "Failure",
    "FailureError",
    "FailureKind",
    "IdReusePolicy",
    "InvalidArgumentError",
    "JetStreamUnavailableError",
    "JsonValue",
    "MessageRejectedError",
    "NatsUnavailableError",
    "NonDeterminismError",
    "NotRegisteredError",
    "ParentClosePolicy",
    "PayloadError",
    "RetryPolicy",
    "ServerUnavailableError",
    "TerminatedError",
    "TimeoutError",
    "TransportError",
    "WorkflowAlreadyStartedError",
    "WorkflowCancelledError",
    "WorkflowContinuedAsNewError",
    "WorkflowError",
    "WorkflowExecutionError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "WorkflowOptions",
    "WorkflowTerminatedError",
    "WorkflowTimedOutError",
]
