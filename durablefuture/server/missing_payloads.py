"""What df-server records when an input names a payload object that went before the input was
handled (``transport/payload_gc.py``): the input cannot be stored as it is, and dropping it
would leave the run waiting for nothing (a workflow task or activity attempt for a worker's
report or a timer's firing, a child for the outcome df-server sends its parent)."""

from __future__ import annotations

from attrs import evolve

from durablefuture.core import inputs as inp
from durablefuture.core.failure import Failure
from durablefuture.core.state import RunState

__all__ = ["described", "instead_of_missing", "without_details"]


def instead_of_missing(state: RunState, message: inp.RunInput, reason: str) -> inp.RunInput | None:
    """The failure to record in place of ``message``, or None when it is to be refused (a
    client's request: its sender is answered with the reason).

    A worker's report becomes a failed attempt (retried: the next attempt stores its payloads
    anew). A child's outcome becomes the child's failure, naming the object: the child has
    closed and nothing can send its result again (its run, which held the object, was removed
    before the parent got it). Heartbeat details, the attempt's last checkpoint, are dropped
    first (a timer's firing, a failed attempt): the timeout or failure is recorded without
    them, and the next attempt starts with the details recorded before (if any); then a
    failure's own details (:func:`without_details`)."""
    failure = Failure(message=reason, type="MissingPayloadError")
    if isinstance(message, inp.FireTimer | inp.FailActivityTask) and message.heartbeat_details:
        return evolve(message, heartbeat_details=())
    if isinstance(message, inp.FailActivityTask):  # its failure's details name the object
        return evolve(message, failure=without_details(message.failure, reason))
    if isinstance(message, inp.CompleteWorkflowTask):
        last = state.last_wft_failure
        attempt = last.attempt + 1 if last is not None else 1
        return inp.FailWorkflowTask(
            message.run_id, message.based_on, failure, attempt, message.worker
        )
    if isinstance(message, inp.CompleteActivityTask):
        return inp.FailActivityTask(message.run_id, message.seq, message.attempt, failure)
    if isinstance(message, inp.RecordChildClosed):
        lost = Failure(
            message=f"the outcome of child run {message.child_run_id} cannot be delivered: "
            f"{reason}",
            type="MissingPayloadError",
        )
        return evolve(message, result=None, failure=lost)
    return None


def without_details(failure: Failure, reason: str) -> Failure:
    """``failure`` without its details and causes (one of them names the missing object), its
    type, kind and retry decision kept: a workflow still catches the error by its type, and
    an error its activity marked not to retry is not retried."""
    return Failure(
        message=f"{failure.message} (its details are lost: {reason})",
        type=failure.type,
        kind=failure.kind,
        stack=failure.stack,
        non_retryable=failure.non_retryable,
        type_hierarchy=failure.type_hierarchy,
        timeout_type=failure.timeout_type,
        next_retry_delay=failure.next_retry_delay,
    )


def described(message: inp.RunInput, instead: inp.RunInput) -> str:
    """What :func:`instead_of_missing` made of ``message``, for the log."""
    if type(instead) is type(message):
        if getattr(message, "heartbeat_details", ()) and not getattr(
            instead, "heartbeat_details", ()
        ):
            return f"{type(message).__name__} without its heartbeat details"
        if isinstance(instead, inp.FailActivityTask):
            return f"{type(message).__name__} without its failure's details"
        return f"{type(message).__name__} with a MissingPayloadError"
    return type(instead).__name__
