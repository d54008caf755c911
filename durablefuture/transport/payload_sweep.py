"""The janitor's reads of everything of a kind, bounded, and its sweep of orphaned chunks.

An object's bytes are chunks (``$O.<bucket>.C.<nuid>``) named by its meta records
(:mod:`durablefuture.transport.payload_meta`). Chunks no meta record names are no object's:

* an upload whose writer stopped (a crash, a SIGKILL) after some or all of its chunks and
  before its meta record, up to 64 MiB a crash;
* chunks :func:`~durablefuture.transport.payload_meta.purge_object` left because they did not
  hold the bytes of the object being deleted (something was appended to them, or a meta record
  of another object named them), once every record naming them is gone.

:func:`sweep_chunks` purges those once their newest chunk is older than the grace period: an
upload in progress writes a chunk at least every few seconds, and its meta record right after
its last chunk. Only the chunks up to the newest one read are purged, so a writer that goes on
appending keeps what it appends. Known limit: a writer that pauses longer than the grace period
between its last chunk and its meta record (a frozen process) writes a record naming chunks
that are gone; readers refuse that object as incomplete, and its next put of the same bytes
uploads them anew (a put reads back what a record names before it trusts it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import nats.errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from durablefuture.codec.jsapi import api_reply
from durablefuture.core.errors import TransportError
from durablefuture.transport.compaction import purge
from durablefuture.transport.payload_meta import stored_seconds
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.stored import leader_get
from durablefuture.transport.subjects import Layout
from durablefuture.transport.usage import count_messages, stream_subjects

__all__ = [
    "MAX_ORPHANS",
    "MAX_RECORDS_READ",
    "MAX_RECORD_BYTES",
    "ReadLimit",
    "named_chunks",
    "read_all",
    "sweep_chunks",
]

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
MAX_RECORDS_READ = 1_000_000
"""The most meta records read in one sweep to learn which chunks they name."""
MAX_RECORD_BYTES = 256 * 1024 * 1024
"""The most meta-record bytes read in one sweep (a record is a few hundred bytes as written;
anyone who may put objects may write larger ones)."""
MAX_ORPHANS = 10_000
"""The most chunk subjects purged in one sweep (the others wait for the next)."""
_NUID = re.compile(r"^[A-Za-z0-9_=-]{1,64}(?:\.[A-Za-z0-9_=-]{1,64}){0,3}$")
"""A chunk subject's tail: a nuid as uploads write it, or a few tokens anyone may publish
(never a wildcard: those cannot be published)."""


class ReadLimit(TransportError):
    """More messages (or bytes) than a bounded read takes: what they hold is not known."""


async def read_all(
    js: JetStreamContext, stream: str, subject: str, *, max_msgs: int, max_bytes: int
) -> AsyncIterator[Msg]:
    """Every message stored on ``subject`` (a wildcard) in ``stream``, oldest first, read whole
    with an ordered consumer; raises :class:`ReadLimit` (before reading, or on the way) when
    there are more than ``max_msgs`` of them or more than ``max_bytes`` of bodies and
    headers. Each message is at most the server's max message size."""
    total = await count_messages(js, stream, subject)
    if total == 0:
        return
    if total > max_msgs:
        raise ReadLimit(f"{total:,} messages on {subject} in {stream}, over {max_msgs:,}")
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    read = 0
    try:
        for _ in range(max_msgs):
            msg = await sub.next_msg(timeout=READ_TIMEOUT)
            read += len(msg.data) + sum(len(k) + len(v) for k, v in (msg.headers or {}).items())
            if read > max_bytes:
                break
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()
    raise ReadLimit(f"more than {max_bytes:,} bytes or {max_msgs:,} messages on {subject}")


async def named_chunks(js: JetStreamContext, bucket: str) -> set[str]:
    """The chunk subjects (nuids) any meta record of ``bucket`` names, live or not (reads
    every record: bounded by :data:`MAX_RECORDS_READ` and :data:`MAX_RECORD_BYTES`)."""
    named: set[str] = set()
    async for msg in read_all(
        js,
        f"OBJ_{bucket}",
        f"$O.{bucket}.M.>",
        max_msgs=MAX_RECORDS_READ,
        max_bytes=MAX_RECORD_BYTES,
    ):
        try:
            body = api_reply(msg.data)
        except ValueError:
            continue
        nuid = body.get("nuid") if isinstance(body, dict) else None
        if isinstance(nuid, str) and _NUID.match(nuid):
            named.add(nuid)
    return named


async def sweep_chunks(pub: Publisher, layout: Layout, *, grace: float, now: float) -> int:
    """Purge the chunks no meta record names whose newest chunk is older than ``grace``
    seconds (see the module docstring); returns how many chunk subjects went. Past
    :data:`MAX_RECORDS_READ` records nothing is purged (which chunks they name is not
    known); past :data:`MAX_ORPHANS` orphans, the rest go in the next sweeps."""
    js, nc = pub.js, pub.nc
    bucket = layout.payloads_bucket
    stream = f"OBJ_{bucket}"
    prefix = f"$O.{bucket}.C."
    try:  # the chunks first: a record stored after they are listed is read below
        listed = {s[len(prefix) :] for s in await stream_subjects(js, stream, f"{prefix}>")}
        orphans = listed - await named_chunks(js, bucket) if listed else set()
    except ReadLimit as exc:
        log.warning("%s: chunks no object names are kept until fewer records are", exc)
        return 0
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"listing the payload chunks of {bucket}: {exc}") from exc
    purged = 0
    for nuid in sorted(n for n in orphans if _NUID.match(n))[:MAX_ORPHANS]:
        subject = prefix + nuid
        newest = await leader_get(
            nc, stream, {"last_by_subj": subject}, f"the chunks {nuid}", READ_TIMEOUT
        )
        if newest is None:
            continue
        if (stored_seconds(newest.time) or now) > now - grace:
            continue  # an upload in progress, or cut short lately
        await purge(nc, stream, subject, below_seq=newest.seq + 1)
        purged += 1
    if purged:
        log.info("purged the chunks of %d uploads no object names", purged)
    return purged
