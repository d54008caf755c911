"""Dead letters: one policy for every daemon. A message is terminated only once its dead
letter is stored; if storing fails, the message is kept (negatively acknowledged, with a delay)
and comes back later, so nothing that was refused is ever lost without a trace.

A message too large to fit in its dead letter beside the headers is cut; given the namespace's
payload store, its whole original is stored there first, as an object named by its SHA-256
(``Df-Original-Object``). The original in the stream goes once compaction passes it; the
object stays as long as the dead letter does (``transport/payload_gc.py``): read it with
``ObjectPayloads.get(name)`` or ``nats object get DF_<ns>_payloads <name>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Collection

import nats.js.errors
from nats.aio.msg import Msg

from durablefuture.core.errors import PayloadError, TransportError
from durablefuture.transport.consumer import stream_sequence
from durablefuture.transport.guard import max_payload
from durablefuture.transport.headers import REASON_HEADER
from durablefuture.transport.payload_gc import ORIGINAL_HEADER
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout

__all__ = ["dead_letter", "refuse_strays", "store_dead_letter"]

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REASON = 1000
RETRY_DELAY = 5.0


def _one_line(text: str, limit: int) -> str:
    return _UNPRINTABLE.sub(" ", text)[:limit]


async def dead_letter(
    pub: Publisher,
    subject: str,
    msg: Msg,
    source: str,
    reason: str,
    *,
    term: bool = True,
    payloads: ObjectPayloads | None = None,
) -> bool:
    """Store ``msg`` on the dead-letter ``subject`` with ``reason``, then terminate it.

    Returns False (and naks ``msg`` so it is delivered again later) when the dead letter could
    not be stored. The stored copy carries the reason, the source, the original subject and
    stream sequence; data too large to fit beside the headers is cut, and says so (and names
    the object holding all of it, given ``payloads``).
    """
    try:
        await store_dead_letter(
            pub,
            subject,
            msg.subject,
            msg.data or b"",
            stream_sequence(msg),
            source,
            reason,
            payloads=payloads,
        )
    except (TransportError, PayloadError) as exc:
        log.error(
            "could not store the dead letter (%s); the message is kept and retried in %gs",
            exc,
            RETRY_DELAY,
        )
        with contextlib.suppress(Exception):
            await msg.nak(delay=RETRY_DELAY)
        return False
    if term:
        with contextlib.suppress(Exception):
            await msg.term()
    return True


async def store_dead_letter(
    pub: Publisher,
    subject: str,
    original_subject: str,
    data: bytes,
    seq: int,
    source: str,
    reason: str,
    *,
    payloads: ObjectPayloads | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Store the dead letter of ``data``, stored at ``seq`` (0: unknown) on
    ``original_subject``, on ``subject`` (see :func:`dead_letter`); raises TransportError or
    PayloadError if it could not be stored. ``headers``: more headers (a message id)."""
    out = {
        **(headers or {}),
        REASON_HEADER: _one_line(reason, MAX_REASON),
        "Df-Source": _one_line(source, 100),
        "Df-Subject": _one_line(original_subject, 512),
    }
    if seq:
        out["Df-Stream-Seq"] = str(seq)
    room = max_payload(pub.nc) - sum(len(k) + len(v) + 4 for k, v in out.items()) - 400
    log.error("dead letter from %s: %s", source, out[REASON_HEADER], extra={"source": source})
    if len(data) > room:
        out["Df-Truncated"] = f"{len(data)} bytes, {room} kept"
        if payloads is not None:
            name = hashlib.sha256(data).hexdigest()
            await payloads.put(name, data)
            out[ORIGINAL_HEADER] = name
        data = data[: max(0, room)]
    await pub.publish(subject, data, out)


async def refuse_strays(
    pub: Publisher,
    layout: Layout,
    pattern: str,
    known: Collection[str],
    reason: Callable[[str], str],
    *,
    source: str,
    limit: int,
) -> int:
    """Dead-letter, then delete, up to ``limit`` messages stored on subjects matching
    ``pattern`` other than ``known`` (subjects no consumer reads); returns how many went.
    Several processes may do it at once: the dead letter carries a message id (one dead
    letter per message within JetStream's duplicate window)."""
    info = await pub.js.stream_info(layout.stream, subjects_filter=pattern)
    strays = [s for s in (info.state.subjects or {}) if s not in known]
    payloads = ObjectPayloads(pub.js, layout)
    done = 0
    for subject in strays:
        while done < limit:
            try:
                raw = await pub.js.get_msg(layout.stream, seq=1, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break  # none left on it
            seq = int(raw.seq or 0)
            await store_dead_letter(
                pub,
                layout.dead_letter(source),
                subject,
                raw.data or b"",
                seq,
                source,
                reason(subject),
                payloads=payloads,
                headers={MSG_ID: f"dl:{layout.stream}:{seq}"},
            )
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await pub.js.delete_msg(layout.stream, seq)
            done += 1
    return done
