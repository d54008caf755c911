"""Turn a closed run's status entry into the caller's value or the matching client error."""

from __future__ import annotations

from durablefuture.core.definitions import PayloadConverter
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import (
    CorruptHistoryError,
    WorkflowCancelledError,
    WorkflowContinuedAsNewError,
    WorkflowExecutionError,
    WorkflowFailedError,
    WorkflowTerminatedError,
    WorkflowTimedOutError,
)
from durablefuture.core.failure import exception_from_failure

__all__ = ["corrupt_history_error", "outcome_of"]


def corrupt_history_error(summary: RunSummary) -> CorruptHistoryError:
    """The error a status entry marked ``corrupt`` stands for (message, sequence, reason)."""
    failure = summary.failure
    details = failure.details if failure is not None else ()
    seq = details[0] if details and isinstance(details[0], int) else 0
    reason = details[1] if len(details) > 1 and isinstance(details[1], str) else ""
    return CorruptHistoryError(
        failure.message if failure is not None else "the history is corrupt",
        workflow_id=summary.workflow_id,
        run_id=summary.run_id,
        stream_seq=seq,
        reason=reason,
    )


def outcome_of(
    summary: RunSummary, payloads: PayloadConverter, result_type: object = None
) -> object:
    """The run's result, or raise the ``WorkflowExecutionError`` subclass for how it ended
    (``CorruptHistoryError`` if its history cannot be read)."""
    wid, rid = summary.workflow_id, summary.run_id
    status = summary.status
    if status == RunStatus.COMPLETED:
        return payloads.from_payload(summary.result, result_type, f"the result of workflow {wid!r}")
    if status == RunStatus.FAILED:
        failure = summary.failure
        what = failure.describe() if failure else "unknown error"
        err = WorkflowFailedError(
            f"workflow {wid!r} (run {rid}) failed: {what}", workflow_id=wid, run_id=rid
        )
        if failure is not None:
            err.failure = failure
            err.__cause__ = exception_from_failure(failure)
        raise err
    if status == RunStatus.TIMED_OUT:
        raise WorkflowTimedOutError(
            f"workflow {wid!r} (run {rid}) reached its execution timeout",
            workflow_id=wid,
            run_id=rid,
        )
    if status == RunStatus.CANCELLED:
        raise WorkflowCancelledError(
            f"workflow {wid!r} (run {rid}) was cancelled", workflow_id=wid, run_id=rid
        )
    if status == RunStatus.TERMINATED:
        reason = summary.failure.message if summary.failure is not None else ""
        raise WorkflowTerminatedError(
            f"workflow {wid!r} (run {rid}) was terminated" + (f": {reason}" if reason else ""),
            workflow_id=wid,
            run_id=rid,
            reason=reason,
        )
    if status == RunStatus.CORRUPT:
        raise corrupt_history_error(summary)
    if status == RunStatus.CONTINUED_AS_NEW:
        raise WorkflowContinuedAsNewError(
            f"workflow {wid!r} run {rid} continued as new run {summary.new_run_id}",
            workflow_id=wid,
            run_id=rid,
            new_run_id=summary.new_run_id or "",
        )
    raise WorkflowExecutionError(
        f"workflow {wid!r} (run {rid}) is still {status}", workflow_id=wid, run_id=rid
    )
