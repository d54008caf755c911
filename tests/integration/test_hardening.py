"""Nothing anyone sends can cost a daemon its NATS connection, its credits or a run.

Every test sends hostile input with a plain NATS client on loopback (or the public API), then
checks that the daemons are still connected, that the bad message was refused with a reason
(dead letter or clear error), and that a normal workflow still completes.
"""

from __future__ import annotations

import asyncio

import nats
import orjson
import pytest

import durablefuture as df
from durablefuture.codec import MAX_PAYLOAD_BYTES
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core.errors import (
    InvalidArgumentError,
    MessageRejectedError,
    NatsUnavailableError,
)
from durablefuture.core.inputs import StartWorkflowRequest
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


def greet(name: str) -> str:
    return f"hello {name}"


def greeting(name: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(greet, name))


def spawn_child(child_id: str):  # type: ignore[no-untyped-def]
    return (yield df.child_workflow(greeting, "kid", id=child_id))


async def dead_letter_reasons(env: LocalEnvironment) -> list[str]:
    js = env.client.pub.js
    layout = env.client.layout
    info = await js.stream_info(layout.stream, subjects_filter=layout.dead_letters())
    reasons = []
    for subject, count in (info.state.subjects or {}).items():
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            for _ in range(count):  # the ones counted above (more may come meanwhile)
                msg = await sub.next_msg(timeout=10)
                reasons.append((msg.headers or {}).get("Df-Reason", ""))
        finally:
            await sub.unsubscribe()
    return reasons


async def still_works(env: LocalEnvironment, wid: str) -> None:
    assert env.server is not None and env.server.nc.is_connected
    result = await env.client.execute_workflow(greeting, wid, id=wid, timeout=15)
    assert result == f"hello {wid}"


async def test_a_5000_character_workflow_id_is_refused_and_the_server_stays_connected() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]):
            with pytest.raises(InvalidArgumentError, match="limit is 512"):
                await env.client.start_workflow(greeting, "x", id="W" * 5000)
            # the same request, sent around the client's checks
            codec = default_codec()
            request = StartWorkflowRequest("W" * 5000, "greeting", "default", "r1")
            raw = codec.encode_input(InputEnvelope("W" * 5000, start=request))
            await env.client.pub.publish(env.client.layout.input("start"), raw)

            async def refused() -> bool:
                return any("limit is 512" in r for r in await dead_letter_reasons(env))

            await wait_for(refused, 15)
            await still_works(env, "after-long-id")


async def test_a_child_id_over_the_limit_fails_the_parent_with_a_reason() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[spawn_child, greeting], activities=[greet]):
            handle = await env.client.start_workflow(spawn_child, "C" * 5000, id="parent")
            with pytest.raises(df.WorkflowFailedError) as info:
                await handle.result(timeout=15)
            assert "child workflow id" in str(info.value.cause)
            assert "limit is 512" in str(info.value.cause)
            await still_works(env, "after-long-child")


async def test_an_activity_task_with_a_huge_run_id_is_dead_lettered() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]) as worker:
            task = {
                "v": 1,
                "task": {
                    "namespace": "default",
                    "workflow_id": "w",
                    "run_id": "R" * 600_000,
                    "workflow_type": "greeting",
                    "seq": 1,
                    "attempt": 1,
                    "name": "greet",
                    "task_queue": "default",
                    "options": {"start_to_close_timeout": 5.0},
                    "scheduled_at": 1.0,
                    "attempt_scheduled_at": 1.0,
                    "args": ["x"],
                },
            }
            await env.client.pub.publish(
                env.client.layout.activity_tasks("default"), orjson.dumps(task)
            )

            async def refused() -> bool:
                return any("run_id" in r for r in await dead_letter_reasons(env))

            await wait_for(refused, 15)
            assert worker.client.nc.is_connected
            await still_works(env, "after-huge-run-id")


async def test_an_oversized_publish_is_refused_before_it_costs_the_connection() -> None:
    async with LocalEnvironment() as env:
        pub = env.client.pub
        too_big = b"x" * (env.client.nc.max_payload + 1)
        with pytest.raises(MessageRejectedError, match="max_payload"):
            await pub.publish(env.client.layout.input("run"), too_big)
        with pytest.raises(MessageRejectedError, match="not a valid NATS subject"):
            await pub.publish("df.default.in.bad subject", b"{}")
        with pytest.raises(MessageRejectedError, match="line break"):
            await pub.publish(env.client.layout.input("run"), b"{}", {"Nats-Msg-Id": "a\r\nb"})
        assert env.client.nc.is_connected
        assert env.server is not None and env.server.nc.is_connected


