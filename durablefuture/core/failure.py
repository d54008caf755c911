"""Structured failures: how errors are recorded in history and rebuilt on the other side.

An exception never crosses a process boundary as a Python object. It is turned into a
:class:`Failure` (type, message, stack, non_retryable, details, cause chain) where it is raised,
recorded, and rebuilt into a :class:`~durablefuture.core.errors.FailureError` where it is caught.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from attrs import field, frozen

from durablefuture.core import errors
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "WORKER_LOST",
    "Failure",
    "FailureKind",
    "exception_from_failure",
    "failure_from_exception",
]

MAX_STACK = 8000
WORKER_LOST = "WorkerLostError"
"""The type of a workflow task failure recorded because every worker that took the task died
(or stopped) before reporting an outcome."""
MAX_CAUSE_DEPTH = 16


class FailureKind:
    """String constants for ``Failure.kind``."""

    APPLICATION = "application"
    ACTIVITY = "activity"
    CHILD_WORKFLOW = "child_workflow"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    TERMINATED = "terminated"
    SERVER = "server"


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise TypeError(f"expected a tuple of strings, got {type(value).__name__}")


@frozen
class Failure:
    """An error as recorded in history. ``cause`` chains to the underlying failure."""

    message: str
    type: str = "Error"
    kind: str = FailureKind.APPLICATION
    stack: str = ""
    non_retryable: bool = False
    details: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    type_hierarchy: tuple[str, ...] = field(default=(), converter=_str_tuple)
    timeout_type: str | None = None
    next_retry_delay: float | None = None
    cause: Failure | None = None

    def matches_type(self, names: tuple[str, ...]) -> bool:
        """True if this failure's type, or one of its exception base classes, is in ``names``."""
        if not names:
            return False
        if self.type in names:
            return True
        return any(n in names for n in self.type_hierarchy)

    def describe(self) -> str:
        """``Type: message``, followed by the cause chain."""
        parts = [f"{self.type}: {self.message}"]
        cause = self.cause
        depth = 0
        while cause is not None and depth < MAX_CAUSE_DEPTH:
            parts.append(f"caused by {cause.type}: {cause.message}")
            cause = cause.cause
            depth += 1
        return "; ".join(parts)


_STOP_BASES = {"object", "BaseException", "Exception"}


def _hierarchy(exc: BaseException) -> tuple[str, ...]:
    return tuple(c.__name__ for c in type(exc).__mro__[1:] if c.__name__ not in _STOP_BASES)


def _stack(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
    return text[-MAX_STACK:]


def failure_from_exception(
    exc: BaseException,
    encode_details: Callable[[tuple[object, ...]], tuple[JsonValue, ...]] | None = None,
    *,
    _depth: int = 0,
) -> Failure:
    """Record ``exc`` (and its ``__cause__`` chain) as a :class:`Failure`.

    ``encode_details`` turns ``ApplicationError.details`` into JSON values; when it is missing
    or fails, the details are recorded as their ``repr`` so nothing is lost silently.
    """
    cause: Failure | None = None
    inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if inner is not None and _depth < MAX_CAUSE_DEPTH:
        cause = failure_from_exception(inner, encode_details, _depth=_depth + 1)
    recorded = getattr(exc, "failure", None)
    if isinstance(recorded, Failure) and isinstance(exc, errors.FailureError):
        # An error rebuilt from a recorded failure keeps its original record.
        return recorded
    stack = _stack(exc)
    if isinstance(exc, errors.ApplicationError):
        details: tuple[JsonValue, ...] = ()
        if exc.details:
            try:
                details = (
                    encode_details(exc.details)
                    if encode_details
                    else tuple(repr(d) for d in exc.details)
                )
            except Exception as enc_err:  # details must never hide the error itself
                details = (
                    *(repr(d) for d in exc.details),
                    f"(details could not be encoded: {enc_err})",
                )
        return Failure(
            message=exc.message,
            type=exc.type or type(exc).__name__,
            kind=FailureKind.APPLICATION,
            stack=stack,
            non_retryable=exc.non_retryable,
            details=details,
            type_hierarchy=_hierarchy(exc),
            next_retry_delay=exc.next_retry_delay,
            cause=cause,
        )
    kind = FailureKind.APPLICATION
    timeout_type: str | None = None
    if isinstance(exc, errors.CancelledError):
        kind = FailureKind.CANCELLED
    elif isinstance(exc, errors.TimeoutError):
        kind = FailureKind.TIMEOUT
        timeout_type = exc.timeout_type
    elif isinstance(exc, errors.TerminatedError):
        kind = FailureKind.TERMINATED
    elif isinstance(exc, errors.ActivityError):
        kind = FailureKind.ACTIVITY
    elif isinstance(exc, errors.ChildWorkflowError):
        kind = FailureKind.CHILD_WORKFLOW
    message = str(exc) if str(exc) else type(exc).__name__
    return Failure(
        message=message,
        type=type(exc).__name__,
        kind=kind,
        stack=stack,
        type_hierarchy=_hierarchy(exc),
        timeout_type=timeout_type,
        cause=cause,
    )


def exception_from_failure(failure: Failure) -> errors.FailureError:
    """Rebuild a catchable error from a recorded failure (cause chain included)."""
    exc: errors.FailureError
    if failure.kind == FailureKind.ACTIVITY:
        exc = errors.ActivityError(failure.message)
    elif failure.kind == FailureKind.CHILD_WORKFLOW:
        exc = errors.ChildWorkflowError(failure.message)
    elif failure.kind == FailureKind.CANCELLED:
        exc = errors.CancelledError(failure.message)
    elif failure.kind == FailureKind.TIMEOUT:
        exc = errors.TimeoutError(failure.message, timeout_type=failure.timeout_type or "")
    elif failure.kind == FailureKind.TERMINATED:
        exc = errors.TerminatedError(failure.message)
    else:
        exc = errors.ApplicationError(
            failure.message,
            *failure.details,
            type=failure.type,
            non_retryable=failure.non_retryable,
            next_retry_delay=failure.next_retry_delay,
        )
    exc.failure = failure
    if failure.cause is not None:
        exc.__cause__ = exception_from_failure(failure.cause)
    return exc
