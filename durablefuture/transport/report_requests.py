"""Worker reports as core-NATS requests to df-server, with the stored input as the fallback.

A report used to be stored on ``df.<ns>.in.report`` (one fsynced write), pulled by a df-server,
recorded in the run's history (a second write) and then purged. Asked on
``dfev.<ns>.report`` instead (queue group ``df-server``: one server takes each request), the
server records it at once and answers only after the history append: the report itself is
never stored. The answer is one of three words:

- ``recorded``: in the run's history (or found there already: a report is recorded once per
  input id, so a retry or a late duplicate adds nothing);
- ``refused``: not a report df-server may believe; stored as a dead letter with the reason;
- anything else, no answer within :data:`ANSWER_WAIT`, or nobody listening: the worker stores
  the report on ``df.<ns>.in.report`` as before. So a report is never lost to a df-server that
  is busy, stopping or killed, and nothing needs a df-server to be up.

A report asked with a receipt (``Df-Answer-Receipt``) is answered ``recorded <seq> <batch>``
instead: the batch df-server appended for it (the receipt, which would otherwise follow on
the worker's receipt subject as a message of its own) and its stream sequence. The answer
comes only after the append and the batch's effects are stored, on the asker's reply token
(unguessable: ``ReplyInbox``); a worker applies a receipt only once its report is answered
anyway (it holds the run's lock while it asks), so nothing waits longer for it. A report
stored instead has no answer: df-server sends its receipt to the receipt subject as before.

A report asked with ``Df-Eager: <n>`` as well (the worker runs activities of the run's task
queue, and has free slots) may be answered ``eager <seq> <granted> <batch>``: the same
receipt, and the activity seqs (comma-separated) whose first attempts df-server granted to
the worker instead of storing their tasks (eager activity dispatch, ``server/grants.py``).
The worker runs them as it would their tasks; one it does not run (it stopped, died, or the
answer came too late) is recorded timed out when the check list naming it fires, unless the
worker stored its report instead (no usable answer), naming the request (``Df-Eager-Ask``):
then df-server stores the tasks of that request's grants as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from durablefuture.core.errors import TransportError
from durablefuture.transport.replies import ReplyInbox

__all__ = [
    "ANSWER_WAIT",
    "EAGER",
    "MAX_GRANTED",
    "RECORDED",
    "REFUSED",
    "STORE",
    "Answer",
    "ask_report",
    "parse_answer",
    "parse_granted",
    "recorded_with",
    "stream_seq",
]

RECORDED = b"recorded"
EAGER = b"eager"
REFUSED = b"refused"
STORE = b"store"
ANSWER_WAIT = 1.0
"""Seconds a worker waits for the answer before it stores the report instead (a df-server
killed while it held the request answers never; a late answer costs only a duplicate)."""
_SEQ_DIGITS = 20
"""At most this many digits in an answer's stream sequence (a uint64 has 20)."""
_SEQ_MAX = 2**64 - 1
"""The largest stream sequence (JetStream's are uint64)."""
MAX_GRANTED = 16
"""Activity seqs an answer may grant at most (anything more is not well formed)."""
_ACTIVITY_SEQ_DIGITS = 10


@attrs.frozen
class Answer:
    """A df-server's answer to a report request."""

    word: bytes
    """:data:`RECORDED`, :data:`REFUSED` or :data:`STORE`."""
    receipt: bytes = b""
    """With ``recorded``: the batch appended for the report, if the answer carries it (else
    empty: a duplicate, or a receipt sent apart)."""
    seq: int = 0
    """The batch's stream sequence."""
    granted: tuple[int, ...] = ()
    """The activity seqs whose first attempts the worker is to run itself."""


def recorded_with(seq: int, batch: bytes, granted: Sequence[int] = ()) -> bytes:
    """The answer ``recorded`` carrying the receipt: ``batch`` appended at ``seq``; with
    ``granted`` activity seqs, the answer ``eager``."""
    if granted:
        seqs = b",".join(b"%d" % g for g in granted)
        return b"%s %d %s %s" % (EAGER, seq, seqs, batch)
    return b"%s %d %s" % (RECORDED, seq, batch)


def parse_granted(text: bytes) -> tuple[int, ...] | None:
    """The activity seqs a grant names (``1,2``), at most ``MAX_GRANTED``; None if not well
    formed."""
    return _granted(text)


def _granted(text: bytes) -> tuple[int, ...] | None:
    parts = text.split(b",")
    if not 0 < len(parts) <= MAX_GRANTED:
        return None
    out: list[int] = []
    for part in parts:
        if not 0 < len(part) <= _ACTIVITY_SEQ_DIGITS or not part.isdigit():
            return None
        out.append(int(part))
    return tuple(out)


def parse_answer(answer: bytes) -> Answer:
    """What an answer means; anything not well formed means :data:`STORE` (a stored report
    costs a duplicate at most, a report taken for recorded that is not would be lost)."""
    if answer in (RECORDED, REFUSED):
        return Answer(answer)
    head, _, rest = answer.partition(b" ")
    if head not in (RECORDED, EAGER):
        return Answer(STORE)
    seq, _, batch = rest.partition(b" ")
    granted: tuple[int, ...] | None = ()
    if head == EAGER:
        seqs, _, batch = batch.partition(b" ")
        granted = _granted(seqs)
    number = stream_seq(seq)
    if number is None or not batch or granted is None:
        # an eager answer not well formed: the report may still be recorded, but a stored
        # duplicate costs nothing, and the grants not read are covered by their check list
        return Answer(STORE)
    return Answer(RECORDED, batch, number, granted)


def stream_seq(text: bytes | str) -> int | None:
    """A stream sequence as an answer or a receipt's ``Df-Seq`` header names it: 1 to 20 ASCII
    digits, at most a uint64; None for anything else (no stream has it: a cached run given it
    would read from past its stream's end)."""
    if not 0 < len(text) <= _SEQ_DIGITS:
        return None
    digits = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    return number if number <= _SEQ_MAX else None


async def ask_report(
    replies: ReplyInbox,
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    wait: float = ANSWER_WAIT,
) -> Answer:
    """Ask a df-server to record a report (the answer comes back on ``replies``, the
    worker's one inbox): :data:`RECORDED` (with the receipt, if it carries one),
    :data:`REFUSED` or :data:`STORE` (store it on the input subject instead). Never raises a
    transport error."""
    try:
        answer = await replies.ask(subject, data, wait, headers)
    except TransportError:
        return Answer(STORE)
    return parse_answer(answer)
