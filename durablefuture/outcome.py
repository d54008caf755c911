"""Turn a closed run's status entry into the caller's value or the matching client error."""

from __future__ import annotations

from durablefuture.core.definitions import PayloadConverter
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import (
    WorkflowCancelledError,
    WorkflowContinuedAsNewError,
    WorkflowExecutionError,
    WorkflowFailedError,
    WorkflowTerminatedError,
    WorkflowTimedOutError,
)
from durablefuture.core.failure import exception_from_failure

__all__ = ["outcome_of"]


def outcome_of(
    summary: RunSummary, payloads: PayloadConverter, result_type: object = None
) -> object:
    """The run's result, or raise the ``WorkflowExecutionError`` subclass for how it ended."""
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
