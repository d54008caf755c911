"""The meta records of the payload bucket, read and written without roll-ups.

An object of the bucket ``DF_<ns>_payloads`` is its chunks (``$O.<bucket>.C.<nuid>``) and its
meta records (``$O.<bucket>.M.<base64 name>``, the JSON nats-py and the ``nats`` CLI write). The
bucket's stream refuses roll-up headers, so no writer can replace what is stored under a name:
every put *adds* a meta record, and an object is readable as long as one of its records names
chunks that hold the bytes it is named by (the SHA-256). A "deleted" record published by a
client or a worker hides nothing; only df-server deletes, by purging the subjects (an API only
the server role may call).

Records are read with ``STREAM.MSG.GET`` from the stream leader; each read is bounded by
:data:`MAX_RECORDS`. The time that counts is the one JetStream stored the record at: nats-py's
``get_info`` leaves ``mtime`` as the writer put it in the JSON (its own clock, and anyone's
claim), and its ``put`` of an existing name uploads every chunk again and then purges the old
ones (which only the server role may do). A touch here is one meta record of a few hundred
bytes, a copy of a live one. The stored time of the newest record is the object's last put: a writer
that finds its object puts again ("touches") once it is older than :data:`TOUCH_AFTER`, and
df-server deletes an object no run refers to only once it is older than its grace period.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from attrs import frozen
from nats.aio.client import Client as NATS

from durablefuture.codec.jsapi import api_reply
from durablefuture.core.errors import TransportError
from durablefuture.transport.compaction import purge
from durablefuture.transport.stored import Stored, leader_get

__all__ = [
    "MAX_RECORDS",
    "PAYLOAD_GRACE",
    "TOUCH_AFTER",
    "MetaRecord",
    "has_chunks",
    "meta_subject",
    "newest_record",
    "purge_object",
    "records",
    "stored_seconds",
]

PAYLOAD_GRACE = 3600.0
"""Seconds an object no run refers to is kept after its last put (df-server's default)."""
TOUCH_AFTER = PAYLOAD_GRACE / 4
"""A writer that finds its object already stored puts a new meta record when the newest is
older than this, so an object a new message names is never within reach of the grace period
(a quarter of it: room for clocks a little apart and inputs waiting in the queue)."""
MAX_RECORDS = 32
"""The most meta records read for one object."""
MAX_CHUNKS = 4096
"""The most chunk messages read to check what they hold before they are purged."""
GET_TIMEOUT = 5.0
_NAME = re.compile(r"^[0-9a-f]{64}$")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")

_NUID = re.compile(r"[0-9A-Za-z]{1,64}")
"""A chunk set's name as records may give it (ASCII only: what a deletion marker's cut
lists must read back the same)."""


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def stored_seconds(stamp: str) -> float | None:
    """Seconds since the epoch of a JetStream time stamp (RFC 3339, nanoseconds); None if it
    is not one."""
    m = _STAMP.match(stamp.strip())
    if m is None:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    try:
        when = datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")
    except ValueError:
        return None
    return when.astimezone(UTC).timestamp()


@frozen
class MetaRecord:
    """One meta record of an object, as stored (every field checked before use)."""

    seq: int
    stored_at: float | None
    nuid: str
    size: int
    digest: str
    deleted: bool
    raw: bytes

    @property
    def live(self) -> bool:
        return not self.deleted and bool(self.nuid)

    @classmethod
    def parse(cls, msg: Stored) -> MetaRecord:
        try:
            body = api_reply(msg.data)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        nuid, size, digest = body.get("nuid"), body.get("size"), body.get("digest")
        ok = isinstance(nuid, str) and _NUID.fullmatch(nuid) is not None
        return cls(
            msg.seq,
            stored_seconds(msg.time),
            nuid if ok and isinstance(nuid, str) else "",
            size if isinstance(size, int) and size >= 0 else 0,
            digest if isinstance(digest, str) else "",
            body.get("deleted") is True or not ok,
            msg.data,
        )


def _stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


async def newest_record(nc: NATS, bucket: str, name: str) -> MetaRecord | None:
    """The newest meta record of ``name`` (None: no record at all)."""
    msg = await leader_get(
        nc,
        _stream(bucket),
        {"last_by_subj": meta_subject(bucket, name)},
        f"the meta record of payload {name[:16]}...",
        GET_TIMEOUT,
    )
    return None if msg is None else MetaRecord.parse(msg)


async def records(nc: NATS, bucket: str, name: str, upto: int | None = None) -> list[MetaRecord]:
    """The meta records of ``name``, oldest first (at most :data:`MAX_RECORDS`); with ``upto``
    (a sequence of the bucket's stream), only those stored up to it."""
    what = f"the meta records of payload {name[:16]}..."
    found = []
    async for msg in _stored(nc, bucket, meta_subject(bucket, name), MAX_RECORDS, what):
        if upto is not None and msg.seq > upto:
            break
        found.append(MetaRecord.parse(msg))
    return found


async def _stored(
    nc: NATS, bucket: str, subject: str, limit: int, what: str
) -> AsyncIterator[Stored]:
    """The messages stored on ``subject`` in the bucket's stream, oldest first, at most
    ``limit``, each read from the stream leader."""
    seq = 0
    for _ in range(limit):
        msg = await leader_get(
            nc, _stream(bucket), {"next_by_subj": subject, "seq": seq + 1}, what, GET_TIMEOUT
        )
        if msg is None:
            return
        yield msg
        seq = msg.seq


async def purge_object(nc: NATS, bucket: str, name: str, upto: int | None = None) -> bool:
    """Purge the chunks the meta records of ``name`` name that hold its bytes, then its meta
    records (df-server only: the other roles may not purge). With ``upto`` (a sequence of the
    bucket's stream), only the records stored up to it and the chunks they name: a record put
    later, and chunks only it names, stay. False if there was no such record."""
    if not _NAME.match(name):
        raise TransportError(f"not the name of a payload object: {name[:80]!r}")
    found = await records(nc, bucket, name, upto)
    if not found:
        return False
    stream = _stream(bucket)
    for nuid in sorted({r.nuid for r in found if r.nuid}):
        if await _chunks_hold(nc, bucket, nuid, name):
            await purge(nc, stream, f"$O.{bucket}.C.{nuid}")
    below = 0 if upto is None else upto + 1
    await purge(nc, stream, meta_subject(bucket, name), below_seq=below)
    return True


EMPTY_NAME = hashlib.sha256(b"").hexdigest()
"""The one object a record of size 0 may stand for."""


async def has_chunks(nc: NATS, bucket: str, record: MetaRecord, name: str) -> bool:
    """Whether the chunks ``record`` names are still stored (not read: one of them is looked
    for; readers check the bytes against the name). A record of size 0 names no chunks: it
    holds only the empty payload (anyone who may put objects may write one under any name)."""
    if not record.size:
        return name == EMPTY_NAME
    found = await leader_get(
        nc,
        _stream(bucket),
        {"last_by_subj": f"$O.{bucket}.C.{record.nuid}"},
        f"the chunks of payload {record.nuid[:16]}",
        GET_TIMEOUT,
    )
    return found is not None


async def _chunks_hold(nc: NATS, bucket: str, nuid: str, name: str) -> bool:
    """Whether the chunks ``nuid`` hold, all of them together, the bytes ``name`` is the
    digest of. Only then are they this object's to purge: a meta record is anyone's to write,
    and one may name the chunks of another object (those are left, and so are chunks that
    something appended to)."""
    digest = hashlib.sha256()
    n = 0
    what = f"the chunks of payload {name[:16]}..."
    async for msg in _stored(nc, bucket, f"$O.{bucket}.C.{nuid}", MAX_CHUNKS, what):
        digest.update(msg.data)
        n += 1
    # all MAX_CHUNKS read: more may follow, so the bytes are not known to be the object's
    return 0 < n < MAX_CHUNKS and digest.hexdigest() == name
