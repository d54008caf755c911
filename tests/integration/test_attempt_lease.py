"""An activity attempt runs once, however often its task is delivered.

After a nats-server restart an activity task can come back as a new delivery while its
attempt runs on some worker, or after it finished. Here the task is stored a second time by
hand (what the restarted consumer does), and lands on a second, idle worker.
"""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

_gate: asyncio.Event | None = None
_runs: list[str] = []


async def once(tag: str) -> str:
    _runs.append(tag)
    assert _gate is not None
    await _gate.wait()
    return f"{tag} done"


def once_flow(tag: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30)
    return (yield df.activity(once, tag, options=opts))


async def test_a_task_delivered_again_to_another_worker_is_not_run_again() -> None:
    global _gate
    _gate = asyncio.Event()
    _runs.clear()
    # one activity at a time per worker: while the first runs the attempt, the second copy of
    # its task can only go to the other worker
    # (and the attempt's task stored: not run by the worker that decides it, eagerly)
    options = WorkerOptions(activity_lease=2.0, eager_activities=False)
    kwargs = {"max_concurrent_activities": 1, "options": options}
    async with LocalEnvironment() as env:
        layout = env.client.layout
        js = env.client.pub.js
        async with (
            env.worker(task_queue="q", workflows=[once_flow], activities=[once], **kwargs) as a,
            env.worker(task_queue="q", activities=[once], **kwargs) as b,
        ):
            handle = await env.client.start_workflow(once_flow, "x", id="lease", task_queue="q")
            await wait_for(lambda: len(_runs) == 1, 10)
            task = await js.get_last_msg(layout.stream, layout.activity_tasks("q"))
            await env.client.pub.publish(layout.activity_tasks("q"), task.data or b"")
            # the copy reached the other worker, which found the attempt held and waits on it
            await wait_for(lambda: b.stats["activity_tasks"] + a.stats["activity_tasks"] == 2, 10)
            _gate.set()
            assert await handle.result(timeout=15) == "x done"
            consumer = layout.activity_consumer("q")

            async def all_acked() -> bool:
                info = await js.consumer_info(layout.stream, consumer)
                return info.num_ack_pending == 0 and info.num_pending == 0

            await wait_for(all_acked, 10)
            history = await handle.fetch_history()
    assert _runs == ["x"]
    assert [type(e) for e in history] == [
        ev.WorkflowStarted,
        ev.ActivityScheduled,
        ev.ActivityCompleted,
        ev.WorkflowCompleted,
    ]


async def test_a_task_delivered_again_after_its_attempt_finished_is_not_run_again() -> None:
    global _gate
    _gate = asyncio.Event()
    _gate.set()
    _runs.clear()
    async with LocalEnvironment() as env:
        layout = env.client.layout
        js = env.client.pub.js
        async with env.worker(task_queue="q", workflows=[once_flow]):
            handle = await env.client.start_workflow(once_flow, "y", id="late", task_queue="q")
            # the activity runs on a worker that is gone when its task comes back
            async with env.worker(task_queue="q", activities=[once]):
                assert await handle.result(timeout=15) == "y done"
            task = await js.get_last_msg(layout.stream, layout.activity_tasks("q"))
            async with env.worker(task_queue="q", activities=[once]) as late:
                await env.client.pub.publish(layout.activity_tasks("q"), task.data or b"")
                await wait_for(lambda: late.stats["activity_tasks"] == 1, 10)
                consumer = layout.activity_consumer("q")

                async def acked() -> bool:
                    info = await js.consumer_info(layout.stream, consumer)
                    return info.num_ack_pending == 0 and info.num_pending == 0

                await wait_for(acked, 10)
    assert _runs == ["y"]
