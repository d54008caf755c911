"""Payload deletion's fence against a hostile user of the namespace: what any client or worker
may publish on the payload bucket's subjects (meta records, chunks) must neither turn a refusal
into a message admitted on bytes no reader accepts, nor keep a deletion's cut from counting."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import orjson
import pytest

from durablefuture.codec.envelope import CLAIM
from durablefuture.core.errors import PayloadError
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import payload_gc
from durablefuture.transport.payload_gc import collect, deletion
from durablefuture.transport.payload_meta import meta_subject, newest_record, purge_object
from durablefuture.transport.payload_store import (
    CHUNK_SIZE,
    MissingPayloadError,
    ObjectPayloads,
    mark_refs,
)
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


def _message(name: str) -> bytes:
    """A stored message naming object ``name`` by reference."""
    return b'{"%s": "%s"}' % (CLAIM.encode(), name.encode())


def _record(bucket: str, name: str, nuid: str, data: bytes) -> bytes:
    """A meta record in the object store's format, as any client or worker may publish."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    return orjson.dumps(
        {
            "name": name,
            "bucket": bucket,
            "nuid": nuid,
            "size": len(data),
            "chunks": -(-len(data) // CHUNK_SIZE),
            "digest": f"SHA-256={digest}",
        }
    )


async def _admitted(env: LocalEnvironment, run_id: str, name: str) -> bool:
    """Whether df-server stores a message of ``run_id`` naming object ``name``."""
    assert env.server is not None
    try:
        await mark_refs(env.server.pub, env.client.layout, run_id, _message(name))
    except MissingPayloadError:
        return False
    return True


@pytest.mark.xfail(
    strict=True,
    reason="admits() takes any live record whose chunk subject is not empty for the object: "
    "a client that publishes a record and chunks of other bytes under a deleted object's name "
    "makes a message in flight be admitted on bytes no reader accepts, instead of refused",
)
async def test_a_message_in_flight_past_a_deletion_is_not_admitted_on_forged_chunks() -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout, pub = env.client.layout, env.client.pub
        bucket = layout.payloads_bucket
        data = b"f" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        await ObjectPayloads(pub.js, layout).put(name, data)
        # a message naming it is on its way (a backlog) while nothing holds it: it is deleted
        assert await collect(env.server.pub, layout, name, grace=0.0, now=time.time())
        assert await newest_record(pub.nc, bucket, name) is None
        assert await deletion(pub.nc, layout, name) is None
        # a hostile client of the namespace publishes other bytes under the object's name
        junk = b"j" * len(data)
        for i in range(0, len(junk), CHUNK_SIZE):
            await pub.js.publish(f"$O.{bucket}.C.forged", junk[i : i + CHUNK_SIZE])
        await pub.js.publish(meta_subject(bucket, name), _record(bucket, name, "forged", data))
        # the message arrives: refused (its sender stores the payload anew), or stored on an
        # object a reader can read; never stored on bytes that are not the object's
        if await _admitted(env, "r1", name):
            try:
                assert await ObjectPayloads(pub.js, layout).get(name) == data
            except PayloadError as exc:
                pytest.fail(f"admitted a message whose object cannot be read: {exc}")


@pytest.mark.xfail(
    strict=True,
    reason="a writer trusts a record it published while its chunk subject is not empty "
    "(ObjectPayloads._holds): after a deletion purged the chunks under its touch, a client "
    "that publishes other bytes on that subject makes the writer skip the upload and "
    "df-server admit its message on bytes no reader accepts",
)
async def test_chunks_published_again_under_a_trusted_touch_are_not_taken_for_the_object() -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout, pub = env.client.layout, env.client.pub
        bucket = layout.payloads_bucket
        data = b"g" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        writer = ObjectPayloads(pub.js, layout)
        await writer.put(name, data)
        record = await newest_record(pub.nc, bucket, name)
        assert record is not None and record.live
        # the writer read the record, a deletion purged it, then the writer's touch landed
        assert await purge_object(env.server.nc, bucket, name)
        await writer._publish_meta(name, record.raw)
        # a hostile client publishes other bytes on the purged chunks' subject
        junk = b"k" * len(data)
        for i in range(0, len(junk), CHUNK_SIZE):
            await pub.js.publish(f"$O.{bucket}.C.{record.nuid}", junk[i : i + CHUNK_SIZE])
        # the writer puts the bytes for its next message, which df-server then handles
        await writer.put(name, data)
        if await _admitted(env, "r1", name):
            try:
                assert await ObjectPayloads(pub.js, layout).get(name) == data
            except PayloadError as exc:
                pytest.fail(f"admitted a message whose object cannot be read: {exc}")


