"""Closed runs' expiries share stored messages (``server/expiries.py``): the runs closing
together are listed by one schedule, and all of them are removed when it fires; per-run
expiries armed before the lists still fire; a junk list is dead-lettered with its reason; a
df-server SIGKILLed while runs close leaves none of them behind."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

import durablefuture as df
from durablefuture.codec.records import MAX_EXPIRY_LIST, Removal, decode_expiry_list, encode_removal
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.server.expiries import ExpiryLists
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.compaction import purge
from durablefuture.transport.connection import connect
from durablefuture.transport.headers import REASON_HEADER
from durablefuture.transport.layout import ensure_namespace
from durablefuture.transport.publisher import (
    SCHEDULE,
    SCHEDULE_TARGET,
    Publisher,
    schedule_at,
)
from durablefuture.transport.subjects import Layout
from durablefuture.transport.usage import stream_size, stream_usage
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import add_workflow, echo_len, expected_add, waiting_add
from tests.integration.helpers import watch

pytestmark = pytest.mark.asyncio

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


async def _runs(client: df.Client) -> int:
    return (await stream_size(client.pub.js, f"KV_{client.layout.runs_bucket}"))[0]


async def _gone(client: df.Client, workflow_ids: list[str]) -> bool:
    for w in workflow_ids:
        try:
            await client.get_workflow_handle(w).fetch_history()
            return False
        except df.WorkflowNotFoundError:
            pass
    return True


async def test_closes_waiting_for_a_list_in_flight_go_out_as_one_message(
    nats_server: NatsServer,
) -> None:
    layout = Layout("default")
    nc = await connect(nats_server.url)
    pub = Publisher(nc)
    try:
        await ensure_namespace(pub.js, layout)
        tasks: set[asyncio.Task[None]] = set()
        lists = ExpiryLists(pub, layout, lambda c: tasks.add(asyncio.create_task(c)))
        due = time.time() + 3600  # never fires during the test
        removals = [Removal(f"w{i}", f"r{i}") for i in range(30)]
        futures = await asyncio.gather(*(lists.arm(r, due + i) for i, r in enumerate(removals)))
        acks = [await f for f in futures]
        # the first went out at once, alone; the others waited for its PubAck, together
        assert lists.sent == 2
        assert len({a.seq for a in acks}) == 2
        state = await pub.js.stream_info(layout.stream, subjects_filter=f"{layout.prefix}.rx.>")
        subjects = state.state.subjects or {}
        assert len(subjects) == 2 and all(s.startswith(f"{layout.prefix}.rx.l.") for s in subjects)
        listed: list[Removal] = []
        schedules = []
        for subject in sorted(subjects, key=lambda s: len(s)):
            msg = await pub.js.get_last_msg(layout.stream, subject)
            listed += decode_expiry_list(msg.data or b"")
            schedules.append((msg.headers or {})[SCHEDULE])
        assert sorted(listed, key=lambda r: int(r.run_id[1:])) == removals
        # each fires at the latest due time it lists
        assert schedule_at(due + 29) in schedules and schedule_at(due) in schedules
        await purge(nc, layout.stream, f"{layout.prefix}.rx.>")
    finally:
        await nc.close()


async def test_runs_closing_together_share_expiry_messages_and_are_all_removed() -> None:
    async with LocalEnvironment(server_options=ServerOptions(retention=1.0)) as env:
        client = env.client
        layout, js = client.layout, client.pub.js
        expiries = await watch(client, f"{layout.prefix}.rx.>")
        ids = [f"many-{i}" for i in range(80)]
        async with env.worker(task_queue="q", workflows=[echo_len]):
            results = await asyncio.gather(
                *(client.execute_workflow(echo_len, "ab", id=w, task_queue="q") for w in ids)
            )
        assert results == [2] * len(ids)

        async def nothing_left() -> bool:
            usage = await stream_usage(js, layout)
            return usage.messages == 0 and await _runs(client) == 0

        await wait_for(nothing_left, timeout=60)
        assert await _gone(client, ids)
        # fewer schedule messages were stored than runs closed, each a list, together naming
        # every run once at least (a close derived again may be listed twice)
        assert 0 < len(expiries) < len(ids)
        assert all(m.subject.startswith(f"{layout.prefix}.rx.l.") for m in expiries)
        named = {r.workflow_id for m in expiries for r in decode_expiry_list(m.data)}
        assert named == set(ids)


async def test_per_run_expiries_armed_before_the_lists_and_a_written_list_both_remove(
    nats_server: NatsServer,
) -> None:
    url = nats_server.url
    client = await df.Client.connect(url)
    layout, js = client.layout, client.pub.js
    first = await Server.connect(url, ServerOptions(retention=3600.0))
    await first.start()
    running = asyncio.create_task(first.run())
    old, listed, kept = ["old-0", "old-1"], ["listed-0", "listed-1"], ["kept"]
    async with df.Worker(client, task_queue="q", workflows=[echo_len]):
        for w in old + listed + kept:
            assert await client.execute_workflow(echo_len, "abc", id=w, task_queue="q") == 3
    await first.shutdown()
    await running
    try:
        # as if these runs had closed before expiry lists: only per-run expiries, due now
        await purge(client.pub.nc, layout.stream, f"{layout.prefix}.rx.l.>")
        runs = {w: (await client.get_workflow_handle(w).describe()).run_id for w in old + listed}
        now = time.time()
        for w in old:
            headers = {SCHEDULE: schedule_at(now), SCHEDULE_TARGET: layout.removal("expire")}
            body = encode_removal(Removal(w, runs[w]))
            await (await client.pub.send(layout.expiry(runs[w]), body, headers))
        # and a list written by hand, straight to the removals
        body = orjson.dumps({"runs": [[w, runs[w]] for w in listed]})
        await (await client.pub.send(layout.removal("expire-list"), body))
        second = await Server.connect(url, ServerOptions(retention=1.0))
        await second.start()
        running = asyncio.create_task(second.run())
        try:

            async def removed() -> bool:
                usage = await stream_usage(js, layout)
                return usage.by_kind.get("rx", 0) == 0 and await _gone(client, old + listed)

            await wait_for(removed, timeout=30)
            # "kept" still has its list (armed for an hour, fired never): untouched
            assert (await client.get_workflow_handle("kept").describe()).status == "completed"
            assert await _runs(client) == 1
        finally:
            await second.shutdown()
            await running
    finally:
        await client.close()


async def test_a_junk_expiry_list_is_dead_lettered_with_its_reason() -> None:
    async with LocalEnvironment(server_options=ServerOptions(retention=3600.0)) as env:
        client = env.client
        layout = client.layout
        dead = await watch(client, layout.dead_letter("removal"))
        too_many = [[f"w{i}", f"r{i}"] for i in range(MAX_EXPIRY_LIST + 1)]
        junk = [
            b"not json",
            b'{"runs": []}',
            b'{"runs": "w r"}',
            b'{"runs": [["w", "not a token!"]]}',
            b'{"runs": [["w"]]}',
            b'{"runs": [["", "r1"]]}',
            orjson.dumps({"runs": too_many}),
            orjson.dumps({"runs": [["w" * 400, "r"]] * 90}),
        ]
        for body in junk:
            await (await client.pub.send(layout.removal("expire-list"), body))

        async def all_dead() -> bool:
            return len(dead) == len(junk)

        await wait_for(all_dead, timeout=30)
        reasons = [(m.headers or {}).get(REASON_HEADER, "") for m in dead]
        assert all("expiry list" in r for r in reasons), reasons
        # the daemon keeps working: runs close, and a closed one is deleted on request
        async with env.worker(task_queue="q", workflows=[echo_len]):
            assert await client.execute_workflow(echo_len, "ab", id="after", task_queue="q") == 2
        await client.get_workflow_handle("after").delete()
        assert await _gone(client, ["after"])


async def test_sigkill_of_df_server_while_runs_close_leaves_no_closed_run_behind(
    daemons: Daemons,
) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    daemons.server("--retention", "2s")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    try:
        daemons.worker(*WF, *ACT)
        opened = [
            await client.start_workflow(waiting_add, i, id=f"open-{i}", task_queue="tests")
            for i in range(3)
        ]
        closing = [f"closing-{i}" for i in range(60)]
        runs = [
            asyncio.create_task(client.execute_workflow(add_workflow, i, id=w, task_queue="tests"))
            for i, w in enumerate(closing)
        ]

        async def closing_now() -> bool:
            return sum(t.done() for t in runs) >= 10

        await wait_for(closing_now, timeout=60, interval=0.01)
        daemons.started[0].kill()  # in the middle of the closes
        daemons.server()
        assert await asyncio.gather(*runs) == [expected_add(i) for i in range(len(closing))]

        async def only_open_left() -> bool:
            usage = await client.pub.js.stream_info(
                client.layout.stream, subjects_filter=f"{client.layout.prefix}.rx.>"
            )
            return (
                await _runs(client) <= len(opened)
                and not usage.state.subjects
                and await _gone(client, closing)
            )

        await wait_for(only_open_left, timeout=90)
        for i, handle in enumerate(opened):
            assert (await handle.describe()).status == "running"
            await handle.signal("go", 1)
            assert await handle.result(timeout=30) == 2 * (i + 1)
    finally:
        await client.close()