async def test_junk_on_the_pull_inboxes_takes_no_credits() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]) as worker:
            assert env.server is not None and env.server._consumer is not None
            consumers = [env.server._consumer, *worker._consumers]
            attacker = await nats.connect(env.nats_url)
            try:
                for consumer in consumers:
                    for i in range(1100):  # more than any consumer's credits
                        reply = ("", "_INBOX.elsewhere", "df.default.h.x.y")[i % 3]
                        headers = {"Status": "100"} if i % 7 == 0 else None
                        await attacker.publish(consumer._inbox, b"junk", reply, headers)
                await attacker.flush()
            finally:
                await attacker.close()
            plain = sum(1 for i in range(1100) if i % 7)  # the ones without a Status header

            async def all_ignored() -> bool:
                return all(c.junk == plain for c in consumers)

            await wait_for(all_ignored, 15)
            for consumer in consumers:
                assert consumer._held <= consumer.capacity
            # a flow-control "reply" naming a history subject was not answered there
            info = await env.client.pub.js.stream_info(
                env.client.layout.stream, subjects_filter="df.default.h.x.>"
            )
            assert not info.state.subjects
            for i in range(3):
                await still_works(env, f"after-junk-{i}")


async def test_forged_statuses_on_the_pull_inboxes_send_no_extra_pull_requests() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]) as worker:
            assert env.server is not None and env.server._consumer is not None
            consumers = [env.server._consumer, *worker._consumers]
            js = env.client.pub.js

            async def waiting() -> list[int]:
                infos = [await js.consumer_info(c.stream, c.consumer) for c in consumers]
                return [i.num_waiting or 0 for i in infos]

            async def one_request_each() -> bool:
                return all(c.requests > 0 and c._token for c in consumers)

            await wait_for(one_request_each, 15)
            sent_before = [c.requests for c in consumers]
            forged = [
                {"Status": "408", "Description": "Request Timeout"},
                {"Status": "409", "Description": "Leadership Change"},
                {"Status": "404", "Description": "No Messages"},
                {"Status": "409", "Description": "Exceeded MaxWaiting"},
            ]
            per_consumer = 0
            attacker = await nats.connect(env.nats_url)
            try:
                for consumer in consumers:
                    targets = [consumer._inbox, f"{consumer._inbox}.{'0' * 16}"]
                    for i in range(400):
                        await attacker.publish(targets[i % 2], b"", headers=forged[i % len(forged)])
                await attacker.flush()
            finally:
                await attacker.close()
            per_consumer += 400
            for consumer in consumers:  # status lines, as nats-server writes them
                for line in (b"NATS/1.0 408 Request Timeout", b"NATS/1.0 409 Leadership Change"):
                    for target in (consumer._inbox, f"{consumer._inbox}.guess"):
                        block = line + b"\r\n\r\n"
                        frame = b"HPUB %s %d %d\r\n%s\r\n" % (
                            target.encode(),
                            len(block),
                            len(block),
                            block,
                        )
                        await _raw_publish(env.nats_url, [frame] * 50)
            per_consumer += 200

            async def all_ignored() -> bool:
                return all(c.junk == per_consumer for c in consumers)

            await wait_for(all_ignored, 15)
            for consumer, before in zip(consumers, sent_before, strict=True):
                # only the renewals of expired requests (one per `expires`, 5 s) went out, not
                # one per forged status (1,200 were sent to each consumer)
                assert consumer.requests - before <= 5, (consumer.consumer, consumer.requests)
                assert consumer._held + consumer._requested <= consumer.capacity
            # JetStream holds at most one open pull request per consumer, not hundreds
            assert all(n <= 1 for n in await waiting()), await waiting()
            for i in range(3):
                await still_works(env, f"after-forged-status-{i}")


async def test_a_closed_connection_ends_the_server_and_the_worker_with_an_error() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]) as worker:
            assert env.server is not None
            server_run = env._server_task
            worker_run = worker._run_task
            assert server_run is not None and worker_run is not None
            # what nats-py does after a protocol error from the server: close for good
            await env.server.nc.close()
            await worker.client.nc.close()
            for task in (server_run, worker_run):
                with pytest.raises(NatsUnavailableError, match="supervisor"):
                    await asyncio.wait_for(task, 10)


def take_three(a: str, b: str, c: str) -> int:
    return len(a) + len(b) + len(c)


def three_big_arguments():  # type: ignore[no-untyped-def]
    big = "x" * (MAX_PAYLOAD_BYTES // 3 + 1_000)  # each under the per-payload limit, together over
    return (yield df.activity(take_three, big, big, big))


async def test_arguments_too_large_together_fail_the_run_with_a_reason_not_a_hang() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[three_big_arguments, greeting], activities=[take_three, greet]
        ):
            handle = await env.client.start_workflow(three_big_arguments, id="big-args")
            with pytest.raises(df.WorkflowFailedError) as info:
                await handle.result(timeout=20)
            assert "together they may take at most" in str(info.value.cause)
            await still_works(env, "after-big-args")


