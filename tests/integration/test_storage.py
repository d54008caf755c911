"""Storage stays bounded: handled inputs and tasks, and spent timers, leave the stream."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

import durablefuture as df
from durablefuture.codec.records import decode_expiry_list
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.usage import stream_usage
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import check_all, start_many

pytestmark = pytest.mark.asyncio

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


async def first(x: int) -> int:
    return x + 1


async def second(x: int) -> int:
    return 2 * x


def two_steps(x: int):  # type: ignore[no-untyped-def]
    a = yield df.activity(first, x)
    return (yield df.activity(second, a))


def racing(x: int):  # type: ignore[no-untyped-def]
    """Leaves a one-hour timer armed when it closes."""
    _index, value = yield df.any_of(df.sleep(3600), df.activity(first, x))
    return value


async def _kinds(env: LocalEnvironment) -> dict[str, int]:
    assert env.server is not None
    return (await stream_usage(env.client.pub.js, env.server.layout)).by_kind


async def test_finished_runs_leave_only_their_histories() -> None:
    # eager start off: the test checks that the inputs and tasks stored on the way are purged
    # (with eager start and its grants, a run like these stores none)
    options = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0)
    async with LocalEnvironment(server_options=options) as env:
        async with env.worker(task_queue="q", workflows=[two_steps], activities=[first, second]):
            for i in range(5):
                assert await env.client.execute_workflow(
                    two_steps, i, id=f"w{i}", task_queue="q"
                ) == (2 * (i + 1))
            # inputs and tasks were stored on the way (and are purged once acknowledged)
            await wait_for(lambda: _only_histories(env), timeout=15)
            assert (await _kinds(env))["rx"] == 5
            for i in range(5):  # every history is whole
                history = await env.client.get_workflow_handle(f"w{i}").fetch_history()
                assert type(history[0]).__name__ == "WorkflowStarted"
                assert type(history[-1]).__name__ == "WorkflowCompleted"
            assert env.server is not None and env.server.stats["compacted"] > 0


async def _only_histories(env: LocalEnvironment) -> bool:
    """Histories, and one expiry schedule per closed run (its retention: 7 days here)."""
    kinds = await _kinds(env)
    return set(kinds) == {"h", "rx"}


async def test_timers_of_a_closed_run_are_cancelled() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="q", workflows=[racing], activities=[first]):
            assert await env.client.execute_workflow(racing, 1, id="r", task_queue="q") == 2
            await wait_for(lambda: _only_histories(env), timeout=15)


async def test_unacknowledged_work_is_never_purged() -> None:
    async with LocalEnvironment() as env:
        assert env.server is not None
        layout = env.server.layout
        js = env.client.pub.js
        # someone else's consumer on the inputs, which never acknowledges anything
        await js.add_consumer(
            layout.stream,
            ConsumerConfig(
                durable_name="spy",
                filter_subject=layout.input("start"),
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        env.client.start_wait = 0  # the starts are stored inputs (not asked of df-server)
        # a task queue nobody serves: its tasks wait, whatever is compacted around them
        await env.client.start_workflow(two_steps, 1, id="waiting", task_queue="nobody")
        async with env.worker(task_queue="q", workflows=[two_steps], activities=[first, second]):
            for i in range(3):
                await env.client.execute_workflow(two_steps, i, id=f"w{i}", task_queue="q")
            await env.server.janitor_round()
            await env.server.janitor_round()
            kinds = await _kinds(env)
        assert kinds.get("wt") == 1  # the waiting run's task
        assert kinds.get("in", 0) >= 4  # every start: the spy holds them back
        info = await js.stream_info(layout.stream, subjects_filter=layout.input("start"))
        assert sum((info.state.subjects or {}).values()) == 4
        # once the spy has gone, they go too (a floor is acted on once two rounds read it)
        await js.delete_consumer(layout.stream, "spy")
        await env.server.janitor_round()
        await env.server.janitor_round()
        kinds = await _kinds(env)
        assert kinds.get("wt") == 1
        assert kinds.get("in", 0) == 0


async def test_sigkill_of_df_server_mid_work_loses_nothing_and_leaves_no_residue(
    daemons: Daemons,
) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.2"
    server = daemons.server()
    daemons.worker(*WF, *ACT)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    try:
        ids = await start_many(client, 30, "residue")
        await asyncio.sleep(0.7)  # runs are half way, some work already compacted
        server.kill()
        daemons.server()
        await check_all(client, ids, timeout=120)

        async def only_histories() -> bool:
            usage = await stream_usage(client.pub.js, client.layout)
            return set(usage.by_kind) == {"h", "rx"}

        await wait_for(only_histories, timeout=30)
        # and every closed run's expiry is armed: listed by an expiry schedule (runs closing
        # together share one)
        js, layout = client.pub.js, client.layout
        info = await js.stream_info(layout.stream, subjects_filter=f"{layout.prefix}.rx.>")
        listed = set()
        for subject in info.state.subjects or {}:
            msg = await js.get_last_msg(layout.stream, subject)
            listed |= {r.workflow_id for r in decode_expiry_list(msg.data or b"")}
        assert listed == set(ids)
    finally:
        await client.close()


def lingering(x: int):  # type: ignore[no-untyped-def]
    """Stays open after its activity closed and its sleep lost an any_of (cancelled)."""
    long = df.ActivityOptions(start_to_close_timeout=3600, schedule_to_close_timeout=7200)
    _index, value = yield df.any_of(df.sleep(3600), df.activity(first, x, options=long))
    yield df.wait_signal("go")
    return value


async def test_timers_with_nothing_left_to_guard_are_cancelled_in_an_open_run() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="q", workflows=[lingering], activities=[first]):
            handle = await env.client.start_workflow(lingering, 1, id="l", task_queue="q")

            async def waiting_without_timers() -> bool:
                history = await handle.fetch_history()
                waits = any(type(e).__name__ == "SignalWaitStarted" for e in history)
                return waits and "tm" not in await _kinds(env)

            await wait_for(waiting_without_timers, timeout=15)
            assert (await handle.describe()).status == "running"
            await handle.signal("go")
            assert await handle.result() == 2


async def test_a_run_that_never_armed_a_timer_costs_no_purge_request() -> None:
    """Cancelling timers is a purge request to nats-server (at an activity's completion and
    at the close); a run this df-server started and never armed a durable timer for has
    none to cancel, so it sends none. A run with a timer still gets its timers purged."""
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue="q", workflows=[two_steps, racing], activities=[first, second]
        ):
            assert env.server is not None
            layout = env.server.layout
            purged: list[str] = []  # the filters of the timer purges nats-server was asked for

            async def on_purge(msg: object) -> None:
                body = getattr(msg, "data", b"")
                if f'"{layout.prefix}.tm.'.encode() in body:
                    purged.append(body.decode())

            sub = await env.client.nc.subscribe(
                f"$JS.API.STREAM.PURGE.{layout.stream}", cb=on_purge
            )
            await env.client.nc.flush()
            plain = await env.client.start_workflow(two_steps, 1, id="plain", task_queue="q")
            assert await plain.result(timeout=30) == 4
            timed = await env.client.start_workflow(racing, 1, id="timed", task_queue="q")
            assert await timed.result(timeout=30) == 2
            # the timed run's purge comes after any the plain run would have sent
            await wait_for(lambda: any(timed.run_id in f for f in purged), timeout=15)
            assert plain.run_id is not None
            assert not [f for f in purged if plain.run_id in f], purged
            await sub.unsubscribe()
