"""A payload deletion's cut: what a deletion marker says it deletes, and what df-server admits
while it stands (a record put after the cut, on chunks of its own) or after it (a record whose
chunks are still there). Whatever the marker's body, a message is either admitted on bytes no
deletion takes, or refused naming the object."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
import pytest

from durablefuture.codec.envelope import CLAIM
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import payload_gc
from durablefuture.transport.payload_gc import ABANDONED_AFTER, collect, deletion
from durablefuture.transport.payload_meta import (
    MAX_RECORDS,
    meta_subject,
    newest_record,
    purge_object,
)
from durablefuture.transport.payload_store import MissingPayloadError, ObjectPayloads, mark_refs
from durablefuture.transport.stored import leader_get
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


def _message(name: str) -> bytes:
    """A stored message naming object ``name`` by reference."""
    return b'{"%s": "%s"}' % (CLAIM.encode(), name.encode())


async def test_a_deletion_under_way_admits_only_a_new_upload_and_leaves_it() -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        server_pub = env.server.pub
        client = env.client
        layout, pub = client.layout, client.pub
        bucket = layout.payloads_bucket
        payloads = ObjectPayloads(pub.js, layout)
        data = b"c" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        await payloads.put(name, data)
        old = await newest_record(pub.nc, bucket, name)
        assert old is not None and old.live
        # a deletion under way: its marker names the record it deletes up to, and its chunks
        body = orjson.dumps({"cut": old.seq, "chunks": [old.nuid]})
        await server_pub.publish(layout.payload_deleting(name), body, {})
        marker = await deletion(pub.nc, layout, name)
        assert marker is not None and marker.cut == old.seq and marker.chunks == {old.nuid}
        with pytest.raises(MissingPayloadError, match=name):
            await mark_refs(server_pub, layout, "r1", _message(name))
        # a copy of the record (a touch) lands after the cut, but on the chunks being purged
        await pub.js.publish(meta_subject(bucket, name), old.raw)
        with pytest.raises(MissingPayloadError, match=name):
            await mark_refs(server_pub, layout, "r2", _message(name))
        # a writer that finds the marker stores the bytes anew, past the cut, on new chunks
        await payloads.put(name, data)
        new = await newest_record(pub.nc, bucket, name)
        assert new is not None and new.seq > old.seq and new.nuid != old.nuid
        await mark_refs(server_pub, layout, "r3", _message(name))  # admitted
        # a second writer reuses the new upload (nothing more stored)
        await payloads.put(name, data)
        assert (await newest_record(pub.nc, bucket, name)) == new
        # the deletion finished (by a janitor: its deleter stopped) leaves the new upload
        later = time.time() + ABANDONED_AFTER
        assert await collect(server_pub, layout, name, grace=0.0, now=later)
        assert await deletion(pub.nc, layout, name) is None
        assert await ObjectPayloads(pub.js, layout).get(name) == data
        await mark_refs(server_pub, layout, "r4", _message(name))  # admitted
        # the refs of r3 and r4 still hold it: no later deletion takes it
        assert not await collect(server_pub, layout, name, grace=0.0, now=later + 3600)
        assert await ObjectPayloads(pub.js, layout).get(name) == data


async def test_a_touch_landing_after_the_purge_is_not_taken_for_the_object() -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        server_pub = env.server.pub
        client = env.client
        layout, pub = client.layout, client.pub
        bucket = layout.payloads_bucket
        data = b"t" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        writer = ObjectPayloads(pub.js, layout)
        await writer.put(name, data)
        record = await newest_record(pub.nc, bucket, name)
        assert record is not None
        # the writer read the record, the deletion purged it, then the writer's touch landed
        assert await purge_object(env.server.nc, bucket, name)
        await writer._publish_meta(name, record.raw)  # a record it wrote: trusted
        touched = await newest_record(pub.nc, bucket, name)
        assert touched is not None and touched.live and touched.nuid == record.nuid
        # a live record whose chunks are gone: the message is refused, not stored unreadable
        with pytest.raises(MissingPayloadError, match=name):
            await mark_refs(server_pub, layout, "r1", _message(name))
        # the writer's next put finds no chunks behind its record, and stores the bytes anew
        await writer.put(name, data)
        stored = await newest_record(pub.nc, bucket, name)
        assert stored is not None and stored.nuid != record.nuid
        await mark_refs(server_pub, layout, "r2", _message(name))
        assert await ObjectPayloads(pub.js, layout).get(name) == data


@pytest.mark.parametrize(
    "body",
    [
        b"",  # an older df-server's marker
        b"not json",
        b'{"cut": "7", "chunks": []}',
        b'{"cut": 0, "chunks": []}',
        b'{"cut": 1, "chunks": ["a.b"]}',
        b'{"cut": 1, "chunks": [1]}',
        orjson.dumps({"cut": 1, "chunks": ["n"] * (MAX_RECORDS + 2)}),
        b'{"cut": 1, "chunks": []}' + b" " * 5000,  # past the bound
    ],
)
async def test_a_deletion_marker_that_does_not_say_its_cut_fences_and_deletes_everything(
    body: bytes,
) -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        server_pub = env.server.pub
        client = env.client
        layout, pub = client.layout, client.pub
        data = b"u" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        payloads = ObjectPayloads(pub.js, layout)
        await payloads.put(name, data)
        await server_pub.publish(layout.payload_deleting(name), body, {})
        marker = await deletion(pub.nc, layout, name)
        assert marker is not None and marker.cut is None
        await payloads.put(name, data)  # stored anew: no record counts while it stands
        with pytest.raises(MissingPayloadError, match=name):
            await mark_refs(server_pub, layout, "r1", _message(name))
        # finished by a janitor: every record goes, and so does the marker
        later = time.time() + ABANDONED_AFTER
        assert await collect(server_pub, layout, name, grace=3600.0, now=later)
        assert await newest_record(pub.nc, layout.payloads_bucket, name) is None
        found = await leader_get(
            pub.nc, layout.stream, {"last_by_subj": layout.payload_deleting(name)}, "", 5.0
        )
        assert found is None


async def test_a_deleter_that_wakes_late_leaves_a_later_upload_and_a_later_deletion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = payload_gc.purge_object
    gates: list[asyncio.Event] = []

    async def gated(*args: Any) -> bool:  # each purge waits until the test opens its gate
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return await real(*args)

    monkeypatch.setattr(payload_gc, "purge_object", gated)
    async with LocalEnvironment() as env:
        assert env.server is not None
        server_pub = env.server.pub
        client = env.client
        layout, pub = client.layout, client.pub
        data = b"w" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        payloads = ObjectPayloads(pub.js, layout)
        await payloads.put(name, data)
        # deleter A writes its marker and stops before its purge
        a = asyncio.create_task(collect(server_pub, layout, name, grace=0.0, now=time.time()))
        await wait_for(lambda: len(gates) == 1, timeout=10)
        marker_a = await deletion(pub.nc, layout, name)
        assert marker_a is not None and marker_a.cut is not None
        # a janitor takes A for stopped and finishes its deletion
        later = time.time() + ABANDONED_AFTER
        b = asyncio.create_task(collect(server_pub, layout, name, grace=0.0, now=later))
        await wait_for(lambda: len(gates) == 2, timeout=10)
        gates[1].set()
        assert await b
        assert await deletion(pub.nc, layout, name) is None
        # the bytes are put again; later, a deletion D of that upload begins and stops too
        await payloads.put(name, data)
        upload = await newest_record(pub.nc, layout.payloads_bucket, name)
        assert upload is not None and upload.seq > marker_a.cut
        d = asyncio.create_task(collect(server_pub, layout, name, grace=0.0, now=later))
        await wait_for(lambda: len(gates) == 3, timeout=10)
        marker_d = await deletion(pub.nc, layout, name)
        assert marker_d is not None and marker_d.seq > marker_a.seq
        # A wakes: it purges nothing past its cut, and leaves D's marker
        gates[0].set()
        assert not await a
        assert await newest_record(pub.nc, layout.payloads_bucket, name) == upload
        assert await deletion(pub.nc, layout, name) == marker_d
        # D goes on: the upload goes, and D's marker with it
        gates[2].set()
        assert await d
        assert await newest_record(pub.nc, layout.payloads_bucket, name) is None
        assert await deletion(pub.nc, layout, name) is None
