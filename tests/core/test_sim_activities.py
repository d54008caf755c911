"""The simulation runs activities as a worker does: info, heartbeats, timeouts, awaiting
async activities; and answers queries and signal-with-start."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.testing import Simulation


def no_retry(**timeouts: float) -> df.ActivityOptions:
    return df.ActivityOptions(
        retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=1),
        **{k: timedelta(seconds=v) for k, v in timeouts.items()},
    )


def flaky_with_progress(total: int) -> dict[str, object]:
    info = df.activity_info()
    done = info.heartbeat_details[0] if info.heartbeat_details else 0
    for step in range(done, total):
        df.heartbeat(step + 1)
        if info.attempt == 1 and step == 1:
            raise RuntimeError("lost the connection")
    return {"attempt": info.attempt, "resumed_from": done, "name": info.activity_name}


def progress_flow(total: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=5),
        retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=3),
    )
    return (yield df.activity(flaky_with_progress, total, options=opts))


def test_activity_info_and_heartbeat_details_reach_the_next_attempt() -> None:
    sim = Simulation([progress_flow], [flaky_with_progress])
    sim.start(progress_flow, 5, id="p")
    sim.run()
    assert sim.result("p") == {"attempt": 2, "resumed_from": 2, "name": "flaky_with_progress"}


def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def silent(seconds: float) -> str:
    time.sleep(seconds)  # never heartbeats
    return "finished"


def timeout_flow(fn_name: str, seconds: float, opts: dict[str, float]):  # type: ignore[no-untyped-def]
    try:
        return (yield df.activity(fn_name, seconds, options=no_retry(**opts)))
    except df.ActivityError as err:
        return f"{type(err.cause).__name__}: {getattr(err.cause, 'timeout_type', '')}"


@pytest.mark.parametrize(
    ("fn", "opts", "expected"),
    [
        ("sleepy", {"start_to_close_timeout": 0.1}, "TimeoutError: start_to_close"),
        (
            "silent",
            {"start_to_close_timeout": 5, "heartbeat_timeout": 0.1},
            "TimeoutError: heartbeat",
        ),
        ("sleepy", {"start_to_close_timeout": 5}, "finished"),
    ],
)
def test_activity_timeouts_are_enforced(fn: str, opts: dict[str, float], expected: str) -> None:
    sim = Simulation([timeout_flow], [sleepy, silent])
    sim.start(timeout_flow, fn, 0.3, opts, id="t")
    sim.run()
    assert sim.result("t") == expected


async def awaits(n: int) -> int:
    await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    return n * 2


def async_flow(n: int):  # type: ignore[no-untyped-def]
    return (yield df.activity(awaits, n, options=no_retry(start_to_close_timeout=5)))


def test_async_activities_that_await_run() -> None:
    sim = Simulation([async_flow], [awaits])
    sim.start(async_flow, 21, id="a")
    sim.run()
    assert sim.result("a") == 42


async def test_async_activities_run_when_the_simulation_is_driven_from_a_loop() -> None:
    sim = Simulation([async_flow], [awaits])
    sim.start(async_flow, 4, id="a")
    sim.run()
    assert sim.result("a") == 8


def counting_flow():  # type: ignore[no-untyped-def]
    state = {"seen": []}
    df.workflow.set_query_handler("seen", lambda prefix="": [prefix + s for s in state["seen"]])
    while len(state["seen"]) < 2:
        state["seen"].append((yield df.wait_signal("add")))
    return state["seen"]


def test_queries_and_signal_with_start() -> None:
    sim = Simulation([counting_flow])
    sim.signal_with_start(counting_flow, id="c", signal="add", signal_args=["first"])
    sim.run()
    assert sim.query("c", "seen") == ["first"]
    assert sim.query("c", "seen", "> ") == ["> first"]
    sim.signal_with_start(counting_flow, id="c", signal="add", signal_args=["second"])
    sim.run()
    assert sim.result("c") == ["first", "second"]
