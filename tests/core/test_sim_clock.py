"""Activities in the Simulation take simulated time: async ones await on the simulated clock,
and all four activity timeouts fall on that clock, as the server and workers apply them."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from datetime import timedelta
from typing import Any, get_args

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.effects import Effect
from durablefuture.core.interpretation import _TABLE
from durablefuture.testing import Simulation, SimulationUnsupportedError
from durablefuture.testing._virtual_loop import StalledActivityError, VirtualLoop

T0 = 1_700_000_000.0


def opts(retry: int = 1, **timeouts: float) -> df.ActivityOptions:
    return df.ActivityOptions(
        retry_policy=df.RetryPolicy(
            initial_interval=1, backoff_coefficient=2, maximum_attempts=retry
        ),
        **{k: timedelta(seconds=v) for k, v in timeouts.items()},
    )


def events_of(sim: Simulation, wid: str, kind: type) -> list[Any]:
    return [e for e in sim.run_of(wid).events if isinstance(e, kind)]


async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}"


def call(seconds: float, options: dict[str, float], retry: int = 1) -> Generator[Any, Any, Any]:
    try:
        return (yield df.activity(nap, seconds, options=opts(retry, **options)))
    except df.ActivityError as err:
        return f"{type(err.cause).__name__}: {getattr(err.cause, 'timeout_type', '')}"


def test_an_async_activity_takes_simulated_time_not_real_time() -> None:
    sim = Simulation([call], [nap], start_time=T0)
    sim.start(call, 3 * 3600, {"start_to_close_timeout": 4 * 3600}, id="w")
    sim.run()
    assert sim.result("w") == "slept 10800"
    (done,) = events_of(sim, "w", ev.ActivityCompleted)
    assert done.at == T0 + 3 * 3600  # three simulated hours; the test itself takes milliseconds
    assert sim.now == T0 + 3 * 3600


def test_a_slow_attempt_times_out_at_its_start_to_close_and_is_retried_per_policy() -> None:
    sim = Simulation([call], [nap], start_time=T0)
    sim.start(call, 0.3, {"start_to_close_timeout": 0.1}, 3, id="w")
    sim.run()
    assert sim.result("w") == "TimeoutError: start_to_close"
    retries = events_of(sim, "w", ev.ActivityRetryScheduled)
    # attempt 1 ends at 0.1, waits 1 s; attempt 2 ends at 1.2, waits 2 s; attempt 3 ends at 3.3
    assert [(r.attempt, round(r.at - T0, 6), r.delay) for r in retries] == [
        (1, 0.1, 1),
        (2, 1.2, 2),
    ]
    (final,) = events_of(sim, "w", ev.ActivityTimedOut)
    assert (final.attempt, final.timeout_type, round(final.at - T0, 6)) == (
        3,
        "start_to_close",
        3.3,
    )
    assert [a for _, _, a in sim.activity_calls] == [1, 2, 3]


def test_schedule_to_close_bounds_all_attempts_together() -> None:
    sim = Simulation([call], [nap], start_time=T0)
    sim.start(call, 3, {"start_to_close_timeout": 2, "schedule_to_close_timeout": 5}, 0, id="w")
    sim.run()
    assert sim.result("w") == "TimeoutError: schedule_to_close"
    (final,) = events_of(sim, "w", ev.ActivityTimedOut)
    assert round(final.at - T0, 6) == 5.0


def test_schedule_to_start_fires_when_no_worker_serves_the_queue() -> None:
    def elsewhere() -> Generator[Any, Any, Any]:
        o = df.ActivityOptions(
            task_queue="gpu",
            schedule_to_start_timeout=timedelta(seconds=10),
            start_to_close_timeout=timedelta(seconds=10),
        )
        try:
            return (yield df.activity(nap, 1, options=o))
        except df.ActivityError as err:
            return getattr(err.cause, "timeout_type", "")

    sim = Simulation([elsewhere], [nap], start_time=T0, task_queues={"default"})
    sim.start(elsewhere, id="w")
    sim.run()
    assert sim.result("w") == "schedule_to_start"
    assert sim.activity_calls == []  # the task was never taken
    (final,) = events_of(sim, "w", ev.ActivityTimedOut)
    assert round(final.at - T0, 6) == 10.0


async def beating(total: int, stop_after: int) -> dict[str, Any]:
    info = df.activity_info()
    done = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
    for step in range(done, total):
        await asyncio.sleep(1)
        df.heartbeat(step + 1)
        if info.attempt == 1 and step + 1 == stop_after:
            await asyncio.sleep(3600)  # hangs without heartbeating
    return {"attempt": info.attempt, "resumed_from": done}


def beats(total: int, stop_after: int) -> Generator[Any, Any, Any]:
    o = opts(3, start_to_close_timeout=7200, heartbeat_timeout=2)
    return (yield df.activity(beating, total, stop_after, options=o))


def test_heartbeats_keep_an_attempt_alive_and_a_silent_one_times_out_with_its_details() -> None:
    sim = Simulation([beats], [beating], start_time=T0)
    sim.start(beats, 10, 4, id="w")
    sim.run()
    # attempt 1 beat at 1..4 s then went silent: its heartbeat timeout fell at 4 + 2 = 6 s,
    # and attempt 2 went on from the last details it reported
    assert sim.result("w") == {"attempt": 2, "resumed_from": 4}
    (retry,) = events_of(sim, "w", ev.ActivityRetryScheduled)
    assert retry.failure.timeout_type == "heartbeat"
    assert round(retry.at - T0, 6) == 6.0
    assert retry.heartbeat_details == (4,)
    started = events_of(sim, "w", ev.ActivityStarted)
    assert [s.attempt for s in started] == [1, 2]  # a heartbeat timeout reports the start at once


def test_the_server_heartbeat_timer_sees_heartbeats_sent_in_time() -> None:
    sim = Simulation([beats], [beating], start_time=T0)
    sim.start(beats, 10, 0, id="w")  # beats every second for 10 s, heartbeat_timeout 2 s
    sim.run()
    assert sim.result("w") == {"attempt": 1, "resumed_from": 0}
    assert events_of(sim, "w", ev.ActivityRetryScheduled) == []
    (done,) = events_of(sim, "w", ev.ActivityCompleted)
    assert round(done.at - T0, 6) == 10.0


async def info_of() -> dict[str, Any]:
    await asyncio.sleep(5)
    info = df.activity_info()
    assert info.start_to_close_deadline is not None
    return {
        "started": info.started_time.timestamp(),
        "deadline": info.start_to_close_deadline.timestamp(),
        "loop": asyncio.get_running_loop().time(),
    }


def ask_info() -> Generator[Any, Any, Any]:
    yield df.sleep(60)
    return (yield df.activity(info_of, options=opts(1, start_to_close_timeout=30)))


def test_activity_info_reads_the_simulated_clock() -> None:
    sim = Simulation([ask_info], [info_of], start_time=T0)
    sim.start(ask_info, id="w")
    sim.run()
    assert sim.result("w") == {"started": T0 + 60, "deadline": T0 + 90, "loop": 5.0}


def parallel() -> Generator[Any, Any, Any]:
    o = opts(1, start_to_close_timeout=60)
    return (yield df.all_of(df.activity(nap, 5, options=o), df.activity(nap, 1, options=o)))


def test_concurrent_activities_finish_in_simulated_time_order() -> None:
    sim = Simulation([parallel], [nap], start_time=T0)
    sim.start(parallel, id="w")
    sim.run()
    assert sim.result("w") == ["slept 5", "slept 1"]
    done = events_of(sim, "w", ev.ActivityCompleted)
    assert [(d.seq, round(d.at - T0, 6)) for d in done] == [(2, 1.0), (1, 5.0)]


async def waits_forever() -> None:
    await asyncio.Event().wait()


def stuck() -> Generator[Any, Any, Any]:
    return (yield df.activity(waits_forever, options=opts(1, start_to_close_timeout=60)))


def test_an_async_activity_waiting_for_the_outside_world_times_out_in_simulated_time() -> None:
    sim = Simulation([stuck], [waits_forever], start_time=T0)
    sim.start(stuck, id="w")
    sim.run()
    with pytest.raises(df.WorkflowFailedError, match="start_to_close"):
        sim.result("w")
    assert sim.now == T0 + 60


def test_a_simulated_loop_with_nothing_to_wait_for_says_so_instead_of_hanging() -> None:
    with (
        asyncio.Runner(loop_factory=VirtualLoop) as runner,
        pytest.raises(StalledActivityError, match="LocalEnvironment"),
    ):
        runner.run(asyncio.Event().wait())


async def uses_a_thread(n: int) -> int:
    return await asyncio.to_thread(lambda: n + 1)


def threaded() -> Generator[Any, Any, Any]:
    return (yield df.activity(uses_a_thread, 41, options=opts(1, start_to_close_timeout=1)))


def test_async_activities_may_await_threads() -> None:
    # repeated: the loop's own thread that joins its executor at the end must wake it too
    for n in range(20):
        sim = Simulation([threaded], [uses_a_thread])
        sim.start(threaded, id=f"w{n}")
        sim.run()
        assert sim.result(f"w{n}") == 42


def test_every_effect_has_an_interpretation() -> None:
    assert set(get_args(Effect)) == set(_TABLE)


def test_an_effect_the_simulation_cannot_carry_out_is_named_with_the_alternative() -> None:
    class StartNexusOperation:  # an effect the simulation knows nothing about
        pass

    sim = Simulation([call], [nap])
    run_id = sim.start(call, 1, {"start_to_close_timeout": 5}, id="w")
    with pytest.raises(SimulationUnsupportedError) as caught:
        sim._effects([StartNexusOperation()], run_id)  # type: ignore[list-item]
    message = str(caught.value)
    assert "StartNexusOperation" in message
    assert "LocalEnvironment" in message


def chained_child(n: int) -> Generator[Any, Any, Any]:
    if n == 0:
        yield df.continue_as_new(1)
    yield df.sleep(3600)
    return "child done"


def short_parent(policy: str) -> Generator[Any, Any, Any]:
    child = df.child_workflow(
        chained_child, 0, id="kid", parent_close_policy=df.ParentClosePolicy(policy)
    )
    index, _ = yield df.any_of(child, df.sleep(10))
    return index


@pytest.mark.parametrize(
    ("policy", "status"), [("terminate", "terminated"), ("request_cancel", "cancelled")]
)
def test_parent_close_policy_reaches_a_child_that_continued_as_new(
    policy: str, status: str
) -> None:
    sim = Simulation([short_parent, chained_child])
    sim.start(short_parent, policy, id="p")
    sim.run()
    assert sim.result("p") == 1
    first, latest = [r for r in sim.runs.values() if r.workflow_id == "kid"]
    assert first.state.status == "continued_as_new"
    assert latest.state.status == status  # the chain's latest run, not the first one
