"""A PubAck that says ``duplicate`` is believed only when the stream holds our message.

JetStream drops a message whose ``Nats-Msg-Id`` it already holds (stored within the stream's
duplicate window, on *any* subject of the stream) and acknowledges it as a duplicate of the
stored one, naming that one's sequence. So whoever may publish on some subject of a namespace's
stream can publish first with the id that a history append or a worker's report will use next
("squat" the id): the real message would be dropped while its writer believes it stored.

A duplicate acknowledgement is therefore checked: the message stored at its sequence, read from
the stream leader, must be ours: on the same subject, with the same body and the same value for
every header we sent. Then it is our own earlier send (a retry after a timeout, a resend after a
503) and the acknowledgement stands. Anything else (another subject, other bytes, nothing
stored there any more) is logged in one line and the message is published again under the same
id plus a fresh suffix of 64 random bits, drawn after the squat was seen, which nobody can have
used before; :class:`~durablefuture.core.errors.MessageIdTakenError` only if that keeps
failing. Why a second id never makes a second effect:

- History appends (:meth:`HistoryStore.append`) carry ``Nats-Expected-Last-Subject-Sequence``:
  the store takes at most one append per position whatever its id. A retry of an append that
  landed under the fresh id fails that check and is recognised by its bytes (read back).
- Worker reports (:func:`publish_report`) are deduplicated by df-server itself: every recorded
  batch carries its input id, and a report for an input a run has recorded already (or for an
  attempt or a workflow task that is closed) is classified duplicate or stale and adds no
  event. The message id only spares the stream a copy of a retry. A second copy of a report is
  harmless; a report lost to a squatted id is not (the activity's result would be lost: the
  attempt times out and runs again, or the run waits forever).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

from nats.js.api import PubAck

from durablefuture.core.errors import MessageIdTakenError, TransportError
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.stored import Stored, leader_get

__all__ = ["TRIES", "fresh_id", "is_copy", "log_taken", "publish_report", "stored_at", "taken"]

log = logging.getLogger(__name__)

TRIES = 3
"""Publishes of one message, the first under its own id, then under fresh ids."""


def fresh_id(msg_id: str) -> str:
    """``msg_id`` with an unguessable suffix (``<id>:<16 hex digits>``)."""
    return f"{msg_id}:{secrets.token_hex(8)}"


def is_copy(
    stored: Stored | None, subject: str, data: bytes, headers: Mapping[str, str] | None
) -> bool:
    """Whether ``stored`` is the message we sent: same subject, body and our headers."""
    if stored is None or stored.subject != subject or stored.data != data:
        return False
    return all(stored.headers.get(name) == value for name, value in (headers or {}).items())


async def stored_at(pub: Publisher, ack: PubAck) -> Stored | None:
    """The message the stream named in ``ack`` holds at the acknowledged sequence."""
    seq = int(ack.seq)
    return await leader_get(
        pub.nc, str(ack.stream), {"seq": seq}, f"stream {ack.stream} sequence {seq}", pub.timeout
    )


def log_taken(what: str, subject: str, msg_id: str, ack: PubAck, stored: Stored | None) -> None:
    """The one line that says a message id was taken by someone else."""
    held = (
        "nothing any more"
        if stored is None
        else f"a different message on {stored.subject[:100]!r}"
        if stored.subject != subject
        else "different bytes"
    )
    log.warning(
        "%s on %s: JetStream answered 'duplicate' for message id %r, but it holds %s under "
        "that id (stream %s sequence %s): someone else published with the id first (id "
        "squatting: check who may publish on the namespace's subjects) or the store is "
        "damaged; not stored, publishing it again under a fresh id",
        what,
        subject[:100],
        msg_id[:200],
        held,
        ack.stream,
        ack.seq,
        extra={"subject": subject, "msg_id": msg_id, "stream_seq": ack.seq},
    )


def taken(what: str, subject: str, msg_id: str) -> MessageIdTakenError:
    return MessageIdTakenError(
        f"{what} on {subject[:100]} was not stored: {TRIES} publishes, under message id "
        f"{msg_id[:200]!r} and fresh ones, were all answered 'duplicate' of a message that is "
        "not ours. Someone is publishing with our message ids (check who may publish on the "
        "namespace's subjects) or the store is damaged; it is retried like any transport error"
    )


async def publish_report(
    pub: Publisher, subject: str, data: bytes, headers: Mapping[str, str]
) -> PubAck:
    """Store a report for df-server, never losing it to a message id someone else took.

    The report's own ``Nats-Msg-Id`` is tried first (so a retry of ours stays one message);
    a duplicate acknowledgement that is not ours sends it again under a fresh id. That is safe
    because df-server records each input once, by its input id (see the module docstring).
    """
    sent = dict(headers)
    msg_id = sent.get(MSG_ID, "")
    for _ in range(TRIES):
        ack = await pub.publish(subject, data, sent)
        if not ack.duplicate or not msg_id:
            return ack
        try:
            stored = await stored_at(pub, ack)
        except TransportError as exc:  # cannot tell: a second copy is harmless, a loss is not
            log.debug("duplicate of %s on %s not checked: %s", msg_id, subject, exc)
            stored = None
        if is_copy(stored, subject, data, sent):
            return ack
        log_taken("a report", subject, sent[MSG_ID], ack, stored)
        sent[MSG_ID] = fresh_id(msg_id)
    raise taken("a report", subject, msg_id)
