"""Time skipping with the real daemons: ``LocalEnvironment(time_skipping=True)``.

The df-server and the workers are the production ones, sharing a skipping clock. Workflow
time is read from the workflow itself (``df.workflow.now()``), never from the wall clock;
each test only needs to finish within the suite's generous timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import pytest

import durablefuture as df
from durablefuture.testing import LocalEnvironment, WorkflowEnvironment

T = TypeVar("T")

DAY = 86_400.0
QUEUE = "skip"
LIMIT = 60.0
"""Real seconds any of these runs may take on a busy machine (they take far less)."""


async def within(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, LIMIT)


def month_then_signal() -> object:
    began = df.workflow.now().timestamp()
    yield df.sleep(timedelta(days=30))
    try:
        got = yield df.wait_signal("go", timeout=timedelta(days=2))
    except df.TimeoutError:
        got = "timed out"
    return {"got": got, "days": (df.workflow.now().timestamp() - began) / DAY}


def hangs(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def beats_once_then_hangs(seconds: float) -> str:
    df.heartbeat("beat")
    time.sleep(seconds)
    return "finished"


def timed_out(fn: str, seconds: float, kind: str) -> object:
    limit = 0.3
    options = (
        df.ActivityOptions(
            start_to_close_timeout=limit, retry_policy=df.RetryPolicy(maximum_attempts=1)
        )
        if kind == "start_to_close"
        else df.ActivityOptions(
            start_to_close_timeout=30,
            heartbeat_timeout=limit,
            retry_policy=df.RetryPolicy(maximum_attempts=1),
        )
    )
    try:
        result = yield df.activity(fn, seconds, options=options)
    except df.ActivityError as err:
        return {"timeout_type": getattr(err.cause, "timeout_type", None)}
    return {"result": result}


FAILS: dict[str, int] = {}


def fails_first(key: str) -> str:
    FAILS[key] = FAILS.get(key, 0) + 1
    if FAILS[key] == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


def hourly_retry(key: str) -> object:
    began = df.workflow.now().timestamp()
    policy = df.RetryPolicy(initial_interval=3600, maximum_attempts=2)
    opts = df.ActivityOptions(start_to_close_timeout=10, retry_policy=policy)
    result = yield df.activity(fails_first, key, options=opts)
    return {"result": result, "hours": (df.workflow.now().timestamp() - began) / 3600}


def never_picked_up() -> object:
    began = df.workflow.now().timestamp()
    opts = df.ActivityOptions(
        task_queue="nobody-serves-this",
        schedule_to_start_timeout=timedelta(minutes=10),
        start_to_close_timeout=10,
        retry_policy=df.RetryPolicy(maximum_attempts=1),
    )
    try:
        yield df.activity("missing", options=opts)
    except df.ActivityError as err:
        kind = getattr(err.cause, "timeout_type", None)
        return {"timeout_type": kind, "minutes": (df.workflow.now().timestamp() - began) / 60}
    return {"timeout_type": None}


WORKFLOWS = [month_then_signal, timed_out, hourly_retry, never_picked_up]
ACTIVITIES = [hangs, beats_once_then_hangs, fails_first]


async def test_a_month_long_workflow_skips_to_its_timeout() -> None:
    async with LocalEnvironment(time_skipping=True) as env:
        before = env.now()
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            out = await within(
                env.client.execute_workflow(month_then_signal, id="m1", task_queue=QUEUE)
            )
        assert out["got"] == "timed out"
        assert 32 <= out["days"] < 32.01
        assert (env.now() - before) >= timedelta(days=32)


async def test_a_signal_sent_while_skipping_is_delivered() -> None:
    async with LocalEnvironment(time_skipping=True) as env:
        # sent before any worker takes the run: buffered while the month is skipped
        handle = await env.client.start_workflow(month_then_signal, id="m2", task_queue=QUEUE)
        await handle.signal("go", "early")
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            out = await handle.result(timeout=LIMIT)
        assert out["got"] == "early"
        assert 30 <= out["days"] < 30.01


async def test_env_sleep_moves_time_and_a_signal_in_the_wait_is_delivered() -> None:
    async with LocalEnvironment(time_skipping=True) as env:
        env.auto_skip = False
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            handle = await env.client.start_workflow(month_then_signal, id="m3", task_queue=QUEUE)
            before = env.now()
            await env.sleep(timedelta(days=31))  # past the sleep, inside the 2-day wait
            assert env.now() - before >= timedelta(days=31)
            await handle.signal("go", "in time")
            out = await handle.result(timeout=LIMIT)
        assert out["got"] == "in time"
        assert 31 <= out["days"] < 31.01


@pytest.mark.parametrize(
    ("fn", "kind"),
    [("hangs", "start_to_close"), ("beats_once_then_hangs", "heartbeat")],
)
async def test_activity_timeouts_behave_as_in_production(fn: str, kind: str) -> None:
    async with LocalEnvironment(time_skipping=True) as env:
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            out = await within(
                env.client.execute_workflow(
                    timed_out, fn, 1.5, kind, id=f"t-{kind}", task_queue=QUEUE
                )
            )
        assert out == {"timeout_type": kind}


async def test_a_retry_backoff_of_an_hour_is_skipped() -> None:
    async with LocalEnvironment(time_skipping=True) as env:
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            out = await within(
                env.client.execute_workflow(hourly_retry, "r1", id="r1", task_queue=QUEUE)
            )
        assert out["result"] == "ok"
        assert 1 <= out["hours"] < 1.01


async def test_schedule_to_start_timeout_fires_in_skipped_time() -> None:
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with env.worker(QUEUE, WORKFLOWS, ACTIVITIES):
            out = await within(
                env.client.execute_workflow(never_picked_up, id="s1", task_queue=QUEUE)
            )
        assert out["timeout_type"] == "schedule_to_start"
        assert 10 <= out["minutes"] < 10.5


async def test_without_time_skipping_env_sleep_is_real() -> None:
    async with LocalEnvironment() as env:
        before = env.now()
        await env.sleep(0.05)
        assert env.now() > before
        with pytest.raises(RuntimeError):
            env.auto_skip = False
        await asyncio.sleep(0)


async def test_a_skipping_clock_fires_its_timers_in_order_when_it_jumps() -> None:
    from durablefuture.clock import SkippingClock

    clock = SkippingClock(start=1_000_000.0)
    fired: list[str] = []
    clock.call_at(clock.now() + 2 * DAY, lambda: fired.append("b"))
    clock.call_at(clock.now() + DAY, lambda: fired.append("a"))
    clock.call_at(clock.now() + 3 * DAY, lambda: fired.append("c")).cancel()
    assert clock.next_deadline() == pytest.approx(clock.now() + DAY, abs=1)
    clock.advance_to(clock.now() + 2.5 * DAY)
    for _ in range(3):
        await asyncio.sleep(0)
    assert fired == ["a", "b"]
    assert clock.next_deadline() is None
    assert clock.skipped == pytest.approx(2.5 * DAY, abs=1)
