"""Every error DurableFuture raises, under one root.

::

    DurableFutureError
    ├── InvalidArgumentError            bad options or arguments (also a ValueError)
    │   └── InvalidQueryError           a visibility query that does not parse (names the position)
    ├── PayloadError                    a value cannot be encoded as a payload (also a TypeError)
    ├── DecodeError                     bytes that are not a valid DurableFuture message
    │   └── CorruptHistoryError         a run's history holds a message that cannot be folded
    ├── TransportError                  NATS / JetStream trouble, translated at the adapter edge
    │   ├── NatsUnavailableError        could not reach the NATS server in time, or lost it
    │   │   └── TlsError                TLS with the NATS server failed (untrusted, refused)
    │   ├── JetStreamUnavailableError   the NATS server has no JetStream (started without -js)
    │   ├── NamespaceNotFoundError      the namespace's stream or buckets do not exist (yet)
    │   ├── MessageRejectedError        a message NATS would refuse (too large, bad subject)
    │   ├── MessageIdTakenError         another message holds the Nats-Msg-Id we publish with
    │   └── StorageFullError            JetStream has no room to store (insufficient resources)
    ├── WorkflowError                   the workflow code did something the engine cannot run
    │   ├── NonDeterminismError         replay diverged from the recorded history
    │   └── NotRegisteredError          unknown workflow or activity name on a worker
    ├── FailureError                    errors that travel as a structured Failure
    │   ├── ApplicationError            raised by user code, optionally typed / non-retryable
    │   ├── ActivityError               an activity failed for good (``.cause`` says why)
    │   ├── ChildWorkflowError          a child workflow did not complete (``.cause``)
    │   ├── CancelledError              the run (or an activity) was cancelled
    │   ├── TimeoutError                a timeout fired (``.timeout_type``)
    │   └── TerminatedError             the run was terminated
    ├── WorkflowExecutionError          client side: the run did not complete
    │   ├── WorkflowFailedError
    │   ├── WorkflowTimedOutError
    │   ├── WorkflowCancelledError
    │   ├── WorkflowTerminatedError
    │   └── WorkflowContinuedAsNewError (only when asked not to follow runs)
    ├── WorkflowAlreadyStartedError
    ├── WorkflowNotFoundError
    ├── ScheduleAlreadyExistsError
    ├── ScheduleNotFoundError
    ├── RequestRejectedError            a df-server refused a request for a run (says why)
    │   ├── WorkflowNotRunningError     the run has closed: no more signals, cancels, ...
    │   └── WorkflowStillOpenError      the run is open: it cannot be deleted
    ├── QueryFailedError                a query could not be answered (no handler, no worker)
    ├── UpdateFailedError               an update was rejected, or its handler raised
    ├── ResultTimeoutError              a wait for a result timed out (also a TimeoutError)
    └── ServerUnavailableError          no df-server answered in time

``__all__`` below is the one list of these names: ``durablefuture`` and ``durablefuture.core``
export it as it is, and a test checks this tree against the classes. The errors a df-server's
reply may name are listed once, in ``core/reply_errors.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durablefuture.core.failure import Failure

__all__ = [
    "ActivityError",
    "ApplicationError",
    "CancelledError",
    "ChildWorkflowError",
    "CorruptHistoryError",
    "DecodeError",
    "DurableFutureError",
    "FailureError",
    "InvalidArgumentError",
    "InvalidQueryError",
    "JetStreamUnavailableError",
    "MessageIdTakenError",
    "MessageRejectedError",
    "NamespaceNotFoundError",
    "NatsUnavailableError",
    "NonDeterminismError",
    "NotRegisteredError",
    "PayloadError",
    "QueryFailedError",
    "RequestRejectedError",
    "ResultTimeoutError",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "ServerUnavailableError",
    "StorageFullError",
    "TerminatedError",
    "TimeoutError",
    "TlsError",
    "TransportError",
    "UpdateFailedError",
    "WorkflowAlreadyStartedError",
    "WorkflowCancelledError",
    "WorkflowContinuedAsNewError",
    "WorkflowError",
    "WorkflowExecutionError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "WorkflowNotRunningError",
    "WorkflowStillOpenError",
    "WorkflowTerminatedError",
    "WorkflowTimedOutError",
]


_BuiltinTimeoutError = TimeoutError  # this module defines its own TimeoutError below


class DurableFutureError(Exception):
    """Root of every error raised by DurableFuture."""


class InvalidArgumentError(DurableFutureError, ValueError):
    """An option or argument has a value that cannot work; the message says what to set."""


class InvalidQueryError(InvalidArgumentError):
    """A visibility query (``list_workflows(query=...)``) does not parse or cannot be evaluated.

    ``position`` is the 0-based character offset where the problem was found (-1 when it is not
    tied to one place) and ``expected`` says what would have been valid there.
    """

    def __init__(self, message: str, *, position: int = -1, expected: str = "") -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected


class PayloadError(DurableFutureError, TypeError):
    """A value cannot be encoded as a JSON payload."""


class DecodeError(DurableFutureError):
    """Bytes that are not a valid DurableFuture message (wrong schema, garbage, unknown type)."""


class CorruptHistoryError(DecodeError):
    """A run's history holds a message that is not a valid batch of events, or events that do
    not follow from the ones before them (out of order, after the run closed, naming a command
    that was never issued).

    History is never skipped: the run stops where it is. ``stream_seq`` is the stream sequence
    of the offending message and ``reason`` says what is wrong with it.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str = "",
        run_id: str = "",
        stream_seq: int = 0,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.stream_seq = stream_seq
        self.reason = reason


