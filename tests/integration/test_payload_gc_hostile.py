"""Deleting payload objects under attack and after crashes: forged meta records, a deletion
stopped half-way, floods of dead letters. Whatever is sent, an object something still holds
stays readable, and a payload that was refused can be sent again and is then accepted."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import nats.errors
import orjson
import pytest

import durablefuture as df
from durablefuture.core.errors import RequestRejectedError, TransportError
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import payload_gc, payload_store
from durablefuture.transport.payload_gc import (
    ABANDONED_AFTER,
    ORIGINAL_HEADER,
    finish_deletions,
    sweep,
)
from durablefuture.transport.payload_meta import meta_subject, newest_record, purge_object
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.stored import leader_get
from tests.conftest import ROOT, Daemon, wait_for
from tests.integration.flows import echo_len, waiting_echo

pytestmark = pytest.mark.asyncio

BIG = "y" * (300 * 1024)  # travels by reference (payload object)


def _forged_meta(bucket: str, name: str, nuid: str, size: int) -> bytes:
    """A meta record in the object store's format, as any client or worker may publish."""
    return orjson.dumps(
        {"name": name, "bucket": bucket, "nuid": nuid, "size": size, "chunks": 3, "digest": ""}
    )


async def test_a_forged_meta_record_naming_another_objects_chunks_deletes_nothing_held() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        bucket = layout.payloads_bucket
        payloads = ObjectPayloads(js, layout)
        async with env.worker(task_queue="q", workflows=[waiting_echo]):
            held = await client.start_workflow(waiting_echo, BIG, id="held", task_queue="q")
            [victim] = await payloads.names()
            record = await newest_record(client.pub.nc, bucket, victim)
            assert record is not None and record.live
            original = await payloads.get(victim)
            # a client names the held object's chunks in a record of a name nothing holds,
            # and in a second record of the held object's own name
            junk = hashlib.sha256(b"never stored").hexdigest()
            forged = _forged_meta(bucket, junk, record.nuid, record.size)
            await js.publish(meta_subject(bucket, junk), forged)
            assert env.server is not None
            # every object without a holder goes now (no grace): the junk name does
            assert await sweep(env.server.pub, layout, grace=0.0, now=time.time() + 1) == 1
            assert await newest_record(client.pub.nc, bucket, junk) is None
            assert await payloads.get(victim) == original, "the held object lost its chunks"
            # a removal reaches the same deletion through a name a closed run held
            other = hashlib.sha256(b"another").hexdigest()
            await js.publish(
                meta_subject(bucket, other), _forged_meta(bucket, other, record.nuid, 9)
            )
            assert await purge_object(env.server.nc, bucket, other)
            assert await payloads.get(victim) == original, "the held object lost its chunks"
            await held.signal("go")
            assert await held.result(timeout=30) == len(BIG)


async def test_a_deletion_stopped_by_a_crash_is_finished_and_the_payload_accepted_again() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        assert env.server is not None
        server_pub = env.server.pub
        payloads = ObjectPayloads(js, layout)
        texts = {"retried": BIG, "quiet": "z" * (300 * 1024)}
        names = {}
        for key, text in texts.items():
            data = orjson.dumps(text)
            # the state a SIGKILL of df-server leaves between purging the object and purging
            # its deletion marker (payload_gc.collect)
            name = hashlib.sha256(data).hexdigest()
            await payloads.put(name, data)
            await server_pub.publish(layout.payload_deleting(name), b"", {})
            assert await purge_object(env.server.nc, layout.payloads_bucket, name)
            names[key] = name
        async with env.worker(task_queue="q", workflows=[echo_len]):
            # while the deletion is not finished, a start naming the object is refused
            with pytest.raises(RequestRejectedError) as refused:
                await client.start_workflow(echo_len, BIG, id="retried", task_queue="q")
            assert names["retried"] in str(refused.value)

            async def markers() -> int:
                found = 0
                for name in names.values():
                    found += (
                        await leader_get(
                            client.pub.nc,
                            layout.stream,
                            {"last_by_subj": layout.payload_deleting(name)},
                            "a deletion marker",
                            5.0,
                        )
                        is not None
                    )
                return found

            # a deletion marker this young may be one of a deletion under way: left alone
            await sweep(server_pub, layout, grace=3600.0, now=time.time())
            assert await markers() == 2
            # later, the janitor (objects put lately are kept) finishes both deletions
            now = time.time() + ABANDONED_AFTER
            assert await finish_deletions(server_pub, layout, grace=3600.0, now=now) == 1
            assert await markers() == 0, "a deletion stopped by a crash was left half-done"
            for key, text in texts.items():
                handle = await client.start_workflow(echo_len, text, id=key, task_queue="q")
                assert await handle.result(timeout=30) == len(text)
                assert (await handle.fetch_history())[0].args == (text,)  # type: ignore[union-attr]