async def test_values_the_server_could_not_process_are_refused_before_anything_is_written() -> None:
    from datetime import timedelta

    with pytest.raises(InvalidArgumentError, match="100 years"):
        df.sleep(timedelta(days=3_000_000))
    with pytest.raises(InvalidArgumentError, match="100 years"):
        df.ActivityOptions(start_to_close_timeout=timedelta(days=3_000_000))
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]):
            with pytest.raises(InvalidArgumentError, match="100 years"):
                await env.client.start_workflow(
                    greeting,
                    "x",
                    id="zombie-api",
                    options=df.WorkflowOptions(execution_timeout=timedelta(days=3_000_000)),
                )
            with pytest.raises(InvalidArgumentError, match="task queue"):
                await env.client.start_workflow(greeting, "x", id="zombie-q", task_queue="a.b")
            with pytest.raises(InvalidArgumentError, match="run id"):
                env.client.get_workflow_handle("w", run_id="r.*>")
            base = {"workflow_id": "", "workflow_type": "greeting", "task_queue": "default"}
            bad = {
                "zombie-null-type": {"workflow_type": None},
                "zombie-int-type": {"workflow_type": 7},
                "zombie-queue": {"task_queue": "a.b"},
                "zombie-timeout": {"execution_timeout": 3_000_000 * 86400.0},
                "zombie-run-id": {"run_id": "r.*>"},
            }
            for wid, change in bad.items():
                start = {**base, "workflow_id": wid, "request_id": wid, **change}
                raw = orjson.dumps({"v": 1, "wid": wid, "start": start})
                await env.client.pub.publish(env.client.layout.input("start"), raw)

            async def all_refused() -> bool:
                return len(await dead_letter_reasons(env)) >= len(bad)

            await wait_for(all_refused, 15)
            reasons = await dead_letter_reasons(env)
            assert len(reasons) == len(bad) and all(reasons), reasons
            written = {d.workflow_id for d in await env.client.list_workflows()}
            assert not written & set(bad), "nothing is written for a refused start"
            await still_works(env, "after-zombies")


async def _raw_publish(url: str, lines: list[bytes]) -> None:
    """Publish with a raw socket: bytes no well-behaved client would send."""
    host, port = url.removeprefix("nats://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
    for line in lines:
        writer.write(line)
    writer.write(b"PING\r\n")
    await writer.drain()
    while b"PONG" not in await reader.readline():
        pass
    writer.close()


async def test_bytes_that_are_not_utf8_cannot_stop_a_daemon_reading() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greeting], activities=[greet]) as worker:
            assert env.server is not None
            query = env.client.layout.query("default").encode()
            stored = env.client.layout.input("run").encode() + b".\xff"
            await _raw_publish(
                env.nats_url,
                [
                    # a header block that is not UTF-8, on the worker's query subscription
                    b"HPUB " + query + b" 16 16\r\nNATS/1.0 \xff\xfe\xfd\r\n\r\n\r\n",
                    # a stored input whose subject is not UTF-8: delivered to df-server
                    b"PUB " + stored + b' 7\r\n{"v":1}\r\n',
                ],
            )

            async def dead_lettered() -> bool:
                return any("workflow id" in r for r in await dead_letter_reasons(env))

            await wait_for(dead_lettered, 15)
            from durablefuture.transport.connection import read_loop_stopped

            for nc in (env.server.nc, worker.client.nc):
                assert nc.is_connected and not read_loop_stopped(nc)
            await still_works(env, "after-bad-bytes")
            assert await env.client.get_workflow_handle("after-bad-bytes").describe()


def waits_for_go():  # type: ignore[no-untyped-def]
    return (yield df.wait_signal("go"))


async def test_a_forged_or_junk_closed_notice_does_not_end_a_wait_for_the_result() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[waits_for_go]):
            handle = await env.client.start_workflow(waits_for_go, id="forged")
            run_id = (await handle.describe()).run_id
            judged: list[tuple[bytes, object]] = []  # each notice the wait checked, and how
            confirm = handle._confirmed

            async def judging(run: str, data: bytes) -> object:
                outcome = await confirm(run, data)
                judged.append((data, outcome))
                return outcome

            handle._confirmed = judging  # type: ignore[method-assign,assignment]
            waiting = asyncio.create_task(handle.result(timeout=30))
            attacker = await nats.connect(env.nats_url)
            try:
                subject = env.client.layout.closed_notice("forged", run_id)
                forged = {
                    "v": 1,
                    "workflow_id": "forged",
                    "run_id": run_id,
                    "workflow_type": "waits_for_go",
                    "task_queue": "default",
                    "status": "completed",
                    "start_time": 0.0,
                    "result": "FORGED",
                }
                body = orjson.dumps(forged)

                async def forged_one_judged() -> bool:  # sent again until the wait checked one
                    await attacker.publish(subject, b"not json")
                    await attacker.publish(subject, body)
                    await attacker.flush()
                    return waiting.done() or any(data == body for data, _ in judged)

                await wait_for(forged_one_judged, 10)
                assert not waiting.done(), "the wait ended on a forged notice"
                assert all(outcome is None for _, outcome in judged), judged
            finally:
                await attacker.close()
            await handle.signal("go", "real")
            assert await waiting == "real"
