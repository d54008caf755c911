"""The payload store keeps what is still needed: no login but df-server's can make an object
unreadable, a dead letter keeps its whole original, writers touch what they reuse, and a
deletion under way refuses a message naming the object."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import timedelta

import orjson
import pytest

import durablefuture as df
from durablefuture.codec.envelope import CLAIM
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.server import ServerOptions
from durablefuture.server.effects import await_ack
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import payload_store
from durablefuture.transport.connection import connect
from durablefuture.transport.guard import max_payload
from durablefuture.transport.payload_gc import ORIGINAL_HEADER, collect, sweep
from durablefuture.transport.payload_meta import TOUCH_AFTER, meta_subject, newest_record
from durablefuture.transport.payload_store import (
    MissingPayloadError,
    ObjectPayloads,
    delete_run_payloads,
    mark_refs,
)
from durablefuture.transport.stored import leader_get
from durablefuture.transport.usage import stream_size
from tests.conftest import wait_for
from tests.integration.flows import echo_len

pytestmark = pytest.mark.asyncio

BIG = "x" * (300 * 1024)  # travels by reference (payload object)


async def test_worker_and_client_logins_cannot_make_a_payload_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a reader waits this long for the chunks a forged record names (none) before it goes on
    # to an older record; chunks that are stored come at once, so 2 s stands for the 10 s
    monkeypatch.setattr(payload_store, "CHUNK_TIMEOUT", 2.0)
    async with LocalEnvironment(auth=True) as env:
        client = env.client
        layout = client.layout
        bucket = layout.payloads_bucket
        async with env.worker(workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, BIG, id="victim")
            assert await handle.result(timeout=30) == len(BIG)
        server_nc = await connect(env.nats_url, creds=env.creds("server"), timeout=10)
        try:  # listing the bucket takes a stream lookup only the server role may do
            [name] = await ObjectPayloads(server_nc.jetstream(), layout).names()
        finally:
            await server_nc.close()
        for role in ("worker", "client"):
            nc = await connect(env.nats_url, creds=env.creds(role), timeout=10)
            try:
                js = nc.jetstream()
                store = await js.object_store(bucket)
                # nats-py's delete: a "deleted" meta record rolling up the others (refused:
                # no roll-ups), then a purge of the chunks (refused: only df-server purges)
                with pytest.raises(Exception):  # noqa: B017 - either refusal will do
                    await store.delete(name)
                # the same record without the roll-up, and one naming chunks that hold nothing
                subject = meta_subject(bucket, name)
                await js.publish(subject, b'{"name": "%s", "deleted": true}' % name.encode())
                forged = b'{"name": "%s", "nuid": "N0NE", "size": %d}' % (name.encode(), len(BIG))
                await js.publish(subject, forged)
                # every reader still gets the bytes the name stands for
                data = await ObjectPayloads(js, layout).get(name)
                assert hashlib.sha256(data).hexdigest() == name
            finally:
                await nc.close()
        # the stored history reads back whole, and a new run reusing the object completes
        assert (await handle.fetch_history())[0].args == (BIG,)  # type: ignore[union-attr]
        async with env.worker(workflows=[echo_len]):
            again = await client.start_workflow(echo_len, BIG, id="again")
            assert await again.result(timeout=30) == len(BIG)
        # two writers storing the same new object at once both succeed
        data = b"y" * (700 * 1024)
        new = hashlib.sha256(data).hexdigest()
        logins = [
            await connect(env.nats_url, creds=env.creds(r), timeout=10)
            for r in ("worker", "client")
        ]
        try:
            await asyncio.gather(
                *(ObjectPayloads(nc.jetstream(), layout).put(new, data) for nc in logins)
            )
            for nc in logins:
                assert await ObjectPayloads(nc.jetstream(), layout).get(new) == data
        finally:
            for nc in logins:
                await nc.close()


async def test_a_dead_letter_cut_to_size_keeps_its_whole_original_past_compaction() -> None:
    options = ServerOptions(payload_grace=0.5)
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        client = env.client
        layout = client.layout
        nc = client.pub.nc
        original = b"\x00not an input " * (max_payload(nc) // 14 - 8)
        await client.pub.publish(layout.input("start"), original)

        async def dead_letter():  # type: ignore[no-untyped-def]
            return await leader_get(
                nc, layout.stream, {"last_by_subj": layout.dead_letter("server-input")}, "", 5.0
            )

        dead = await wait_for(dead_letter, timeout=30)
        assert "Df-Truncated" in dead.headers and len(dead.data) < len(original)
        name = dead.headers.get(ORIGINAL_HEADER, "")
        assert name == hashlib.sha256(original).hexdigest()
        seq = int(dead.headers["Df-Stream-Seq"])

        async def compacted() -> bool:
            gone = await leader_get(nc, layout.stream, {"seq": seq}, "", 5.0)
            return gone is None

        await wait_for(compacted, timeout=30)
        sweeps = server.stats["payload_sweeps"]

        async def swept_twice() -> bool:
            return server.stats["payload_sweeps"] >= sweeps + 2

        await wait_for(swept_twice, timeout=30)
        # the original left the stream; the dead letter's object still holds all of it
        payloads = ObjectPayloads(client.pub.js, layout)
        assert await payloads.get(name) == original
        # once the dead letter is removed, its object goes too
        await client.pub.js.purge_stream(layout.stream, subject=layout.dead_letters())

        async def object_gone() -> bool:  # (a listing can wait for a record a purge took)
            return await newest_record(nc, layout.payloads_bucket, name) is None

        await wait_for(object_gone, timeout=30)


async def test_writers_touch_reused_objects_and_a_deletion_under_way_refuses_new_holders() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        layout = client.layout
        bucket = layout.payloads_bucket
        pub = client.pub
        payloads = ObjectPayloads(pub.js, layout)
        data = b"z" * (300 * 1024)
        name = hashlib.sha256(data).hexdigest()
        await payloads.put(name, data)
        first = await newest_record(pub.nc, bucket, name)
        assert first is not None and first.live
        objects = await stream_size(pub.js, f"OBJ_{bucket}")
        await payloads.put(name, data)  # found, put lately: nothing written
        assert await stream_size(pub.js, f"OBJ_{bucket}") == objects
        await payloads.put(name, data, now=time.time() + TOUCH_AFTER + 1)  # found, old: touched
        touched = await newest_record(pub.nc, bucket, name)
        assert touched is not None and touched.seq > first.seq and touched.nuid == first.nuid
        assert (await stream_size(pub.js, f"OBJ_{bucket}"))[0] == objects[0] + 1  # no chunk

        message = b'{"%s": "%s"}' % (CLAIM.encode(), name.encode())
        # a deletion under way (its marker stored; say its df-server was killed right then)
        await pub.publish(layout.payload_deleting(name), b"")
        with pytest.raises(MissingPayloadError, match=name):
            await mark_refs(pub, layout, "r1", message)
        # a holder's marker keeps the object from any deleter
        assert not await collect(pub, layout, name, grace=0.0, now=time.time())
        assert await payloads.get(name) == data
        # with no holder left, a later deleter finishes the deletion and clears its marker (an
        # hour on: a marker that old was left by a deleter that stopped)
        await pub.js.purge_stream(layout.stream, subject=layout.payload_ref(name, "r1"))
        assert await collect(pub, layout, name, grace=0.0, now=time.time() + 3600)
        assert await newest_record(pub.nc, bucket, name) is None
        with pytest.raises(df.DurableFutureError, match="missing"):
            await payloads.get(name)
        gone = await leader_get(
            pub.nc, layout.stream, {"last_by_subj": layout.payload_refs(name)}, "", 5.0
        )
        assert gone is None
        # and a message naming it now is refused as well
        with pytest.raises(MissingPayloadError):
            await mark_refs(pub, layout, "r2", message)


RESULT = "r" * (300 * 1024)


def big_result() -> str:
    return RESULT


def wants_big():  # type: ignore[no-untyped-def]
    retry = df.RetryPolicy(initial_interval=1.0, backoff=df.Backoff.FIXED, maximum_attempts=20)
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
    value = yield df.activity(big_result, options=opts)
    return len(value)


async def test_a_report_whose_payload_went_is_recorded_as_a_failed_attempt_and_retried() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        layout = client.layout
        pub = client.pub
        name = hashlib.sha256(orjson.dumps(RESULT)).hexdigest()
        # a deletion of the result's object is under way when the worker's report arrives
        await pub.publish(layout.payload_deleting(name), b"")
        async with env.worker(workflows=[wants_big], activities=[big_result]):
            handle = await client.start_workflow(wants_big, id="big")

            async def failed_attempt():  # type: ignore[no-untyped-def]
                for e in await handle.fetch_history():
                    if isinstance(e, ev.ActivityRetryScheduled):
                        return e
                return None

            failed = await wait_for(failed_attempt, timeout=30)
            assert failed.failure.type == "MissingPayloadError"
            assert name in failed.failure.message
            await pub.js.purge_stream(layout.stream, subject=layout.payload_deleting(name))
            # the next attempt stores the result anew and it is recorded
            assert await handle.result(timeout=60) == len(RESULT)


async def test_removing_a_run_keeps_the_objects_a_dead_letter_holds() -> None:
    async with LocalEnvironment(server_options=ServerOptions(payload_grace=0.0)) as env:
        client, server = env.client, env.server
        assert server is not None
        layout, js = client.layout, client.pub.js
        payloads = ObjectPayloads(js, layout)
        async with env.worker(workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, BIG, id="held")
            assert await handle.result(timeout=60) == len(BIG)
        [name] = await payloads.names()  # the argument, stored by reference
        data = await payloads.get(name)
        raw = await server.history.raw("held", handle.run_id)
        # a dead letter keeps the same object (its whole original)
        await js.publish(layout.dead_letter("worker"), b"cut", headers={ORIGINAL_HEADER: name})

        assert await delete_run_payloads(payloads, raw) == []
        await handle.delete()  # the run's removal: no other run names the object
        assert await server.history.raw("held", handle.run_id) == []
        assert await payloads.get(name) == data, "a dead letter's object went with the run"

        # once the dead letter is removed, the object goes with the next sweep
        await js.purge_stream(layout.stream, subject=layout.dead_letters())
        assert await sweep(server.pub, layout, grace=0.0, now=time.time() + 1) == 1
        with pytest.raises(df.PayloadError, match="missing"):
            await payloads.get(name)


def waits_forever():  # type: ignore[no-untyped-def]
    yield df.wait_signal("never")


def parent_of_lost():  # type: ignore[no-untyped-def]
    try:
        return (yield df.child_workflow(waits_forever, id="lost-child"))
    except df.ChildWorkflowError as err:
        return {"type": getattr(err.cause, "type", ""), "message": str(err.cause)}


async def test_a_childs_outcome_whose_payload_went_is_recorded_as_the_childs_failure() -> None:
    async with LocalEnvironment() as env:
        client, server = env.client, env.server
        assert server is not None
        name = hashlib.sha256(orjson.dumps(RESULT)).hexdigest()  # never stored: it went
        async with env.worker(workflows=[parent_of_lost, waits_forever]):
            handle = await client.start_workflow(parent_of_lost, id="lost-parent")

            async def child_started():  # type: ignore[no-untyped-def]
                for e in await handle.fetch_history():
                    if isinstance(e, ev.ChildWorkflowStarted):
                        return e
                return None

            started = await wait_for(child_started, timeout=30)
            # the child's result (by reference) reaches its parent after the child's run was
            # removed and the object with it (a backlog longer than retention + grace)
            result = {CLAIM: name}
            closed = inp.RecordChildClosed(handle.run_id, started.seq, started.run_id, result)
            await await_ack(server._send_input("lost-parent", closed))

            outcome = await handle.result(timeout=60)
            assert outcome["type"] == "MissingPayloadError"
            assert name in outcome["message"] and started.run_id in outcome["message"]
            failed = [
                e for e in await handle.fetch_history() if isinstance(e, ev.ChildWorkflowFailed)
            ]
            assert [e.failure.type for e in failed] == ["MissingPayloadError"]
