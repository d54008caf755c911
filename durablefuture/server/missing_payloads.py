"""What df-server records when a worker's report names a payload object that went before the
report was handled (``transport/payload_gc.py``): the report cannot be stored as it is, and
dropping it would leave its workflow task or activity attempt waiting for nothing."""

from __future__ import annotations

from durablefuture.core import inputs as inp
from durablefuture.core.failure import Failure
from durablefuture.core.state import RunState

__all__ = ["instead_of_missing"]


def instead_of_missing(state: RunState, message: inp.RunInput, reason: str) -> inp.RunInput | None:
    """The failure to record in place of report ``message`` (retried: the next attempt stores
    its payloads anew), or None when ``message`` is not a worker's report (it is refused)."""
    failure = Failure(message=reason, type="MissingPayloadError")
    if isinstance(message, inp.CompleteWorkflowTask):
        last = state.last_wft_failure
        attempt = last.attempt + 1 if last is not None else 1
        return inp.FailWorkflowTask(
            message.run_id, message.based_on, failure, attempt, message.worker
        )
    if isinstance(message, inp.CompleteActivityTask):
        return inp.FailActivityTask(message.run_id, message.seq, message.attempt, failure)
    return None
