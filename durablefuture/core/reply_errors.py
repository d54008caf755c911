"""The errors a df-server's refusal may name, and the error a client raises for each.

A refusal (``Reply.error_type``) names the error by its class name; the server takes the name
from the class (``WorkflowNotFoundError.__name__``), never from a string typed by hand, and
an architecture test checks that every name it sends is listed here.
"""

from __future__ import annotations

import re

from durablefuture.core.errors import (
    CorruptHistoryError,
    DurableFutureError,
    InvalidArgumentError,
    InvalidQueryError,
    RequestRejectedError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowStillOpenError,
)

__all__ = ["REPLY_ERRORS", "error_for_reply"]

REPLY_ERRORS: dict[str, type[DurableFutureError]] = {
    cls.__name__: cls
    for cls in (
        CorruptHistoryError,
        InvalidArgumentError,
        InvalidQueryError,
        RequestRejectedError,
        ScheduleAlreadyExistsError,
        ScheduleNotFoundError,
        WorkflowAlreadyStartedError,
        WorkflowNotFoundError,
        WorkflowNotRunningError,
        WorkflowStillOpenError,
    )
}
"""Error class by the name a refusal carries."""

_OLD_NAMES = {"Rejected": RequestRejectedError}  # what older df-servers sent
_CORRUPT_SEQ = re.compile(r"corrupt at stream sequence (\d+)")


def error_for_reply(
    error_type: str, message: str, *, workflow_id: str = "", run_id: str = ""
) -> DurableFutureError:
    """The error a refusal naming ``error_type`` stands for (the root class, naming it, when
    the name is unknown: a newer server's)."""
    cls = REPLY_ERRORS.get(error_type) or _OLD_NAMES.get(error_type)
    if cls is None:
        return DurableFutureError(f"{error_type}: {message}")
    if cls is CorruptHistoryError:
        m = _CORRUPT_SEQ.search(message)
        return CorruptHistoryError(
            message,
            workflow_id=workflow_id,
            run_id=run_id,
            stream_seq=int(m.group(1)) if m else 0,
        )
    if issubclass(cls, (WorkflowAlreadyStartedError, RequestRejectedError)):
        return cls(message, workflow_id=workflow_id, run_id=run_id)
    return cls(message)
