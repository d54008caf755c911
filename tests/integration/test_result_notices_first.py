"""Fewer messages on a workflow's path: ``execute_workflow`` listens for the run's closed
notices before it sends the start (the subscription leaves in the start's write), so it does not
read the status entry right after the start; a notice that never comes is covered by a read.

Against a real nats-server; what is checked is what NATS sees (requests, results), never how
long anything took.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

import durablefuture as df
from durablefuture.client import handle as handle_module
from durablefuture.core.options import WorkflowOptions
from durablefuture.natsserver import NatsServer
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.replies import Watch

pytestmark = pytest.mark.asyncio


async def double(x: int) -> int:
    return 2 * x


def one_step(x: int):  # type: ignore[no-untyped-def]
    return (yield df.activity(double, x))


async def test_execute_workflow_reads_no_status_entry_when_the_notice_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no read of the status entry until long after the run closes: its notice tells
    monkeypatch.setattr(handle_module, "FIRST_READ_AFTER", 600.0)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[one_step], activities=[double]):
            reads: list[str] = []
            spy = await nats.connect(env.nats_url)
            try:
                runs = env.client.layout.runs_bucket

                async def note(msg: nats.aio.msg.Msg) -> None:
                    reads.append(msg.subject)

                await spy.subscribe(f"$JS.API.STREAM.MSG.GET.KV_{runs}", cb=note)
                await spy.subscribe(f"$JS.API.DIRECT.GET.KV_{runs}.>", cb=note)
                await spy.flush()
                for i in range(3):
                    result = await env.client.execute_workflow(one_step, i, id=f"quiet-{i}")
                    assert result == 2 * i
                await spy.flush()
                assert reads == []
            finally:
                await spy.close()


async def test_execute_workflow_of_a_run_closed_long_ago_reads_its_status_entry() -> None:
    # the same request id answers with the run it started, closed before: no notice comes,
    # the status entry says how it ended
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[one_step], activities=[double]):
            opts = WorkflowOptions(request_id="the-one-request")
            first = await env.client.execute_workflow(one_step, 5, id="again", options=opts)
            again = await env.client.execute_workflow(one_step, 5, id="again", options=opts)
            assert first == again == 10
            handle = env.client.get_workflow_handle("again")
            assert (await handle.describe()).status == "completed"


async def test_history_reads_are_answered_on_the_publishers_inbox() -> None:
    # the read of the batch that closes a run (and every history read) takes its answer on
    # the one inbox PubAcks come back on: no reply subject, task and timer of its own
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[one_step], activities=[double]):
            replies: list[str] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def note(msg: nats.aio.msg.Msg) -> None:
                    replies.append(msg.reply)

                stream = env.client.layout.stream
                await spy.subscribe(f"$JS.API.STREAM.MSG.GET.{stream}", cb=note)
                await spy.flush()
                assert await env.client.execute_workflow(one_step, 3, id="read") == 6
                history = await env.client.get_workflow_handle("read").fetch_history()
                assert history
                await spy.flush()
                prefix = env.client.pub.replies.prefix
                assert replies and prefix
                assert all(r.startswith(prefix) for r in replies), (prefix, replies)
            finally:
                await spy.close()


async def test_a_watch_wakes_its_waiter_on_a_message_or_at_its_timeout(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        watch = await Watch.open(nc, "watched.one")
        try:
            await nc.flush()
            await watch.wait(0.01)  # nothing came: back at the timeout
            assert watch.received == []
            waiting = asyncio.ensure_future(watch.wait(600))
            await nc.publish("watched.one", b"x")
            await asyncio.wait_for(waiting, 30)  # woken by the message, not the timeout
            assert watch.received == [b"x"]
            await asyncio.wait_for(watch.wait(600), 30)  # a message not yet taken: at once
            watch.received.clear()
        finally:
            await watch.close()
    finally:
        await nc.close()
