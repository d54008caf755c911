"""A schedule holds the payload objects of its large arguments: retention removing one of its
runs (which named the same object) must not delete what the next action needs."""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
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