async def test_a_flood_of_dead_letters_does_not_hide_the_holds_of_the_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payload_gc, "MAX_DEAD_LETTERS", 20)
    async with LocalEnvironment() as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        assert env.server is not None
        payloads = ObjectPayloads(js, layout)
        data = b"the whole original of a dead letter" * 10_000
        name = hashlib.sha256(data).hexdigest()
        # a worker floods its dead-letter subject (it may publish there) ...
        for i in range(25):
            await js.publish(
                layout.dead_letter("worker"), b"junk", headers={ORIGINAL_HEADER: str(i)}
            )
        # ... before a dead letter whose original is kept as an object
        await payloads.put(name, data)
        await js.publish(layout.dead_letter("worker"), data[:100], headers={ORIGINAL_HEADER: name})

        with pytest.raises(TransportError, match="dead letters"):  # logged; tried again later
            await sweep(env.server.pub, layout, grace=0.0, now=time.time() + 1)
        assert await payloads.get(name) == data, "a dead letter's original went"


async def test_a_forged_meta_record_does_not_stand_for_the_bytes_a_writer_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a writer waits this long for the chunks the forged record names (none) before it stores
    # the bytes anew; chunks that are stored come at once, so 2 s stands for the 10 s
    monkeypatch.setattr(payload_store, "CHUNK_TIMEOUT", 2.0)
    async with LocalEnvironment() as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        bucket = layout.payloads_bucket
        text = "w" * (300 * 1024)
        data = orjson.dumps(text)
        name = hashlib.sha256(data).hexdigest()
        # the name of a payload seen before (in a history that is gone, say): a client stores
        # a record under it naming chunks that hold nothing, before the bytes come again
        forged = _forged_meta(bucket, name, "N0THING0HERE", len(data))
        await js.publish(meta_subject(bucket, name), forged)
        async with env.worker(task_queue="q", workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, text, id="after", task_queue="q")
            assert await handle.result(timeout=60) == len(text)
            assert (await handle.fetch_history())[0].args == (text,)  # type: ignore[union-attr]
        assert await ObjectPayloads(js, layout).get(name) == data


async def test_sigkill_of_df_server_mid_sweep_loses_nothing_held_and_refuses_nothing_later(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    client = await df.Client.connect(url)
    client.request_timeout = 60
    layout, js = client.layout, client.pub.js
    payloads = ObjectPayloads(js, layout)
    server = await Server.connect(url, ServerOptions())
    await server.start()
    running = asyncio.create_task(server.run())
    sweeper: Daemon | None = None
    try:
        async with df.Worker(client, task_queue="q", workflows=[echo_len, waiting_echo]):
            held = {f"h{i}": str(i) * (300 * 1024) for i in range(3)}
            handles = [
                await client.start_workflow(waiting_echo, text, id=key, task_queue="q")
                for key, text in held.items()
            ]
            # what nothing holds: payloads a start may name again, and many small objects
            again = {f"a{i}": chr(ord("k") + i) * (300 * 1024) for i in range(3)}
            for text in again.values():
                data = orjson.dumps(text)
                await payloads.put(hashlib.sha256(data).hexdigest(), data)
            for i in range(300):
                data = f"filler {i}".encode()
                await payloads.put(hashlib.sha256(data).hexdigest(), data)
            names = await payloads.names()
            kept = {hashlib.sha256(orjson.dumps(t)).hexdigest(): t for t in held.values()}
            assert set(kept) <= names and len(names) == 306

            env = dict(os.environ)
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            sweeper = Daemon(
                "sweeper",
                ["tests.integration.sweeping_server", url],
                tmp_path / "sweeper.log",
                env,
            ).start()

            bucket = layout.payloads_bucket

            async def sweeping() -> bool:
                # one request: the objects whose meta subject is still stored. Not a listing
                # (``payloads.names()``): nats-py's waits for the last meta record it was
                # told of, and one the sweep purges meanwhile never comes (up to a minute)
                try:
                    info = await js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.M.>")
                except (nats.errors.Error, TimeoutError):  # asked again on the next poll
                    return False
                return len(info.state.subjects or {}) < len(names)

            await wait_for(sweeping, timeout=60, interval=0.01)
            sweeper.kill()  # in the middle of its sweep
            stopped = await js.stream_info(
                layout.stream, subjects_filter=layout.payload_deleting("*")
            )
            print(
                f"killed with {len(await payloads.names())} of {len(names)} objects left, "
                f"{len(stopped.state.subjects or {})} deletion half-done"
            )
            for name, text in kept.items():
                assert await payloads.get(name) == orjson.dumps(text), "a held object went"
            # the next sweep (a later one) finishes what the killed one left
            await sweep(server.pub, layout, grace=0.0, now=time.time() + ABANDONED_AFTER)
            assert await payloads.names() == set(kept)
            info = await js.stream_info(layout.stream, subjects_filter=layout.payload_deleting("*"))
            assert not info.state.subjects, "deletion markers were left"
            for key, text in again.items():  # stored anew, and accepted
                handle = await client.start_workflow(echo_len, text, id=key, task_queue="q")
                assert await handle.result(timeout=30) == len(text)
            for handle, text in zip(handles, held.values(), strict=True):
                await handle.signal("go")
                assert await handle.result(timeout=30) == len(text)
    except BaseException:
        if sweeper is not None:
            print(sweeper.log())
        raise
    finally:
        if sweeper is not None:
            sweeper.kill()
        await server.shutdown()
        await running
        await client.close()
