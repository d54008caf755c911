"""Every value of a KV bucket (``transport/buckets.read_values``): the keys come from the
stream's state, not from a watch that may end before it has given them all."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import KeyValueConfig

from durablefuture.natsserver import NatsServer
from durablefuture.transport.buckets import read_values

pytestmark = pytest.mark.asyncio


async def test_every_value_is_read_and_deleted_ones_are_not(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(KeyValueConfig(bucket="values", history=1))
        assert await read_values(kv) == []
        # keys with dots in them, more than one page of a watch's first delivery
        await asyncio.gather(*(kv.put(f"run.{i}.x", f"v{i}".encode()) for i in range(300)))
        for i in range(0, 300, 30):
            await kv.delete(f"run.{i}.x")
        await kv.purge("run.1.x")
        await kv.put("run.2.x", b"again")
        # and while others write: the list holds every key stored before it began
        writing = asyncio.gather(*(kv.put(f"new.{i}", b"n") for i in range(200)))
        values = await read_values(kv)
        await writing
        expected = {f"v{i}".encode() for i in range(300) if i % 30 and i not in (1, 2)}
        assert expected | {b"again"} <= set(values)
        assert set(values) - expected - {b"again"} <= {b"n"}
        assert not {b"v0", b"v30", b"v1", b"v2"} & set(values)
        assert sorted(await read_values(kv)) == sorted([*expected, b"again", *[b"n"] * 200])
    finally:
        await nc.close()
