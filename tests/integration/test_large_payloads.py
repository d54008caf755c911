"""Large payloads by claim-check: a 20 MB workflow argument, activity argument, activity result
and workflow result round-trip through the namespace's object store (with and without an
encryption codec, and under `df auth init` permissions); over the maximum is refused where
the value is passed."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.codec.claims import CLAIM_THRESHOLD, MAX_CLAIM_BYTES, claim_names
from durablefuture.codecs import AesGcm, generate_key
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.connection import connect
from durablefuture.transport.payload_store import ObjectPayloads, delete_run_payloads
from durablefuture.transport.subjects import Layout

pytestmark = pytest.mark.asyncio

MB20 = 20 * 1024 * 1024
OPTS = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=60))


def make_big(n: int) -> str:
    return "".join(chr(97 + i % 26) for i in range(26)) * (n // 26)


def digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def big_flow(data: str):  # type: ignore[no-untyped-def]
    produced = yield df.activity(make_big, MB20, options=OPTS)
    seen = yield df.activity(digest, data, options=OPTS)  # a 20 MB activity argument
    return {"arg": seen, "produced": produced}


async def _objects(url: str) -> int:
    nc = await connect(url, timeout=10)
    try:
        info = await nc.jetstream().stream_info(f"OBJ_{Layout('default').payloads_bucket}")
        return info.state.messages
    finally:
        await nc.close()


@pytest.mark.parametrize("mode", ["plain", "encrypted", "auth"])
async def test_twenty_megabytes_each_way(mode: str) -> None:
    codec = AesGcm("k1", generate_key()) if mode == "encrypted" else None
    arg = "A" * MB20
    async with LocalEnvironment(codec=codec, auth=mode == "auth") as env:
        async with env.worker(workflows=[big_flow], activities=[make_big, digest]):
            handle = await env.client.start_workflow(big_flow, arg, id=f"big-{mode}")
            result = await handle.result(timeout=120)
            assert result["arg"] == digest(arg)
            assert result["produced"] == make_big(MB20)
            history = await handle.fetch_history()
            assert history[0].args == (arg,)  # type: ignore[union-attr]
        if mode != "auth":  # (the test's own plain connection has no login there)
            # the argument (stored once, also as the activity's), the activity's result and
            # the workflow's, in 128 KiB chunks
            assert await _objects(env.nats_url) >= 3 * MB20 // (128 * 1024)


async def test_over_the_maximum_is_refused_at_the_call_site() -> None:
    async with LocalEnvironment() as env:
        huge = "x" * (MAX_CLAIM_BYTES + 1)
        with pytest.raises(df.PayloadError, match="once encoded; the limit is"):
            await env.client.start_workflow(big_flow, huge, id="too-big")
        with pytest.raises(df.PayloadError, match="once encoded; the limit is"):
            df.activity(digest, huge)


async def test_many_payloads_under_the_threshold_still_fit_one_message() -> None:
    """Each under the threshold, together over the NATS message limit: the largest travel by
    reference until the message fits."""
    piece = "p" * (CLAIM_THRESHOLD - 1024)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[big_flow], activities=[make_big, digest]):
            handle = await env.client.start_workflow(
                "big_flow", piece * 6, id="many-pieces", task_queue="default"
            )
            result = await handle.result(timeout=120)
            assert result["arg"] == digest(piece * 6)


def mark(data: str, who: str) -> str:
    return who + data


def marked(data: str, who: str):  # type: ignore[no-untyped-def]
    out = yield df.activity(mark, data, who, options=OPTS)
    return out


async def _run_messages(js: object, run_id: str) -> list[bytes]:
    """Every stored message of a run: its history and its status entry, raw."""
    out = []
    lay = Layout("default")
    for stream in (lay.stream, f"KV_{lay.runs_bucket}"):
        info = await js.stream_info(stream)  # type: ignore[attr-defined]
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)  # type: ignore[attr-defined]
            except Exception:
                continue
            if msg.subject.endswith(f".{run_id}"):
                out.append(msg.data or b"")
    return out


async def test_the_payload_objects_of_a_deleted_run_are_deleted_with_it() -> None:
    shared = "s" * (CLAIM_THRESHOLD + 4096)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[marked], activities=[mark]):
            keep = await env.client.start_workflow(marked, shared, "K", id="keep")
            drop = await env.client.start_workflow(marked, shared, "D", id="drop")
            assert await keep.result(timeout=30) == "K" + shared
            assert await drop.result(timeout=30) == "D" + shared
        nc = await connect(env.nats_url, timeout=10)
        try:
            js = nc.jetstream()
            kept_msgs = await _run_messages(js, keep.run_id or "")
            dropped_msgs = await _run_messages(js, drop.run_id or "")
            kept = set().union(*(claim_names(m) for m in kept_msgs))
            dropped = set().union(*(claim_names(m) for m in dropped_msgs))
            # each run refers to the shared argument and to its own result
            assert len(kept) == 2 and len(dropped) == 2 and len(kept & dropped) == 1
            payloads = ObjectPayloads(js, Layout("default"))
            assert kept | dropped == await payloads.names()
            deleted = await delete_run_payloads(payloads, dropped_msgs, still_used=kept)
            assert set(deleted) == dropped - kept
            assert await payloads.names() == kept
            assert await delete_run_payloads(payloads, dropped_msgs, still_used=kept) == []
            assert claim_names(b'{"not": "json"') == set()
        finally:
            await nc.close()
        # the kept run still reads back in full
        again = env.client.get_workflow_handle("keep")
        assert await again.result(timeout=30) == "K" + shared
        assert (await again.fetch_history())[0].args == (shared, "K")  # type: ignore[union-attr]


BIG = 1_200_000  # over NATS's 1 MiB message limit by itself


def remember_big(size: int) -> int:
    """Heartbeats a large detail and fails; the next attempt finds the detail and returns it."""
    before = df.activity_info().heartbeat_details
    if before:
        return len(before[0])
    df.heartbeat("h" * size)
    raise RuntimeError("fail after a heartbeat")


def queried(size: int):  # type: ignore[no-untyped-def]
    df.workflow.set_query_handler("echo", lambda text: text + "!" * size)
    retry = df.RetryPolicy(initial_interval=0.1, maximum_attempts=2)
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
    seen = yield df.activity(remember_big, size, options=opts)
    yield df.wait_signal("done")
    return seen


def greet_big(text: str):  # type: ignore[no-untyped-def]
    return len(text)
    yield  # a workflow


@pytest.mark.parametrize("mode", ["plain", "encrypted"])
async def test_queries_heartbeat_details_and_schedule_arguments_go_by_reference(
    mode: str,
) -> None:
    from datetime import UTC, datetime

    codec = AesGcm("k1", generate_key()) if mode == "encrypted" else None
    async with LocalEnvironment(codec=codec) as env:
        async with env.worker(workflows=[queried, greet_big], activities=[remember_big]):
            handle = await env.client.start_workflow(queried, BIG, id=f"q-{mode}")

            async def retried() -> bool:
                history = await handle.fetch_history()
                return any(
                    getattr(e, "attempt", 1) == 2 or type(e).__name__ == "SignalWaitStarted"
                    for e in history
                )

            from tests.conftest import wait_for

            await wait_for(retried, 30)
            # a query's argument and its answer, each over the NATS message limit
            text = "q" * BIG
            assert await handle.query("echo", text) == text + "!" * BIG
            await handle.signal("done")
            # the second attempt saw the first's heartbeat details (stored by reference)
            assert await handle.result(timeout=30) == BIG

            action = df.ScheduleStartWorkflow(
                greet_big, "s" * BIG, id_prefix=f"big-{mode}", task_queue="default"
            )
            far = df.ScheduleSpec(cron=["0 0 1 1 *"], start_at=datetime(2100, 1, 1, tzinfo=UTC))
            sched = await env.client.create_schedule(
                f"big-{mode}", df.Schedule(action=action, spec=far)
            )
            await sched.trigger()

            async def started() -> list[str]:
                runs = await env.client.list_workflows()
                return [r.workflow_id for r in runs if r.workflow_id.startswith("big-")]

            [wid] = await wait_for(started, 30)
            assert await env.client.get_workflow_handle(wid).result(timeout=30) == BIG
        nc = await connect(env.nats_url, timeout=10)
        try:
            payloads = ObjectPayloads(nc.jetstream(), Layout("default"))
            # the heartbeat detail, the query's argument and answer, the schedule's argument
            # (and the activity's and workflow's results, small, are not there)
            assert len(await payloads.names()) >= 4
        finally:
            await nc.close()
