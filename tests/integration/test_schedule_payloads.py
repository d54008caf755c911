"""A schedule holds the payload objects of its large arguments: retention removing one of its
runs (which named the same object) must not delete what the next action needs."""

from __future__ import annotations

import hashlib

import orjson
import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.payload_meta import newest_record
from durablefuture.transport.payload_store import schedule_holder
from durablefuture.transport.stored import leader_get
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio
BIG = "x" * (300 * 1024)  # over the claim threshold: stored by reference


def echo_len(text: str):  # type: ignore[no-untyped-def]
    return len(text)
    yield  # a generator: a workflow


async def _completed(handle: df.ScheduleHandle) -> list[str]:
    d = await handle.describe()
    return [a.workflow_id for a in d.recent_actions if a.status == "completed"]


async def test_a_schedule_keeps_its_argument_objects_when_its_runs_expire() -> None:
    opts = ServerOptions(retention=1.0, schedules=ScheduleOptions(poll_interval=0.5))
    async with LocalEnvironment(server_options=opts) as env:
        client = env.client
        async with env.worker(task_queue="sq", workflows=[echo_len]):
            sched = df.Schedule(
                action=df.ScheduleStartWorkflow(echo_len, BIG, id_prefix="job", task_queue="sq"),
                spec=df.ScheduleSpec(intervals=[df.Interval(every=3600)]),
                paused=True,
            )
            handle = await client.create_schedule("s", sched)
            await handle.trigger()
            (first,) = await wait_for(lambda: _completed(handle), timeout=30)

            async def removed() -> bool:
                try:
                    await client.get_workflow_handle(first).fetch_history()
                except df.WorkflowNotFoundError:
                    return True
                return False

            await wait_for(removed, timeout=60)  # retention removed the first run
        # a new client and worker: nothing remembered, the argument is read from the store
        fresh = await df.Client.connect(env.nats_url)
        try:
            async with env.worker(task_queue="sq", workflows=[echo_len]):
                again = fresh.get_schedule_handle("s")
                await again.trigger()

                async def second_done() -> list[str]:
                    done = await _completed(again)
                    return [w for w in done if w != first]

                (second,) = await wait_for(second_done, timeout=30)
                result = await fresh.get_workflow_handle(second).result(timeout=30)
        finally:
            await fresh.close()
    assert result == len(BIG)


OTHER = "y" * (300 * 1024)


def _name(value: str) -> str:
    """The payload object a plain JSON string travels in (no codec)."""
    return hashlib.sha256(orjson.dumps(value)).hexdigest()


def _schedule(arg: str) -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(echo_len, arg, id_prefix="job", task_queue="sq"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=3600)]),
        paused=True,
    )


async def _marked(env: LocalEnvironment, value: str) -> bool:
    """Whether schedule "s" has a marker of the object ``value`` travels in."""
    lay = env.client.layout
    subject = lay.payload_ref(_name(value), schedule_holder("s"))
    return (
        await leader_get(env.client.pub.nc, lay.stream, {"last_by_subj": subject}, "", 5.0)
        is not None
    )


async def _stored(env: LocalEnvironment, value: str) -> bool:
    client = env.client
    return (
        await newest_record(client.pub.nc, client.layout.payloads_bucket, _name(value)) is not None
    )


async def _sweeps(env: LocalEnvironment, more: int) -> None:
    server = env.server
    assert server is not None
    target = server.stats["payload_sweeps"] + more
    await wait_for(lambda: server.stats["payload_sweeps"] >= target, timeout=30)


async def test_a_schedule_holds_the_arguments_it_has_now_whatever_it_had_before() -> None:
    """An update releases the arguments it replaces; arguments taken back a moment later, and a
    schedule created again at once after its deletion, are held again (JetStream keeps the ids
    of purged markers for two minutes: a marker written again under the same id would be
    dropped as a duplicate)."""
    options = ServerOptions(
        payload_grace=0.5, status_delay=0, schedules=ScheduleOptions(poll_interval=0.5)
    )
    async with LocalEnvironment(server_options=options) as env:
        handle = await env.client.create_schedule("s", _schedule(BIG))
        assert await _marked(env, BIG)
        await handle.update(_schedule(OTHER))
        assert await _marked(env, OTHER)
        assert not await _marked(env, BIG), "the replaced argument is still held"
        await _sweeps(env, 2)  # each past the grace
        assert not await _stored(env, BIG) and await _stored(env, OTHER)

        await handle.update(_schedule(BIG))  # back, within the duplicate window
        assert await _marked(env, BIG) and not await _marked(env, OTHER)
        await _sweeps(env, 2)
        assert await _stored(env, BIG) and not await _stored(env, OTHER)

        await handle.delete()
        assert not await _marked(env, BIG)
        again = await env.client.create_schedule("s", _schedule(BIG))  # at once, the same name
        assert await _marked(env, BIG)
        await _sweeps(env, 2)
        assert await _stored(env, BIG)
        async with env.worker(task_queue="sq", workflows=[echo_len]):
            await again.trigger()
            (job,) = await wait_for(lambda: _completed(again), timeout=30)
            assert await env.client.get_workflow_handle(job).result(timeout=30) == len(BIG)
