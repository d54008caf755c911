"""A message anyone publishes onto a run's history subject never wedges the run silently.

Junk bytes, a truncated batch or a well-formed but out-of-order event: the run is marked
``corrupt`` in its status entry, reads raise CorruptHistoryError naming the message's stream
sequence and why, describe and ``df why`` say so, inputs for the run are dead-lettered with
that reason, and every other run goes on.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

import durablefuture as df
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.diagnose import explain, render
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.integration.test_hardening import dead_letter_reasons, greet, greeting

pytestmark = pytest.mark.asyncio

gate = asyncio.Event()


async def held(name: str) -> str:
    await gate.wait()
    return f"held {name}"


def waits_for_held(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(held, name)
    second = yield df.activity(greet, name)
    return [first, second]


def _corruption(kind: str, valid: bytes) -> tuple[bytes, str]:
    """Bytes to publish and a part of the reason the engine must give for them."""
    if kind == "junk":
        return b"\x00\xffnot a history message", "not JSON"
    if kind == "truncated":
        return valid[: len(valid) // 2], "not JSON"
    late = ev.ActivityCompleted(event_id=99, at=1.0, seq=1, attempt=1, result="forged")
    return default_codec().encode_batch("forged", [late]), "expected event"


@pytest.mark.parametrize("kind", ["junk", "truncated", "out_of_order"])
async def test_a_corrupt_history_message_is_named_everywhere_never_a_silent_stall(
    kind: str,
) -> None:
    global gate
    gate = asyncio.Event()
    async with LocalEnvironment() as env:
        client = env.client
        async with env.worker(workflows=[waits_for_held, greeting], activities=[held, greet]):
            handle = await client.start_workflow(waits_for_held, "x", id=f"bad-{kind}")

            async def activity_started() -> bool:
                return bool((await handle.describe()).pending_activities)

            await wait_for(activity_started, 15)
            run_id = await client.latest_run_id(handle.id)
            subject = client.layout.history(handle.id, run_id)
            nc = await nats.connect(env.nats_url)
            try:
                js = nc.jetstream()
                valid = (await js.get_last_msg(client.layout.stream, subject)).data or b""
                data, why = _corruption(kind, valid)
                seq = (await js.publish(subject, data)).seq
            finally:
                await nc.close()

            # seen by a reader before the server has noticed anything
            d = await handle.describe()
            assert d.status == RunStatus.CORRUPT
            assert d.corrupt_at == seq
            assert d.failure is not None and why in d.failure.message
            assert f"stream sequence {seq}" in d.failure.message
            diagnosis = await explain(client, handle.id)
            assert diagnosis.status == RunStatus.CORRUPT and diagnosis.corrupt_at == seq
            assert f"corrupt at stream sequence {seq}" in render(diagnosis)
            with pytest.raises(df.CorruptHistoryError) as read:
                await handle.fetch_history()
            assert read.value.stream_seq == seq and why in read.value.reason

            # the activity's result is the next input: the server records why, and waiters wake
            gate.set()
            with pytest.raises(df.CorruptHistoryError) as waited:
                await handle.result(timeout=15)
            assert waited.value.stream_seq == seq
            summary = await client.summary(handle.id, run_id)
            assert summary is not None and summary.status == RunStatus.CORRUPT
            assert summary.workflow_type == "waits_for_held"  # the rest of the entry is kept

            async def dead_lettered() -> bool:
                reasons = await dead_letter_reasons(env)
                return any(f"corrupt at stream sequence {seq}" in r for r in reasons)

            await wait_for(dead_lettered, 15)

            # inputs sent by callers are refused with the reason, not "not found"
            with pytest.raises(df.CorruptHistoryError) as signalled:
                await handle.signal("poke")
            assert signalled.value.stream_seq == seq
            listed = await client.list_workflows(status=RunStatus.CORRUPT)
            assert [w.workflow_id for w in listed] == [handle.id]

            # removing the message makes the run readable again
            await client.pub.js.delete_msg(client.layout.stream, seq)
            assert (await handle.describe()).status == RunStatus.RUNNING

            # every other run goes on
            assert await client.execute_workflow(greeting, "ok", id="ok", timeout=15) == "hello ok"
            assert env.server is not None and env.server.stats["corrupt_histories"] == 1


async def test_junk_after_a_closed_run_refuses_a_new_start_with_the_reason() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        async with env.worker(workflows=[greeting], activities=[greet]):
            assert await client.execute_workflow(greeting, "a", id="reused", timeout=15)
            run_id = await client.latest_run_id("reused")
            ack = await client.pub.js.publish(client.layout.history("reused", run_id), b"[1,")
            with pytest.raises(df.CorruptHistoryError) as refused:
                await client.start_workflow(greeting, "b", id="reused")
            assert refused.value.stream_seq == ack.seq and refused.value.run_id == run_id
            d = await client.get_workflow_handle("reused").describe()
            assert (d.status, d.corrupt_at, d.workflow_type) == (
                RunStatus.CORRUPT,
                ack.seq,
                "greeting",
            )
            assert await client.execute_workflow(greeting, "c", id="other", timeout=15)
