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

from nats.aio.msg import Msg

from durablefuture.core.errors import PayloadError, TransportError
from durablefuture.transport.consumer import stream_sequence
from durablefuture.transport.guard import max_payload
from durablefuture.transport.headers import REASON_HEADER
from durablefuture.transport.payload_gc import ORIGINAL_HEADER
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.publisher import Publisher

__all__ = ["dead_letter"]

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
    headers = {
        REASON_HEADER: _one_line(reason, MAX_REASON),
        "Df-Source": _one_line(source, 100),
        "Df-Subject": _one_line(msg.subject, 512),
    }
    seq = stream_sequence(msg)
    if seq:
        headers["Df-Stream-Seq"] = str(seq)
    data = msg.data or b""
    room = max_payload(pub.nc) - sum(len(k) + len(v) + 4 for k, v in headers.items()) - 400
    log.error("dead letter from %s: %s", source, headers[REASON_HEADER], extra={"source": source})
    try:
        if len(data) > room:
            headers["Df-Truncated"] = f"{len(data)} bytes, {room} kept"
            if payloads is not None:
                name = hashlib.sha256(data).hexdigest()
                await payloads.put(name, data)
                headers[ORIGINAL_HEADER] = name
            data = data[: max(0, room)]
        await pub.publish(subject, data, headers)
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
