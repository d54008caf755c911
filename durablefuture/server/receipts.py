"""Receipts carried in the answer to a worker's report request.

A report asked of df-server with ``Df-Answer-Receipt`` has the batch appended for it (its
receipt) in the ``recorded`` answer instead of in a message of its own to the worker's receipt
subject (``transport/report_requests.py``). The answer goes out only once the append and the
batch's effects are stored; the worker applies a receipt only once its report is answered
anyway (it asks holding the run's lock), so nothing waits longer for it.
"""

from __future__ import annotations

import asyncio
import contextvars

import attrs

from durablefuture.transport.publisher import PubAck
from durablefuture.transport.report_requests import MAX_GRANTED

__all__ = [
    "ANSWERED_RECEIPT",
    "MAX_EAGER",
    "UNANSWERED_ASK",
    "AnsweredReceipt",
    "eager_ask",
    "eager_offer",
]

MAX_EAGER = MAX_GRANTED
"""Activity attempts one report request is granted at most (eager activity dispatch)."""
_ANSWER_ROOM = 64 + 11 * MAX_EAGER
"""Bytes an answer adds to the batch it carries (``recorded <seq> ``, or ``eager <seq>
<granted seqs> ``), with room to spare."""


@attrs.define
class AnsweredReceipt:
    """Where a report request whose answer carries its receipt gets it: the batch appended
    for the report to run ``run_id``, and its stream sequence."""

    run_id: str
    seq: int = 0
    batch: bytes = b""
    eager: int = 0
    """Activity attempts the worker offered to run itself (``Df-Eager``; 0: none)."""
    ask: str = ""
    """The request's id (``Df-Eager-Ask``; empty: nothing is granted)."""
    began: float = 0.0
    """``time.monotonic()`` when the request was taken."""
    early: dict[int, asyncio.Future[PubAck]] = attrs.field(factory=dict)
    """Activity seqs the batch schedules, listed on a check list while it was appended (the
    future resolves once the list is stored); granted only if the append succeeded."""
    granted: list[int] = attrs.field(factory=list)
    """The activity seqs granted to the worker (their first attempts are on a check list)."""
    answered: bool = False
    """The answer is made: nothing is granted any more (work started while the request
    was handled, a local timer, keeps this context)."""

    def takes(self, run_id: str, seq: int, batch: bytes, max_payload: int) -> bool:
        """Keep ``batch``, appended at ``seq`` to ``run_id``, for the answer, if it is this
        report's run and the answer fits in a message (else the receipt is sent apart)."""
        if run_id != self.run_id or len(batch) + _ANSWER_ROOM > max_payload:
            return False
        self.seq, self.batch = seq, batch
        return True

    def spend(self) -> bytes:
        """The batch kept for the answer, no longer kept: work the request's handling
        started (a pending status write) keeps its context, and with it this receipt, for
        seconds after the answer; the batch is the only large part of it."""
        batch, self.batch = self.batch, b""
        return batch


def eager_offer(value: str) -> int:
    """What a ``Df-Eager`` header offers: 1 to 3 ASCII digits, at most ``MAX_EAGER``; 0 for
    anything else (no grant)."""
    if not 0 < len(value) <= 3 or not (value.isascii() and value.isdigit()):
        return 0
    return min(int(value), MAX_EAGER)


def eager_ask(value: str) -> str:
    """What a ``Df-Eager-Ask`` header names: 1 to 16 lowercase hex digits; "" for anything
    else."""
    if not 0 < len(value) <= 16 or value.strip("0123456789abcdef"):
        return ""
    return value


UNANSWERED_ASK: contextvars.ContextVar[str] = contextvars.ContextVar(
    "durablefuture_unanswered_ask", default=""
)
"""Set while a stored report is handled: the ``Df-Eager-Ask`` of the request its worker made
first and got no usable answer to (its grants were never run)."""

ANSWERED_RECEIPT: contextvars.ContextVar[AnsweredReceipt | None] = contextvars.ContextVar(
    "durablefuture_answered_receipt", default=None
)
"""Set while a report request whose answer carries the receipt is handled (only where an
input is recorded with a receipt subject is it looked at)."""
