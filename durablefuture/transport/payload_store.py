"""The namespace's object store of payloads that travel by reference (claim-check).

Bucket ``DF_<ns>_payloads`` (stream ``OBJ_DF_<ns>_payloads``), created by df-server with the
namespace. Objects are named by the SHA-256 of their bytes, so a payload stored twice (a
retried report) is written once. Nothing here knows what a payload holds: the codec encodes
and decodes them (:mod:`durablefuture.codec.claims`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Collection, Iterable

import nats.errors
import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from durablefuture.codec.claims import claim_names
from durablefuture.core.errors import PayloadError, TransportError
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout

__all__ = [
    "ObjectPayloads",
    "delete_run_payloads",
    "ensure_payload_bucket",
    "mark_refs",
    "remove_object",
    "schedule_holder",
]

log = logging.getLogger(__name__)

CHUNK_TIMEOUT = 10.0
"""Seconds to wait for the next chunk of an object."""


async def ensure_payload_bucket(js: JetStreamContext, layout: Layout, replicas: int = 1) -> None:
    """Create the namespace's payload bucket if it does not exist (df-server only)."""
    bucket = layout.payloads_bucket
    try:
        await js.object_store(bucket)
        return
    except nats.js.errors.BucketNotFoundError:
        pass
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


class ObjectPayloads:
    """Puts and gets payload bytes in the namespace's payload bucket."""

    def __init__(self, js: JetStreamContext, layout: Layout) -> None:
        self.js = js
        self.bucket = layout.payloads_bucket
        self._store: ObjectStore | None = None
        self._lock = asyncio.Lock()

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

    async def put(self, name: str, data: bytes) -> None:
        store = await self._open()
        try:
            try:
                info = await store.get_info(name)
                if info.size == len(data):
                    return  # the same bytes (the name is their digest): stored already
            except nats.js.errors.ObjectNotFoundError:
                pass
            await store.put(name, data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"storing a payload of {len(data):,} bytes in {self.bucket}: {exc}"
            ) from exc

    async def get(self, name: str) -> bytes:
        store = await self._open()
        try:
            return await self._read(store, name)
        except nats.js.errors.ObjectNotFoundError:
            raise PayloadError(
                f"payload {name[:16]}... stored by reference is missing from {self.bucket}"
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"reading payload {name[:16]}... from {self.bucket}: {exc}"
            ) from exc

    async def _read(self, store: ObjectStore, name: str) -> bytes:
        """``ObjectStore.get``, naming the stream: nats-py would otherwise look it up by
        subject (STREAM.NAMES), which the worker and client roles may not do."""
        info = await store.get_info(name)
        if not info.size:
            return b""
        subject = f"$O.{self.bucket}.C.{info.nuid}"
        sub = await self.js.subscribe(subject, stream=f"OBJ_{self.bucket}", ordered_consumer=True)
        data = bytearray()
        try:
            while len(data) < info.size:
                msg = await sub.next_msg(timeout=CHUNK_TIMEOUT)
                data += msg.data
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if len(data) != info.size or (info.digest or "").split("=", 1)[-1] != digest:
            raise PayloadError(f"payload {name[:16]}... in {self.bucket} is incomplete or altered")
        return bytes(data)

    async def names(self) -> set[str]:
        """Every object in the bucket (reads the bucket's metadata, one message an object)."""
        store = await self._open()
        try:
            infos = await store.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            return set()  # an empty bucket
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"listing the objects of {self.bucket}: {exc}") from exc
        return {info.name for info in infos}

    async def delete(self, name: str) -> bool:
        """Delete one object (its chunks are purged); False if there was none by that name."""
        store = await self._open()
        try:
            await store.delete(name)
        except nats.js.errors.ObjectNotFoundError:
            return False
        except nats.js.errors.ObjectDeletedError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"deleting payload {name[:16]}... from {self.bucket}: {exc}"
            ) from exc
        return True


async def delete_run_payloads(
    payloads: ObjectPayloads, messages: Iterable[bytes], still_used: Collection[str] = ()
) -> list[str]:
    """Delete the stored payloads a deleted run referred to; returns the names deleted.

    ``messages`` are the raw stored messages of the run (its history messages; its status
    entry). An object may be shared: the same bytes stored by two runs (without a codec), or a
    reference the server copied into another run (continue-as-new arguments, a child's
    arguments, a signal to another run). Pass the names the runs that are kept still refer to
    as ``still_used`` (collect them with :func:`~durablefuture.codec.claims.claim_names`
    over their messages); those stay.
    """
    names: set[str] = set()
    for data in messages:
        names |= claim_names(data)
    deleted = []
    for name in sorted(names - set(still_used)):
        if await payloads.delete(name):
            deleted.append(name)
    return deleted


async def remove_object(js: JetStreamContext, layout: Layout, name: str) -> bool:
    """Delete payload object ``name`` with no trace left (its chunks and its meta record are
    purged; ``ObjectStore.delete`` would keep a "deleted" record). False if it was not there."""
    bucket = layout.payloads_bucket
    stream = f"OBJ_{bucket}"
    try:
        store = await js.object_store(bucket)
        info = await store.get_info(name, show_deleted=True)
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.BucketNotFoundError):
        return False
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"looking up payload {name[:16]}... in {bucket}: {exc}") from exc
    meta = base64.urlsafe_b64encode(name.encode()).decode()
    try:
        if info.nuid:
            await js.purge_stream(stream, subject=f"$O.{bucket}.C.{info.nuid}")
        await js.purge_stream(stream, subject=f"$O.{bucket}.M.{meta}")
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"deleting payload {name[:16]}... from {bucket}: {exc}") from exc
    return True


def schedule_holder(schedule_id: str) -> str:
    """The holder token a schedule marks its payload objects with (in place of a run id)."""
    return "s" + hashlib.sha256(schedule_id.encode()).hexdigest()[:32]


async def mark_refs(pub: Publisher, layout: Layout, run_id: str, data: bytes) -> None:
    """Record, before history message ``data`` of ``run_id`` is stored, which payload objects
    it refers to: an object is deleted with the last run naming it (``server/removals.py``)."""
    names = claim_names(data)
    if not names:
        return
    sends = [
        await pub.send(layout.payload_ref(name, run_id), b"", {MSG_ID: f"ref:{name}:{run_id}"})
        for name in sorted(names)
    ]
    for sent in sends:
        await sent