class TransportError(DurableFutureError):
    """A NATS / JetStream operation failed."""


class NatsUnavailableError(TransportError):
    """The NATS server could not be reached within the connect timeout."""


class TlsError(NatsUnavailableError):
    """TLS with the NATS server failed: its certificate is not trusted or not valid for its
    name, it refused (or required) our client certificate, or it does not offer TLS at all.
    Retrying cannot fix it, so it is raised at once; the message names the likely cause."""


class JetStreamUnavailableError(TransportError):
    """The NATS server answers but has no JetStream (for this account); nothing can be stored."""


class NamespaceNotFoundError(TransportError):
    """The namespace's stream or buckets do not exist: no df-server has created them (yet)."""


class MessageRejectedError(TransportError):
    """A message was not sent because NATS would refuse it: too large, or a malformed subject
    or header. Sending it would have cost the connection (nats-server closes it on such errors).

    For a message that is too large, ``size`` and ``limit`` are its size and the server's
    ``max_payload`` in bytes.
    """

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class MessageIdTakenError(TransportError):
    """JetStream acknowledged a publish as a duplicate, but the message it holds under that
    ``Nats-Msg-Id`` is not ours (another subject or other bytes): someone who may publish on
    the namespace's stream used the id first, or the store is damaged. Nothing was stored.

    The history store and the worker's reports publish again under a fresh, unguessable id
    before they give up with this error; see ``durablefuture.transport.dedup``.
    """


class StorageFullError(TransportError):
    """JetStream refused to store a message for lack of room ("insufficient resources": the
    server's ``max_file_store``/``max_memory_store``, an account limit, or a full disk).

    It passes once space is freed; the daemons keep the message they were handling and retry.
    """


class WorkflowError(DurableFutureError):
    """Workflow code did something the engine cannot run (e.g. yielded an unknown value)."""


