"""The janitor's sweep beyond objects: chunks no meta record names go once older than the grace
period (and no sooner), and dead letters keep what their bodies name, within a bound past
which nothing is deleted."""

from __future__ import annotations

import hashlib
import time

import orjson
import pytest

from durablefuture.core.errors import TransportError
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import payload_gc
from durablefuture.transport.payload_gc import sweep
from durablefuture.transport.payload_meta import meta_subject, newest_record, purge_object
from durablefuture.transport.payload_store import ObjectPayloads

pytestmark = pytest.mark.asyncio


async def _chunks(env: LocalEnvironment) -> dict[str, int]:
    """Chunk messages stored in the payload bucket, by subject."""
    client = env.client
    bucket = client.layout.payloads_bucket
    info = await client.pub.js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
    return dict(info.state.subjects or {})


async def test_chunks_no_record_names_go_once_older_than_the_grace_and_no_sooner() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        layout, js, nc = client.layout, client.pub.js, client.pub.nc
        bucket = layout.payloads_bucket
        assert env.server is not None
        server = env.server
        payloads = ObjectPayloads(js, layout)
        data = b"a" * 300_000  # three chunks
        name = hashlib.sha256(data).hexdigest()
        await payloads.put(name, data)
        record = await newest_record(nc, bucket, name)
        assert record is not None and record.live
        chunks = f"$O.{bucket}.C."
        # a client appends to the object's chunks: its deletion leaves them (they no longer
        # hold its bytes), and nothing names them after
        await js.publish(chunks + record.nuid, b"appended")
        assert await purge_object(server.nc, bucket, name)
        # an upload cut short before its meta record; chunks a forged record names
        await js.publish(chunks + "CUTSHORT", b"x" * 100)
        await js.publish(chunks + "NAMED", b"y" * 100)
        junk = hashlib.sha256(b"never stored").hexdigest()
        forged = {"name": junk, "bucket": bucket, "nuid": "NAMED", "size": 100, "digest": ""}
        await js.publish(meta_subject(bucket, junk), orjson.dumps(forged))
        before = await _chunks(env)
        assert before == {chunks + record.nuid: 4, chunks + "CUTSHORT": 1, chunks + "NAMED": 1}

        # within the grace (an upload in progress looks the same): every chunk stays
        assert await sweep(server.pub, layout, grace=3600.0, now=time.time()) == 0
        assert await _chunks(env) == before
        # past it: the two orphans go, then the junk record; the chunks it named stay ...
        later = time.time() + 3600.0
        assert await sweep(server.pub, layout, grace=60.0, now=later) == 3
        assert await newest_record(nc, bucket, junk) is None
        assert await _chunks(env) == {chunks + "NAMED": 1}
        # ... until the next sweep, which finds that no record names them any more
        assert await sweep(server.pub, layout, grace=60.0, now=later) == 1
        assert await _chunks(env) == {}


async def test_a_dead_letter_past_the_byte_bound_keeps_every_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payload_gc, "MAX_DEAD_LETTER_BYTES", 64 * 1024)
    async with LocalEnvironment() as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        assert env.server is not None
        payloads = ObjectPayloads(js, layout)
        data = b"a refused signal's argument" * 20_000
        name = hashlib.sha256(data).hexdigest()
        await payloads.put(name, data)
        body = orjson.dumps({"signal_args": [{"$dfp": {"m": {"claim": name}, "d": ""}}]})
        # a large dead letter first, then the one whose body names the object
        await js.publish(layout.dead_letter("worker"), b"j" * (100 * 1024))
        await js.publish(layout.dead_letter("server-input"), body)
        later = time.time() + 3600.0
        with pytest.raises(TransportError, match="dead letters"):  # logged; tried again later
            await sweep(env.server.pub, layout, grace=60.0, now=later)
        assert await payloads.get(name) == data, "an object past the bound went"
        # within the bound, the body's name keeps it, and an object nothing names goes
        monkeypatch.setattr(payload_gc, "MAX_DEAD_LETTER_BYTES", 1024 * 1024)
        other = b"nothing names this" * 20_000
        await payloads.put(hashlib.sha256(other).hexdigest(), other)
        assert await sweep(env.server.pub, layout, grace=60.0, now=later) == 1
        assert await payloads.get(name) == data, "the dead letter's object went"
        assert await payloads.names() == {name}
