"""A workflow task's decisions reported twice, to two df-servers, one of them behind: the
attempt the first granted to its worker must never have its task stored by the second.

Two workers report the same decisions when a workflow task is delivered again while its
first taker is still reporting it (its ack wait passed under load, a node failed over). The
first df-server appends them, marks the activity's first attempt with that request's id and
grants it to its worker (which runs it with no lease). The second df-server, whose cached
run is behind, decides the report again on that run, lists the attempt for its own answer
beside its append, finds the append refused (the first one is stored) and takes the report
for a duplicate. It must list the attempt again, as for any other duplicate: its task, if
stored, goes to a worker that finds no lease and runs the attempt a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import pytest
from nats.aio.msg import Msg

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server import Server
from durablefuture.testing import LocalEnvironment
from durablefuture.transport import report_requests
from durablefuture.transport.headers import EAGER_ASK_HEADER
from durablefuture.transport.replies import ReplyInbox
from durablefuture.worker import reports

pytestmark = pytest.mark.asyncio

ran: list[str] = []


async def charge(order_id: str) -> str:
    ran.append(order_id)
    return f"charged {order_id}"


def one_charge(order_id: str):  # type: ignore[no-untyped-def]
    return (
        yield df.activity(charge, order_id, options=df.ActivityOptions(start_to_close_timeout=30))
    )


async def _only(listening: Server, quiet: Server) -> None:
    """Report requests go to ``listening`` alone from now on."""
    await quiet._stop_report_requests()
    await listening._start_report_requests()
    await quiet.nc.flush()  # nats-server has both subscriptions as they are now
    await listening.nc.flush()


async def test_decisions_reported_twice_to_a_server_behind_never_store_a_granted_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran.clear()
    async with LocalEnvironment() as env:  # eager_check 30 s: no check fires meanwhile
        first = env.server
        assert first is not None
        second = await Server.connect(env.nats_url, env.server_options)
        await second.start()
        second_task = asyncio.create_task(second.run())
        layout = env.client.layout
        tasks: list[Msg] = []

        async def got(msg: Msg) -> None:
            tasks.append(msg)

        await env.client.pub.js.subscribe(f"{layout.prefix}.at.>", ordered_consumer=True, cb=got)
        asked = report_requests.ask_report
        copies: list[str] = []

        async def twice(
            replies: ReplyInbox, subject: str, data: bytes, headers: Mapping[str, str], **kw: Any
        ) -> report_requests.Answer:
            if EAGER_ASK_HEADER not in headers or copies:
                return await asked(replies, subject, data, headers, **kw)
            decided = env.client.codec.decode_input(data).input
            assert decided is not None
            copies.append(decided.run_id)
            # the second df-server has the run as it was before these decisions
            await second._load("r-1", decided.run_id)
            await _only(first, second)
            answer = await asked(replies, subject, data, headers, wait=15)
            # the same decisions from another worker (its own request id), to the other server
            await _only(second, first)
            other = {**headers, EAGER_ASK_HEADER: "b" * 12}
            again = await asked(replies, subject, data, other, wait=15)
            assert again.word == report_requests.RECORDED and not again.granted
            await first._start_report_requests()
            return answer

        monkeypatch.setattr(reports, "ask_report", twice)
        try:
            async with env.worker(workflows=[one_charge], activities=[charge]):
                h = await env.client.start_workflow(one_charge, "r-1", id="r-1")
                assert await h.result(timeout=15) == "charged r-1"
            await env.client.pub.nc.flush()
            assert copies == [h.run_id]
            assert first.stats["eager_granted"] == 1  # run by the worker, with no lease
            assert second.stats["eager_granted"] == 0
            assert second.stats["conflicts"] == 1 and second.stats["duplicates"] == 1
            stored = [env.client.codec.decode_activity_task(m.data) for m in tasks]
            assert [(t.seq, t.attempt) for t in stored] == []
            assert second.stats["eager_relisted"] == 1  # listed again, not published
            assert ran == ["r-1"]
            history = await h.fetch_history()
            scheduled = [e for e in history if isinstance(e, ev.ActivityScheduled)]
            # marked with the first request's id (the one its worker ran it for)
            assert [e.seq for e in scheduled] == [1]
            assert scheduled[0].eager not in ("", "b" * 12)
            assert [type(e) for e in history].count(ev.ActivityCompleted) == 1
            assert ev.ActivityRetryScheduled not in [type(e) for e in history]
        finally:
            await second.shutdown()
            second_task.cancel()
            with contextlib.suppress(BaseException):
                await second_task
