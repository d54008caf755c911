"""The namespace's object store of payloads that travel by reference (claim-check).

Bucket ``DF_<ns>_payloads`` (stream ``OBJ_DF_<ns>_payloads``), created by df-server with the
namespace. Objects are named by the SHA-256 of their bytes, so a payload stored twice (a
retried report) is written once. Nothing here knows what a payload holds: the codec encodes
and decodes them (:mod:`durablefuture.codec.claims`). Objects are written and read in the
object store's format, without roll-ups (:mod:`durablefuture.transport.payload_meta`); when
they are deleted is :mod:`durablefuture.transport.payload_gc`'s business.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from durablefuture.codec.claims import claim_names
from durablefuture.codec.jsapi import api_request
from durablefuture.core.errors import PayloadError, TransportError
from durablefuture.transport.payload_gc import admits, dead_letter_holds, deletion
from durablefuture.transport.payload_meta import (
    TOUCH_AFTER,
    MetaRecord,
    has_chunks,
    meta_subject,
    newest_record,
    purge_object,
    records,
)
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout

__all__ = [
    "MissingPayloadError",
    "ObjectPayloads",
    "delete_run_payloads",
    "ensure_payload_bucket",
    "mark_refs",
    "schedule_holder",
]

log = logging.getLogger(__name__)

CHUNK_TIMEOUT = 10.0
"""Seconds to wait for the next chunk of an object."""
CHUNK_SIZE = 128 * 1024
"""Bytes a chunk (nats-py's default)."""
TRUSTED = 1024
"""Meta records a writer remembers having read back (they hold the bytes they are named by)."""


async def ensure_payload_bucket(js: JetStreamContext, layout: Layout, replicas: int = 1) -> None:
    """Create the namespace's payload bucket if it does not exist, refusing roll-ups
    (df-server only; see :mod:`durablefuture.transport.payload_meta`)."""
    bucket = layout.payloads_bucket
    try:
        await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError:
        config = ObjectStoreConfig(
            bucket=bucket,
            description=f"DurableFuture namespace {layout.namespace}: payloads stored by reference",
            storage=StorageType.FILE,
            replicas=replicas,
        )
        try:
            await js.create_object_store(bucket, config)
            log.info("created object store %s", bucket)
        except nats.js.errors.APIError as exc:
            try:  # a concurrent server may have created it
                await js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                raise TransportError(f"cannot create object store {bucket}: {exc}") from exc
    info = await js.stream_info(f"OBJ_{bucket}")
    if info.config.allow_rollup_hdrs:
        # a roll-up would let any writer replace (or "delete") what a name holds
        info.config.allow_rollup_hdrs = False
        await js.update_stream(info.config)
        log.info("object store %s refuses roll-ups from now on", bucket)


class MissingPayloadError(TransportError):
    """A message names a payload object that is gone (or being deleted): it was refused."""

    def __init__(self, name: str, bucket: str) -> None:
        super().__init__(
            f"payload object {name} named by this message is no longer in {bucket} (the last "
            "run referring to it was removed before the message was handled); send it again: "
            "its payload is stored anew"
        )
        self.name = name


class ObjectPayloads:
    """Puts and gets payload bytes in the namespace's payload bucket."""

    def __init__(self, js: JetStreamContext, layout: Layout) -> None:
        self.js = js
        self.nc: NATS = js._nc
        self.layout = layout
        self.bucket = layout.payloads_bucket
        self._store: ObjectStore | None = None
        self._lock = asyncio.Lock()
        self._trusted: OrderedDict[tuple[str, int], None] = OrderedDict()

    async def _open(self) -> ObjectStore:
        async with self._lock:
            if self._store is None:
                try:
                    self._store = await self.js.object_store(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    raise TransportError(
                        f"object store {self.bucket} does not exist: start (or upgrade) df-server "
                        "for this namespace first; it creates it"
                    ) from None
                except (nats.errors.Error, TimeoutError) as exc:
                    raise TransportError(f"opening object store {self.bucket}: {exc}") from exc
            return self._store

    async def put(self, name: str, data: bytes, *, now: float | None = None) -> None:
        """Store ``data`` as object ``name`` (its SHA-256), unless a live meta record of the
        same size is there whose chunks hold ``data`` (read back once: anyone who may put
        objects may write a record naming chunks that hold nothing); one older than
        :data:`TOUCH_AFTER` gets a fresh copy (a touch). While a deletion marker is there, only
        a record put after its cut counts (``Deletion.spares`` in
        :mod:`~durablefuture.transport.payload_gc`): the others are being deleted, so the bytes
        are uploaded anew."""
        await self._open()
        try:
            marker = await deletion(self.nc, self.layout, name)

            def usable(r: MetaRecord) -> bool:
                return r.live and r.size == len(data) and (marker is None or marker.spares(r))

            newest = await newest_record(self.nc, self.bucket, name)
            found = newest if newest is not None and usable(newest) else None
            if newest is not None and found is None:
                # the newest is not usable (a "deleted" record, another size): any older one?
                found = next(
                    (r for r in await records(self.nc, self.bucket, name) if usable(r)), None
                )
                newest = None  # touch: the live record becomes the newest again
            if found is not None and await self._holds(found, name):
                age = (now or time.time()) - (newest.stored_at or 0.0) if newest else None
                if age is not None and age < TOUCH_AFTER:
                    return  # the same bytes (the name is their digest): stored lately
                await self._publish_meta(name, found.raw)
                return
            await self._upload(name, data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"storing a payload of {len(data):,} bytes in {self.bucket}: {exc}"
            ) from exc

    async def _holds(self, record: MetaRecord, name: str) -> bool:
        """Whether ``record``'s chunks hold the bytes ``name`` is the digest of: read back once,
        then trusted while its chunks are still stored (a deletion purges chunks, and a touch
        that lands after the purge names none: df-server would refuse messages naming it)."""
        key = (name, record.seq)
        if not await has_chunks(self.nc, self.bucket, record, name):
            self._trusted.pop(key, None)
            return False
        if key not in self._trusted:
            if await self._verified(record, name) is None:
                return False
            self._trusted[key] = None
            if len(self._trusted) > TRUSTED:
                self._trusted.popitem(last=False)
        return True

    async def _publish_meta(self, name: str, body: bytes) -> None:
        ack = await self.js.publish(meta_subject(self.bucket, name), body)
        self._trusted[(name, ack.seq)] = None  # written from bytes checked (or just uploaded)
        if len(self._trusted) > TRUSTED:
            self._trusted.popitem(last=False)

    async def _upload(self, name: str, data: bytes) -> None:
        nuid = self.nc._nuid.next().decode()
        chunks = f"$O.{self.bucket}.C.{nuid}"
        for i in range(0, len(data), CHUNK_SIZE):
            await self.js.publish(chunks, data[i : i + CHUNK_SIZE])
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        meta = {
            "name": name,
            "bucket": self.bucket,
            "nuid": nuid,
            "size": len(data),
            "chunks": -(-len(data) // CHUNK_SIZE),
            "mtime": datetime.now(UTC).isoformat(),
            "digest": f"SHA-256={digest}",
            "options": {"max_chunk_size": CHUNK_SIZE},
        }
        await self._publish_meta(name, api_request(meta))

    async def get(self, name: str) -> bytes:
        """The bytes of object ``name``: from the newest meta record, or else the oldest one
        whose chunks hold the bytes the name is the digest of (the others are skipped)."""
        await self._open()
        try:
            newest = await newest_record(self.nc, self.bucket, name)
            if newest is None:
                raise nats.js.errors.ObjectNotFoundError
            data = await self._verified(newest, name)
            if data is not None:
                return data
            older = [r for r in await records(self.nc, self.bucket, name) if r.live]
            for record in older:
                if record.seq != newest.seq:
                    data = await self._verified(record, name)
                    if data is not None:
                        return data
            if not newest.live and not older:
                raise nats.js.errors.ObjectNotFoundError
            raise PayloadError(f"payload {name[:16]}... in {self.bucket} is incomplete or altered")
        except nats.js.errors.ObjectNotFoundError:
            raise PayloadError(
                f"payload {name[:16]}... stored by reference is missing from {self.bucket}"
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"reading payload {name[:16]}... from {self.bucket}: {exc}"
            ) from exc

    async def _verified(self, record: MetaRecord, name: str) -> bytes | None:
        if not record.live:
            return None
        data = await self._read(record)
        if data is None or hashlib.sha256(data).hexdigest() != name:
            return None
        return data

    async def _read(self, record: MetaRecord) -> bytes | None:
        """The first ``record.size`` bytes of its chunks, read with an ordered consumer naming
        the stream (nats-py would otherwise look it up by subject, STREAM.NAMES, which the
        worker and client roles may not do); None if they are not all there."""
        if not record.size:
            return b""
        subject = f"$O.{self.bucket}.C.{record.nuid}"
        sub = await self.js.subscribe(subject, stream=f"OBJ_{self.bucket}", ordered_consumer=True)
        data = bytearray()
        try:
            while len(data) < record.size:
                msg = await sub.next_msg(timeout=CHUNK_TIMEOUT)
                data += msg.data
                if msg.metadata.num_pending == 0:
                    break
        except TimeoutError:
            return None
        finally:
            await sub.unsubscribe()
        return bytes(data[: record.size]) if len(data) >= record.size else None

    async def names(self) -> set[str]:
        """Every object in the bucket (reads the bucket's metadata, one message an object)."""
        store = await self._open()
        try:
            # bounded: nats-py's listing waits for a last entry that a purge running at the
            # same time (or a meta record it cannot parse) can take away
            infos = await asyncio.wait_for(store.list(ignore_deletes=True), 60.0)
        except nats.js.errors.NotFoundError:
            return set()  # an empty bucket
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"listing the objects of {self.bucket}: {exc}") from exc
        return {info.name for info in infos}

    async def delete(self, name: str) -> bool:
        """Delete one object now, whoever refers to it (its chunks and meta records are purged:
        df-server only); False if there was none by that name."""
        await self._open()
        return await purge_object(self.nc, self.bucket, name)


async def delete_run_payloads(
    payloads: ObjectPayloads, messages: Iterable[bytes], still_used: Collection[str] = ()
) -> list[str]:
    """Delete the stored payloads a deleted run referred to; returns the names deleted.

    ``messages`` are the raw stored messages of the run (its history messages; its status
    entry). An object may be shared: the same bytes stored by two runs (without a codec), or a
    reference the server copied into another run (continue-as-new arguments, a child's
    arguments, a signal to another run). Pass the names the runs that are kept still refer to
    as ``still_used`` (collect them with :func:`~durablefuture.codec.claims.claim_names`
    over their messages); those stay, and so do the objects dead letters keep (raises
    :class:`~durablefuture.transport.payload_gc.TooManyDeadLetters`, deleting nothing, when
    there are too many dead letters to read).
    """
    names: set[str] = set()
    for data in messages:
        names |= claim_names(data)
    if names:
        names -= await dead_letter_holds(payloads.js, payloads.layout)
    deleted = []
    for name in sorted(names - set(still_used)):
        if await payloads.delete(name):
            deleted.append(name)
    return deleted


def schedule_holder(schedule_id: str) -> str:
    """The holder token a schedule marks its payload objects with (in place of a run id)."""
    return "s" + hashlib.sha256(schedule_id.encode()).hexdigest()[:32]


async def mark_refs(pub: Publisher, layout: Layout, run_id: str, data: bytes) -> None:
    """Record, before history message ``data`` of ``run_id`` is stored, which payload objects
    it refers to: an object is deleted with the last run naming it (``server/removals.py``).

    Then check that each is still there and no deletion of it is under way (in this order:
    see :mod:`durablefuture.transport.payload_gc`); raises :class:`MissingPayloadError` when
    one is gone. The markers stay (taking them back could undo a marker the run had already:
    message ids dedupe); the run's removal purges them.
    """
    names = claim_names(data)
    if not names:
        return
    sends = [
        await pub.send(layout.payload_ref(name, run_id), b"", {MSG_ID: f"ref:{name}:{run_id}"})
        for name in sorted(names)
    ]
    for sent in sends:
        await sent
    for name in sorted(names):
        if not await admits(pub, layout, name):
            raise MissingPayloadError(name, layout.payloads_bucket)