async def test_a_forged_record_does_not_take_the_cut_from_a_deletion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = purge_object
    gate = asyncio.Event()
    waiting: list[int] = []

    async def gated(*args: Any) -> bool:  # the deleter stops before its purge
        waiting.append(1)
        await gate.wait()
        return await real(*args)

    monkeypatch.setattr(payload_gc, "purge_object", gated)
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout, pub = env.client.layout, env.client.pub
        bucket = layout.payloads_bucket
        data = b"h" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        writer = ObjectPayloads(pub.js, layout)
        await writer.put(name, data)
        # a hostile client adds a record naming a nuid of non-ASCII letters (no chunks)
        await pub.js.publish(
            meta_subject(bucket, name), _record(bucket, name, "\u00e9t\u00e9", data)
        )
        deleter = asyncio.create_task(
            collect(env.server.pub, layout, name, grace=0.0, now=time.time())
        )
        try:
            await wait_for(lambda: bool(waiting), timeout=10)
            marker = await deletion(pub.nc, layout, name)
            assert marker is not None
            # a writer puts the bytes while the deletion stands: stored anew past the cut
            await writer.put(name, data)
            new = await newest_record(pub.nc, bucket, name)
            assert new is not None and new.live and new.nuid != "\u00e9t\u00e9"
            # its message is admitted on that upload, which the deletion leaves
            assert marker.cut is not None, "the deletion marker is read without its cut"
            assert await _admitted(env, "r1", name)
        finally:
            gate.set()
            await deleter
        assert await ObjectPayloads(pub.js, layout).get(name) == data


@pytest.mark.xfail(
    strict=True,
    reason="a writer trusts the record of its own upload unread (ObjectPayloads._publish_meta) "
    "and df-server admits on a chunk subject that is not empty: a client that reads the "
    "bucket's stream and publishes on an upload's chunk subject while it is in progress "
    "leaves the object unreadable, and every message its writer sends naming it is admitted",
)
async def test_a_chunk_slipped_into_an_upload_in_progress_is_not_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout, pub = env.client.layout, env.client.pub
        bucket = layout.payloads_bucket
        hostile = pub.nc.jetstream()  # another user's view of the namespace
        data = b"i" * (300 * 1024)  # three chunks
        name = hashlib.sha256(data).hexdigest()
        writer = ObjectPayloads(pub.js, layout)
        real = writer.js.publish
        slipped: list[str] = []

        async def publish(subject: str, payload: bytes = b"", *args: Any, **kwargs: Any) -> Any:
            ack = await real(subject, payload, *args, **kwargs)
            if subject.startswith(f"$O.{bucket}.C.") and not slipped:
                # the hostile client sees the first chunk and publishes one of its own behind it
                slipped.append(subject)
                await hostile.publish(subject, b"z" * 1000)
            return ack

        monkeypatch.setattr(writer.js, "publish", publish)
        await writer.put(name, data)
        assert slipped
        # the writer's next message names the object again; df-server handles both
        await writer.put(name, data)
        if await _admitted(env, "r1", name):
            try:
                assert await ObjectPayloads(pub.js, layout).get(name) == data
            except PayloadError as exc:
                pytest.fail(f"admitted a message whose object cannot be read: {exc}")


async def test_a_message_in_flight_past_a_deletion_is_not_admitted_on_a_forged_empty_record() -> (
    None
):
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout, pub = env.client.layout, env.client.pub
        bucket = layout.payloads_bucket
        data = b"e" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        await ObjectPayloads(pub.js, layout).put(name, data)
        assert await collect(env.server.pub, layout, name, grace=0.0, now=time.time())
        assert await newest_record(pub.nc, bucket, name) is None
        # a hostile client publishes a record of no bytes under the object's name
        await pub.js.publish(meta_subject(bucket, name), _record(bucket, name, "empty", b""))
        if await _admitted(env, "r1", name):
            try:
                assert await ObjectPayloads(pub.js, layout).get(name) == data
            except PayloadError as exc:
                pytest.fail(f"admitted a message whose object cannot be read: {exc}")
