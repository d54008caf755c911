"""The closed notice df-server sends right behind a run's closing history append.

It goes out before the append's PubAck, so a client waiting for the result reads the history
one round trip sooner; it carries no summary, and only the history read decides. The usual
notice (with the status entry) still follows the stored close.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

import durablefuture as df
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.headers import CLOSING_HEADER
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


async def double(x: int) -> int:
    return 2 * x


def one_step(x: int):  # type: ignore[no-untyped-def]
    return (yield df.activity(double, x))


def waits_for_go():  # type: ignore[no-untyped-def]
    return (yield df.wait_signal("go"))


async def test_the_closing_append_is_followed_by_a_notice_before_its_pubAck() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[one_step], activities=[double]):
            # every message, in order: subject, headers, data, reply subject
            seen: list[tuple[str, dict[str, str], bytes, str]] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def note(msg: nats.aio.msg.Msg) -> None:
                    seen.append((msg.subject, dict(msg.headers or {}), msg.data, msg.reply))

                await spy.subscribe(">", cb=note)
                await spy.flush()
                handle = await env.client.start_workflow(one_step, 4, id="closing")
                assert await handle.result(timeout=30) == 8
                layout = env.client.layout
                notice = layout.closed_notice("closing", handle.run_id or "")
                history = layout.history("closing", handle.run_id or "")

                def notices() -> list[int]:
                    return [i for i, m in enumerate(seen) if m[0] == notice]

                await wait_for(lambda: len(notices()) >= 2, timeout=10)
                first, second = notices()[:2]
                # the early one: no summary, marked, right behind the last history append
                assert seen[first][1].get(CLOSING_HEADER) == "1" and seen[first][2] == b""
                appends = [i for i, m in enumerate(seen) if m[0] == history]
                assert appends and appends[-1] < first
                # no PubAck of that append in between (other processes' inbox traffic may be)
                pub_ack_to = seen[appends[-1]][3]
                assert pub_ack_to.startswith("_INBOX")
                between = {m[0] for m in seen[appends[-1] + 1 : first]}
                assert pub_ack_to not in between, between
                # the usual one: the status entry, after the PubAck
                assert CLOSING_HEADER not in seen[second][1] and seen[second][2]
            finally:
                await spy.close()


async def test_a_closing_notice_for_an_open_run_leaves_the_wait_to_the_run_end() -> None:
    """A closing notice read before its append was stored, refused, or forged: the history
    shows the run open, so the wait goes on until the run really ends."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[waits_for_go]):
            handle = await env.client.start_workflow(waits_for_go, id="open")
            run_id = (await handle.describe()).run_id
            judged: list[object] = []
            confirm = handle._confirmed

            async def judging(run: str, data: bytes) -> object:
                outcome = await confirm(run, data)
                judged.append(outcome)
                return outcome

            handle._confirmed = judging  # type: ignore[method-assign,assignment]
            waiting = asyncio.create_task(handle.result(timeout=30))
            early = await nats.connect(env.nats_url)
            try:
                subject = env.client.layout.closed_notice("open", run_id)

                async def looked() -> bool:  # sent again until the wait read the history
                    await early.publish(subject, b"", headers={CLOSING_HEADER: "1"})
                    await early.flush()
                    return bool(judged)

                await wait_for(looked, 10)
                assert not waiting.done(), "the wait ended on a closing notice of an open run"
                assert all(outcome is None for outcome in judged), judged
            finally:
                await early.close()
            await handle.signal("go", "real")
            assert await waiting == "real"


async def test_the_read_a_closing_notice_brings_is_a_direct_get() -> None:
    """Woken by the early notice (no summary), the waiting client reads the closing batch
    with a direct get, which nats-server answers without its API's JSON and base64."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[one_step], activities=[double]):
            spy = await nats.connect(env.nats_url)
            try:
                asked: list[str] = []

                async def note(msg: nats.aio.msg.Msg) -> None:
                    if msg.reply.startswith(env.client.pub.replies.prefix):
                        asked.append(msg.subject)

                await spy.subscribe("$JS.API.>", cb=note)
                await spy.flush()
                assert await env.client.execute_workflow(one_step, 5, id="direct") == 10
                stream = env.client.layout.stream
                # the spy's copies of the client's requests come on a connection of their own
                await spy.flush()
                await wait_for(lambda: f"$JS.API.DIRECT.GET.{stream}" in asked, 10)
                assert f"$JS.API.STREAM.MSG.GET.{stream}" not in asked, asked
            finally:
                await spy.close()