class NonDeterminismError(WorkflowError):
    """Replaying the recorded history with the current code took a different path."""

    def __init__(
        self,
        message: str,
        *,
        event_id: int | None = None,
        seq: int | None = None,
        recorded: str | None = None,
        yielded: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.seq = seq
        self.recorded = recorded
        self.yielded = yielded
        self.location = location


class NotRegisteredError(WorkflowError):
    """A task names a workflow or activity that this worker does not have."""


class FailureError(DurableFutureError):
    """An error that travels through history as a structured :class:`Failure`."""

    failure: Failure | None = None

    @property
    def cause(self) -> BaseException | None:
        return self.__cause__


class ApplicationError(FailureError):
    """Raise from activities or workflows for a typed failure.

    Args:
        message: what went wrong.
        type: a stable error type name, matched by ``RetryPolicy.non_retryable_error_types``
            (defaults to the class name, ``ApplicationError``).
        non_retryable: when True the activity is not retried, whatever the policy says.
        details: extra JSON-encodable values carried to the caller.
        next_retry_delay: override the policy's delay before the next attempt (seconds).
    """

    def __init__(
        self,
        message: str,
        *details: object,
        type: str | None = None,
        non_retryable: bool = False,
        next_retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.non_retryable = non_retryable
        self.details: tuple[object, ...] = details
        self.next_retry_delay = next_retry_delay


class ActivityError(FailureError):
    """An activity failed for good; ``.cause`` holds the last attempt's error."""

    def __init__(
        self,
        message: str,
        *,
        activity_name: str = "",
        activity_id: int = 0,
        attempt: int = 0,
        retry_state: str = "",
    ) -> None:
        super().__init__(message)
        self.activity_name = activity_name
        self.activity_id = activity_id
        self.attempt = attempt
        self.retry_state = retry_state


class ChildWorkflowError(FailureError):
    """A child workflow did not complete; ``.cause`` holds its failure."""

    def __init__(self, message: str, *, workflow_type: str = "", workflow_id: str = "") -> None:
        super().__init__(message)
        self.workflow_type = workflow_type
        self.workflow_id = workflow_id


class CancelledError(FailureError):
    """The workflow run (or an activity) was cancelled."""


class TimeoutError(FailureError):
    """A timeout fired; ``timeout_type`` names which one."""

    def __init__(self, message: str, *, timeout_type: str = "") -> None:
        super().__init__(message)
        self.timeout_type = timeout_type


class TerminatedError(FailureError):
    """The workflow run was terminated."""


class WorkflowExecutionError(DurableFutureError):
    """Client side: a workflow run did not complete successfully."""

    def __init__(self, message: str, *, workflow_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowFailedError(WorkflowExecutionError):
    """The workflow failed; ``.cause`` is the original error, rebuilt with type and message."""

    failure: Failure | None = None

    @property
    def cause(self) -> BaseException | None:
        return self.__cause__


class WorkflowTimedOutError(WorkflowExecutionError):
    """The workflow's execution timeout fired."""


class WorkflowCancelledError(WorkflowExecutionError):
    """The workflow was cancelled and ended cancelled."""


class WorkflowTerminatedError(WorkflowExecutionError):
    """The workflow was terminated."""

    def __init__(
        self, message: str, *, workflow_id: str = "", run_id: str = "", reason: str = ""
    ) -> None:
        super().__init__(message, workflow_id=workflow_id, run_id=run_id)
        self.reason = reason


class WorkflowContinuedAsNewError(WorkflowExecutionError):
    """The run continued as new and the caller asked not to follow it."""

    def __init__(
        self, message: str, *, workflow_id: str = "", run_id: str = "", new_run_id: str = ""
    ) -> None:
        super().__init__(message, workflow_id=workflow_id, run_id=run_id)
        self.new_run_id = new_run_id


class WorkflowAlreadyStartedError(DurableFutureError):
    """A run with this workflow id is already running (or the id reuse policy forbids a new one)."""

    def __init__(self, message: str, *, workflow_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(DurableFutureError):
    """No workflow with this id exists in the namespace."""


class ScheduleAlreadyExistsError(DurableFutureError):
    """A schedule with this id exists already (update or delete it)."""


class ScheduleNotFoundError(DurableFutureError):
    """No schedule with this id in the namespace."""


class QueryFailedError(DurableFutureError):
    """A query could not be answered: no such handler, the handler raised, or no worker."""


class UpdateFailedError(DurableFutureError):
    """An update did not return a result: its validator or the run rejected it, no worker
    answered, its handler raised (``__cause__`` is that error), or the run closed first."""


class ServerUnavailableError(DurableFutureError):
    """No df-server answered a request in time."""


class RequestRejectedError(DurableFutureError):
    """A df-server refused a request for a run (a cancellation already requested, ...); the
    message says why."""

    def __init__(self, message: str, *, workflow_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotRunningError(RequestRejectedError):
    """The run has closed (completed, failed, cancelled, ...): it takes no more signals,
    cancellations or terminations. Start a new run, or address the one that continued it."""


class WorkflowStillOpenError(RequestRejectedError):
    """Only a closed run can be deleted; this one is still open (terminate or cancel it,
    or wait for it to close)."""


class ResultTimeoutError(DurableFutureError, _BuiltinTimeoutError):
    """Waiting for a run's result took longer than the ``timeout`` given; the run goes on.

    Also a built-in ``TimeoutError``, so ``except TimeoutError`` keeps working.
    """

    def __init__(self, message: str, *, workflow_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id
