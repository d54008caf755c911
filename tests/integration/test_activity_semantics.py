"""Activity semantics against a real nats-server (issue 4).

Retry policies (exact attempt counts, the three backoff kinds, jitter, non-retryable errors,
``next_retry_delay``), the four activity timeouts (enforced by the worker and, for attempts
reported started, by the server's durable timers, also across SIGKILLs), heartbeats,
``df.activity_info()``, the workflow execution timeout, namespaces, task queues, worker
concurrency limits and option validation.

Timing assertions measure attempt start times and compare them with the delays the server
recorded; durable timers may fire up to ~0.3 s late, so only the lower bounds are tight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import handled, settled

LATE = 5.0
"""How late a retry or timeout may be here: a bound that catches one that waited for something
else (a redelivery, a restart), not a measure of timer precision, which depends on the
machine's load and is measured by the benchmarks (W5 lateness)."""
EARLY = 0.03
"""How early it may happen (millisecond rounding of schedules, clock reads)."""

# What activities saw, per workflow id (activities run in this process with LocalEnvironment).
STARTS: dict[str, list[float]] = defaultdict(list)
NOTES: dict[str, list[Any]] = defaultdict(list)


def _wid() -> str:
    return df.activity_info().workflow_id


async def _history(client: df.Client, wid: str) -> list[ev.Event]:
    return await client.get_workflow_handle(wid).fetch_history()


def _of(history: Sequence[ev.Event], cls: type) -> list[Any]:
    return [e for e in history if isinstance(e, cls)]


def _error_summary(err: df.ActivityError) -> dict[str, Any]:
    cause = err.cause
    assert cause is not None, err
    failure = getattr(cause, "failure", None)
    return {
        "attempt": err.attempt,
        "retry_state": err.retry_state,
        "cause": type(cause).__name__,
        "type": failure.type if failure is not None else None,
        "timeout_type": getattr(cause, "timeout_type", None),
        "message": str(cause),
    }


# --------------------------------------------------------------------------- retry policies

POLICIES: dict[str, df.RetryPolicy] = {
    "exponential": df.RetryPolicy(initial_interval=0.1, backoff_coefficient=2, maximum_attempts=4),
    "exponential-capped": df.RetryPolicy(
        initial_interval=0.1, backoff_coefficient=3, maximum_interval=0.25, maximum_attempts=4
    ),
    "linear": df.RetryPolicy(
        initial_interval=0.1, backoff_coefficient=2, backoff=df.Backoff.LINEAR, maximum_attempts=4
    ),
    "fixed": df.RetryPolicy(
        initial_interval=timedelta(milliseconds=150),
        backoff_coefficient=2,
        backoff=df.Backoff.FIXED,
        maximum_attempts=4,
    ),
    "single": df.RetryPolicy(initial_interval=0.05, maximum_attempts=1),
    "jitter": df.RetryPolicy(
        initial_interval=0.2, backoff=df.Backoff.FIXED, jitter=0.5, maximum_attempts=4
    ),
    "unlimited": df.RetryPolicy(initial_interval=0.05, maximum_interval=0.1),
}
EXPECTED_DELAYS: dict[str, list[float]] = {
    "exponential": [0.1, 0.2, 0.4],
    "exponential-capped": [0.1, 0.25, 0.25],
    "linear": [0.1, 0.3, 0.5],
    "fixed": [0.15, 0.15, 0.15],
    "single": [],
    "unlimited": [0.05, 0.1, 0.1, 0.1],
}


def flaky(policy: str) -> str:
    """Fails every attempt, except that "unlimited" succeeds on attempt 5."""
    info = df.activity_info()
    STARTS[info.workflow_id].append(time.time())
    if policy == "unlimited" and info.attempt == 5:
        return "ok on attempt 5"
    raise RuntimeError(f"attempt {info.attempt} fails")


def retry_flow(policy: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=5, retry_policy=POLICIES[policy])
    try:
        return (yield df.activity(flaky, policy, options=opts))
    except df.ActivityError as err:
        return _error_summary(err)


async def test_retry_policies_exact_attempts_and_backoff_gaps() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[retry_flow], activities=[flaky]):
            handles = {
                p: await env.client.start_workflow(retry_flow, p, id=f"retry-{p}") for p in POLICIES
            }
            results = {p: await h.result(timeout=20) for p, h in handles.items()}
            histories = {p: await _history(env.client, f"retry-{p}") for p in POLICIES}

    for policy, result in results.items():
        wid = f"retry-{policy}"
        starts = STARTS[wid]
        retries = _of(histories[policy], ev.ActivityRetryScheduled)
        delays = [r.delay for r in retries]
        if policy == "unlimited":
            assert result == "ok on attempt 5"
            assert len(starts) == 5
        else:
            expected_attempts = POLICIES[policy].maximum_attempts
            assert len(starts) == expected_attempts, (policy, starts)
            assert result["attempt"] == expected_attempts, (policy, result)
            assert result["retry_state"] == "maximum_attempts_reached", (policy, result)
            assert result["type"] == "RuntimeError", (policy, result)
            assert f"attempt {expected_attempts} fails" in result["message"], (policy, result)
            (failed,) = _of(histories[policy], ev.ActivityFailed)
            assert failed.attempt == expected_attempts
        if policy == "jitter":
            # +/- 50 % around 0.2 s, deterministic per attempt, not all the same
            assert all(0.1 - 1e-9 <= d <= 0.3 + 1e-9 for d in delays), delays
            assert len(set(delays)) > 1, delays
        else:
            assert delays == pytest.approx(EXPECTED_DELAYS[policy]), (policy, delays)
        # the measured gap between attempts honours the recorded delay
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert len(gaps) == len(delays)
        for gap, delay in zip(gaps, delays, strict=True):
            assert delay - EARLY <= gap <= delay + LATE, (policy, gaps, delays)
        # and the next attempt was dispatched for the time the server recorded
        for retry, nxt in zip(retries, starts[1:], strict=False):
            assert nxt >= retry.retry_at - EARLY, (policy, retry, nxt)


class PaymentError(Exception):
    pass


class CardDeclined(PaymentError):
    pass


def fails_as(kind: str) -> None:
    NOTES[_wid()].append(df.activity_info().attempt)
    if kind == "class-name":
        raise ValueError("bad amount")
    if kind == "base-class":
        raise CardDeclined("card declined")  # the policy names only its base class
    if kind == "application-type":
        raise df.ApplicationError("card declined", type="card-declined")
    if kind == "flag":
        raise df.ApplicationError("fatal, do not retry", non_retryable=True)
    if kind == "message-mentions-type":
        raise RuntimeError("ValueError is only mentioned in this message")
    raise KeyError(kind)


def non_retryable_flow(kind: str, names: list[str]):  # type: ignore[no-untyped-def]
    policy = df.RetryPolicy(
        initial_interval=0.05, maximum_attempts=3, non_retryable_error_types=names
    )
    opts = df.ActivityOptions(start_to_close_timeout=5, retry_policy=policy)
    try:
        yield df.activity(fails_as, kind, options=opts)
    except df.ActivityError as err:
        return _error_summary(err)
    return "unreachable"


async def test_non_retryable_error_types_and_flag() -> None:
    cases = {
        # kind: (non_retryable_error_types, expected attempts, expected retry_state, type)
        "class-name": (["ValueError"], 1, "non_retryable_error_type", "ValueError"),
        "base-class": (["PaymentError"], 1, "non_retryable_error_type", "CardDeclined"),
        "application-type": (["card-declined"], 1, "non_retryable_error_type", "card-declined"),
        "flag": ([], 1, "non_retryable", "ApplicationError"),
        "other": (["ValueError"], 3, "maximum_attempts_reached", "KeyError"),
        "message-mentions-type": (["ValueError"], 3, "maximum_attempts_reached", "RuntimeError"),
    }
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[non_retryable_flow], activities=[fails_as]):
            handles = {
                kind: await env.client.start_workflow(
                    non_retryable_flow, kind, names, id=f"nonretry-{kind}"
                )
                for kind, (names, *_rest) in cases.items()
            }
            results = {kind: await h.result(timeout=15) for kind, h in handles.items()}
    for kind, (_names, attempts, retry_state, type_name) in cases.items():
        result = results[kind]
        assert NOTES[f"nonretry-{kind}"] == list(range(1, attempts + 1)), (kind, result)
        assert result["attempt"] == attempts, (kind, result)
        assert result["retry_state"] == retry_state, (kind, result)
        assert result["cause"] == "ApplicationError", (kind, result)
        assert result["type"] == type_name, (kind, result)


def busy_then_ok() -> str:
    info = df.activity_info()
    STARTS[info.workflow_id].append(time.time())
    if info.attempt == 1:
        raise df.ApplicationError("busy, come back later", next_retry_delay=0.6)
    return f"ok on attempt {info.attempt}"


def next_retry_delay_flow():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=5, retry_policy=df.RetryPolicy(initial_interval=0.05)
    )
    return (yield df.activity(busy_then_ok, options=opts))


async def test_next_retry_delay_overrides_the_policy() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[next_retry_delay_flow], activities=[busy_then_ok]):
            result = await env.client.execute_workflow(
                next_retry_delay_flow, id="next-delay", timeout=10
            )
            history = await _history(env.client, "next-delay")
    assert result == "ok on attempt 2"
    (retry,) = _of(history, ev.ActivityRetryScheduled)
    assert retry.delay == pytest.approx(0.6)  # not the policy's 0.05
    first, second = STARTS["next-delay"]
    assert 0.6 - EARLY <= second - first <= 0.6 + LATE


def slow_second_attempt() -> str:
    info = df.activity_info()
    NOTES[info.workflow_id].append(info.attempt)
    if info.attempt == 1:
        raise RuntimeError("first attempt fails")
    time.sleep(0.8)  # running, not yet reported started, when the report is redelivered
    return f"ok on attempt {info.attempt}"


def deferred_retry_flow():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=5, retry_policy=df.RetryPolicy(initial_interval=0.3)
    )
    return (yield df.activity(slow_second_attempt, options=opts))


async def test_a_redelivered_report_does_not_dispatch_a_due_retry_twice() -> None:
    """Inputs are redelivered (a server crash before the ack, a timer's durable copy after its
    local fast path); re-deriving the retry dispatch after it fell due must not run it twice."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[deferred_retry_flow], activities=[slow_second_attempt]):
            handle = await env.client.start_workflow(deferred_retry_flow, id="redelivered")
            await wait_for(lambda: NOTES["redelivered"] == [1, 2], 10)
            (retry,) = _of(await handle.fetch_history(), ev.ActivityRetryScheduled)
            assert time.time() > retry.retry_at  # the deferred dispatch has fired
            server = env.server
            assert server is not None
            duplicates = server.stats["duplicates"]
            report = inp.FailActivityTask(handle.run_id or "", 1, 1, retry.failure)
            codec = env.client.codec
            await env.client.nc.publish(
                env.client.layout.input("report"),
                codec.encode_input(InputEnvelope("redelivered", input=report)),
            )
            await wait_for(lambda: server.stats["duplicates"] > duplicates, 5)
            assert await handle.result(timeout=10) == "ok on attempt 2"
            # any dispatch the duplicate re-derived has been handled by the worker
            await settled(env.client, "default")
    assert NOTES["redelivered"] == [1, 2]


# --------------------------------------------------------------------------- timeouts


async def hangs(mode: str) -> str:
    """Never finishes on its own; records whether the worker cancelled it."""
    info = df.activity_info()
    STARTS[info.workflow_id].append(time.time())
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        NOTES[info.workflow_id].append(("cancelled", info.attempt))
        raise
    return "finished"


def hangs_sync(seconds: float) -> str:
    info = df.activity_info()
    STARTS[info.workflow_id].append(time.time())
    time.sleep(seconds)
    NOTES[f"{info.workflow_id}/finished"].append(info.attempt)
    return "finished late"


def timeout_flow(kind: str):  # type: ignore[no-untyped-def]
    fast = df.RetryPolicy(initial_interval=0.05, backoff_coefficient=2)
    if kind == "start_to_close":
        opts = df.ActivityOptions(
            start_to_close_timeout=0.3, retry_policy=df.RetryPolicy(0.05, maximum_attempts=2)
        )
        call = df.activity(hangs, kind, options=opts)
    elif kind == "start_to_close_sync":
        opts = df.ActivityOptions(
            start_to_close_timeout=0.3, retry_policy=df.RetryPolicy(0.05, maximum_attempts=1)
        )
        call = df.activity(hangs_sync, 3.0, options=opts)
    elif kind == "schedule_to_close_timer":
        opts = df.ActivityOptions(
            start_to_close_timeout=5, schedule_to_close_timeout=0.6, retry_policy=fast
        )
        call = df.activity(hangs, kind, options=opts)
    elif kind == "schedule_to_close_queued":
        opts = df.ActivityOptions(
            task_queue="nobody-serves-this", schedule_to_close_timeout=0.5, retry_policy=fast
        )
        call = df.activity(hangs, kind, options=opts)
    elif kind == "schedule_to_close_retries":
        opts = df.ActivityOptions(
            start_to_close_timeout=5,
            schedule_to_close_timeout=1.0,
            retry_policy=df.RetryPolicy(initial_interval=0.1, backoff_coefficient=2),
        )
        call = df.activity(flaky, kind, options=opts)
    elif kind == "schedule_to_start":
        opts = df.ActivityOptions(
            task_queue="nobody-serves-this",
            start_to_close_timeout=5,
            schedule_to_start_timeout=0.4,
            retry_policy=fast,  # unlimited attempts: a schedule-to-start timeout is final anyway
        )
        call = df.activity(hangs, kind, options=opts)
    else:
        raise ValueError(kind)
    try:
        yield call
    except df.ActivityError as err:
        return _error_summary(err)
    return "unreachable"


async def test_start_to_close_enforced_by_the_worker() -> None:
    """Attempts shorter than the 'started' report are timed out by the worker alone."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[timeout_flow], activities=[hangs, hangs_sync]):
            async_result, sync_result = await asyncio.gather(
                env.client.execute_workflow(
                    timeout_flow, "start_to_close", id="stc-async", timeout=10
                ),
                env.client.execute_workflow(
                    timeout_flow, "start_to_close_sync", id="stc-sync", timeout=10
                ),
            )
            sync_finished_before = list(NOTES["stc-sync/finished"])
            histories = [await _history(env.client, w) for w in ("stc-async", "stc-sync")]
    assert async_result["attempt"] == 2 and async_result["retry_state"] == (
        "maximum_attempts_reached"
    )
    for result in (async_result, sync_result):
        assert result["cause"] == "TimeoutError", result
        assert result["timeout_type"] == "start_to_close", result
        assert "start_to_close_timeout of 0.3s" in result["message"], result
    assert sync_result["attempt"] == 1
    # the running attempts were cancelled (async) or abandoned (sync) at their deadline
    assert NOTES["stc-async"] == [("cancelled", 1), ("cancelled", 2)]
    # the result came while the abandoned sync attempt was still sleeping its 3 s
    assert sync_finished_before == []
    (retry,) = _of(histories[0], ev.ActivityRetryScheduled)
    assert retry.failure.timeout_type == "start_to_close"
    for history in histories:
        # never reported started, so no server timer existed: the worker enforced it
        assert not _of(history, ev.ActivityStarted)
        (timed_out,) = _of(history, ev.ActivityTimedOut)
        assert timed_out.timeout_type == "start_to_close"
    first, second = STARTS["stc-async"]
    assert 0.3 + 0.05 - EARLY <= second - first <= 0.35 + LATE


async def test_schedule_to_close_cuts_retries_and_times_out_a_running_attempt() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[timeout_flow], activities=[hangs, flaky]):
            retries_result, timer_result, queued_result = await asyncio.gather(
                env.client.execute_workflow(
                    timeout_flow, "schedule_to_close_retries", id="s2c-retries", timeout=10
                ),
                env.client.execute_workflow(
                    timeout_flow, "schedule_to_close_timer", id="s2c-timer", timeout=10
                ),
                env.client.execute_workflow(
                    timeout_flow, "schedule_to_close_queued", id="s2c-queued", timeout=10
                ),
            )
            retries_history = await _history(env.client, "s2c-retries")
            timer_history = await _history(env.client, "s2c-timer")
            queued_history = await _history(env.client, "s2c-queued")

    # an always-failing activity: retries stop where the next one would pass the deadline
    (scheduled,) = _of(retries_history, ev.ActivityScheduled)
    deadline = scheduled.at + 1.0
    retries = _of(retries_history, ev.ActivityRetryScheduled)
    assert retries, retries_history
    assert all(r.retry_at < deadline for r in retries)
    attempts = len(STARTS["s2c-retries"])
    assert 2 <= attempts <= 4  # 0, 0.1, 0.3, 0.7 s; the next (1.5 s) is past the deadline
    # the last attempt may be cut by the deadline before it starts (its retry timer was late)
    assert retries_result["attempt"] in (attempts, attempts + 1)
    assert retries_result["attempt"] == len(retries) + 1
    assert retries_result["retry_state"] in ("schedule_to_close_timeout", "timeout")
    closed = _of(retries_history, ev.ActivityFailed) + _of(retries_history, ev.ActivityTimedOut)
    assert len(closed) == 1 and closed[0].at <= deadline + LATE

    # a hanging attempt: the schedule-to-close deadline ends it although start_to_close is 5 s
    assert timer_result["cause"] == "TimeoutError", timer_result
    assert timer_result["timeout_type"] == "schedule_to_close", timer_result
    assert timer_result["attempt"] == 1
    assert NOTES["s2c-timer"] == [("cancelled", 1)]
    (scheduled,) = _of(timer_history, ev.ActivityScheduled)
    (timed_out,) = _of(timer_history, ev.ActivityTimedOut)
    assert timed_out.timeout_type == "schedule_to_close"
    assert 0.6 - EARLY <= timed_out.at - scheduled.at <= 0.6 + LATE
    assert not _of(timer_history, ev.ActivityRetryScheduled)

    # no worker serves the queue: only the server's durable timer can end the wait
    assert queued_result["timeout_type"] == "schedule_to_close", queued_result
    assert "s2c-queued" not in STARTS
    (scheduled,) = _of(queued_history, ev.ActivityScheduled)
    (timed_out,) = _of(queued_history, ev.ActivityTimedOut)
    assert 0.5 - EARLY <= timed_out.at - scheduled.at <= 0.5 + LATE


async def test_schedule_to_start_times_out_when_no_worker_serves_the_queue() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[timeout_flow], activities=[hangs]):
            result = await env.client.execute_workflow(
                timeout_flow, "schedule_to_start", id="s2s", timeout=10
            )
            history = await _history(env.client, "s2s")
            depths = await env.client.queue_depths("nobody-serves-this")
            # a worker for that queue turns up later: the given-up attempt is not run
            async with env.worker(task_queue="nobody-serves-this", activities=[hangs]) as late:
                await wait_for(lambda: late.stats["activity_tasks"] == 1, 5)
                layout = env.client.layout

                async def dealt_with() -> bool:  # acked after the outcome: run or refused
                    return "s2s" in STARTS or await handled(
                        env.client,
                        layout.activity_consumer("nobody-serves-this"),
                        layout.activity_tasks("nobody-serves-this"),
                    )

                await wait_for(dealt_with, 5)
    assert result["cause"] == "TimeoutError", result
    assert result["timeout_type"] == "schedule_to_start", result
    assert result["attempt"] == 1 and result["retry_state"] == "timeout", result
    assert "nobody-serves-this" in result["message"]  # says which queue has no worker
    assert "s2s" not in STARTS  # never ran
    assert not _of(history, ev.ActivityRetryScheduled)  # not retried, whatever the policy
    (scheduled,) = _of(history, ev.ActivityScheduled)
    (timed_out,) = _of(history, ev.ActivityTimedOut)
    assert 0.4 - EARLY <= timed_out.at - scheduled.at <= 0.4 + LATE
    # the task is still waiting in the queue nobody serves
    assert depths.get("activity_pending") == 1, depths


def heartbeat_then_stall() -> list[Any]:
    """Sync: reports progress, then hangs without heartbeats; the next attempt resumes."""
    info = df.activity_info()
    NOTES[info.workflow_id].append(list(info.heartbeat_details))
    if info.attempt == 1:
        for step in (1, 2, 3):
            df.heartbeat("step", step)
            time.sleep(0.05)
        time.sleep(1.2)  # no heartbeat for longer than heartbeat_timeout
        NOTES[f"{info.workflow_id}/finished"].append(info.attempt)
        return ["finished without heartbeats"]
    return list(info.heartbeat_details)


async def heartbeat_then_fail() -> list[Any]:
    """Async: reports progress, then fails; the next attempt sees the progress."""
    info = df.activity_info()
    if info.attempt == 1:
        df.heartbeat({"offset": 42})
        await asyncio.sleep(0.01)
        raise RuntimeError("crashed after making progress")
    return list(info.heartbeat_details)


async def never_heartbeats() -> None:
    info = df.activity_info()
    STARTS[info.workflow_id].append(time.time())
    await asyncio.sleep(30)


def heartbeat_storm() -> int:
    """Thousands of heartbeats in half a second must not mean thousands of messages."""
    n = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        n += 1
        df.heartbeat(n)
        time.sleep(0.0002)
    return n


def heartbeat_flow(kind: str):  # type: ignore[no-untyped-def]
    attempts = 1 if kind == "never" else 2
    opts = df.ActivityOptions(
        start_to_close_timeout=10,
        heartbeat_timeout=0.4 if kind != "storm" else 1.0,
        retry_policy=df.RetryPolicy(initial_interval=0.05, maximum_attempts=attempts),
    )
    fn = {
        "stall": heartbeat_then_stall,
        "fail": heartbeat_then_fail,
        "never": never_heartbeats,
        "storm": heartbeat_storm,
    }[kind]
    try:
        return (yield df.activity(fn, options=opts))
    except df.ActivityError as err:
        return _error_summary(err)


async def test_heartbeat_timeout_and_details_carried_to_the_next_attempt() -> None:
    acts = [heartbeat_then_stall, heartbeat_then_fail, never_heartbeats, heartbeat_storm]
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[heartbeat_flow], activities=acts):
            kv_stream = f"KV_{env.client.layout.activity_bucket}"
            js = env.client.pub.js
            before = (await js.stream_info(kv_stream)).state.last_seq
            storm = await env.client.execute_workflow(
                heartbeat_flow, "storm", id="hb-storm", timeout=10
            )
            after = (await js.stream_info(kv_stream)).state.last_seq
            stall, fail, never = await asyncio.gather(
                env.client.execute_workflow(heartbeat_flow, "stall", id="hb-stall", timeout=10),
                env.client.execute_workflow(heartbeat_flow, "fail", id="hb-fail", timeout=10),
                env.client.execute_workflow(heartbeat_flow, "never", id="hb-never", timeout=10),
            )
            stall_finished_before = list(NOTES["hb-stall/finished"])
            stall_history = await _history(env.client, "hb-stall")
    # the stalled attempt timed out on heartbeats and the next one resumed from its details
    assert stall == ["step", 3]
    assert NOTES["hb-stall"] == [[], ["step", 3]]
    (retry,) = _of(stall_history, ev.ActivityRetryScheduled)
    assert retry.failure.timeout_type == "heartbeat"
    assert list(retry.heartbeat_details) == ["step", 3]
    # the retry ran and the run closed while the stalled first attempt was still sleeping
    assert stall_finished_before == []
    # details reported before a failure reach the next attempt too (async activity)
    assert fail == [{"offset": 42}]
    # an activity that never heartbeats fails with a heartbeat timeout cause
    assert never["cause"] == "TimeoutError" and never["timeout_type"] == "heartbeat", never
    assert "heartbeat_timeout" in never["message"]
    assert never["attempt"] == 1
    # heartbeats are throttled: a few flushes, not one message per call
    assert storm > 500
    assert after - before <= 6, (storm, after - before)


@df.defn(name="info-probe")
def info_probe(x: int) -> dict[str, Any]:
    info = df.activity_info()
    if info.attempt == 1:
        df.heartbeat("first attempt details")
        raise RuntimeError("retry me")

    def ts(value: Any) -> float | None:
        return None if value is None else value.timestamp()

    return {
        "x": x,
        "attempt": info.attempt,
        "activity_id": info.activity_id,
        "activity_name": info.activity_name,
        "workflow_id": info.workflow_id,
        "workflow_type": info.workflow_type,
        "run_id": info.run_id,
        "namespace": info.namespace,
        "task_queue": info.task_queue,
        "scheduled": ts(info.scheduled_time),
        "started": ts(info.started_time),
        "schedule_to_close_deadline": ts(info.schedule_to_close_deadline),
        "start_to_close_deadline": ts(info.start_to_close_deadline),
        "heartbeat_timeout": info.heartbeat_timeout,
        "heartbeat_details": list(info.heartbeat_details),
        "now": time.time(),
    }


def first_step() -> str:
    return "first"


def info_flow():  # type: ignore[no-untyped-def]
    yield df.activity(first_step)
    opts = df.ActivityOptions(
        task_queue="probe-queue",
        start_to_close_timeout=10,
        schedule_to_close_timeout=30,
        heartbeat_timeout=5,
        retry_policy=df.RetryPolicy(initial_interval=0.05),
    )
    return (yield df.activity("info-probe", 7, options=opts))


async def test_activity_info_fields() -> None:
    async with LocalEnvironment(namespace="probe-ns") as env:
        async with (
            env.worker(task_queue="flows", workflows=[info_flow], activities=[first_step]),
            env.worker(task_queue="probe-queue", activities=[info_probe]),
        ):
            handle = await env.client.start_workflow(info_flow, id="info", task_queue="flows")
            info = await handle.result(timeout=10)
            history = await handle.fetch_history()
    scheduled = next(e for e in _of(history, ev.ActivityScheduled) if e.seq == 2)
    (retry,) = _of(history, ev.ActivityRetryScheduled)
    assert info["x"] == 7
    assert info["attempt"] == 2
    assert info["activity_id"] == 2
    assert info["activity_name"] == "info-probe"
    assert info["workflow_id"] == "info"
    assert info["workflow_type"] == "info_flow"
    assert info["run_id"] == handle.run_id
    assert info["namespace"] == "probe-ns"
    assert info["task_queue"] == "probe-queue"
    assert info["scheduled"] == pytest.approx(scheduled.at, abs=1e-3)
    assert retry.retry_at - EARLY <= info["started"] <= info["now"]
    assert info["start_to_close_deadline"] == pytest.approx(info["started"] + 10, abs=1e-3)
    assert info["schedule_to_close_deadline"] == pytest.approx(scheduled.at + 30, abs=1e-3)
    assert info["heartbeat_timeout"] == 5
    assert info["heartbeat_details"] == ["first attempt details"]


# --------------------------------------------------------------------------- execution timeout


async def works_until_cancelled() -> str:
    wid = _wid()
    try:
        while True:
            df.heartbeat()
            await asyncio.sleep(0.05)
    except df.CancelledError:
        NOTES[wid].append(("cancelled", time.time()))
        raise


def long_flow():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30, heartbeat_timeout=1)
    yield df.activity(works_until_cancelled, options=opts)
    return "unreachable"


def backoff_flow():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=5, retry_policy=df.RetryPolicy(initial_interval=0.8)
    )
    yield df.activity(flaky, "backoff", options=opts)


def looping_flow(n: int):  # type: ignore[no-untyped-def]
    yield df.sleep(0.1)
    yield df.continue_as_new(n + 1)


async def test_execution_timeout_ends_the_run_and_cancels_its_activity() -> None:
    timeout = df.WorkflowOptions(execution_timeout=timedelta(milliseconds=700))
    chain_timeout = df.WorkflowOptions(execution_timeout=1.2)
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[long_flow, looping_flow, backoff_flow],
            activities=[works_until_cancelled, flaky],
        ):
            t0 = time.time()
            handle = await env.client.start_workflow(long_flow, id="exec-timeout", options=timeout)
            in_backoff = await env.client.start_workflow(
                backoff_flow, id="exec-backoff", options=df.WorkflowOptions(execution_timeout=0.4)
            )
            chain = await env.client.start_workflow(
                looping_flow, 0, id="exec-chain", options=chain_timeout
            )
            with pytest.raises(df.WorkflowTimedOutError):
                await handle.result(timeout=10)
            elapsed = time.time() - t0
            with pytest.raises(df.WorkflowTimedOutError):
                await chain.result(timeout=10)  # followed through the continue-as-new chain
            chain_elapsed = time.time() - t0
            history = await handle.fetch_history()
            description = await handle.describe()
            await wait_for(lambda: NOTES["exec-timeout"], 5)
            chain_runs = await env.client.list_workflows(workflow_type="looping_flow")
            with pytest.raises(df.WorkflowTimedOutError):
                await in_backoff.result(timeout=5)
            (retry,) = _of(await in_backoff.fetch_history(), ev.ActivityRetryScheduled)
            js = env.client.pub.js
            layout = env.client.layout
            dispatch = layout.timer(in_backoff.run_id or "", f"r{retry.seq}.{retry.attempt + 1}")

            async def fired_or_dropped() -> bool:  # the retry's schedule is gone either way
                info = await js.stream_info(layout.stream, subjects_filter=dispatch)
                return not info.state.subjects

            await wait_for(fired_or_dropped, 10)
            await settled(env.client, "default")  # and the worker has handled what it sent
    assert elapsed >= 0.7 - EARLY  # never before the timeout (it ended a 30 s activity)
    assert isinstance(history[-1], ev.WorkflowTimedOut)
    assert description.status == "timed_out"
    # the running activity learnt through its heartbeat that it is no longer wanted
    (_, cancelled_at) = NOTES["exec-timeout"][0]
    assert cancelled_at >= history[-1].at - EARLY  # cancelled because the run timed out
    # the timeout bounds the whole chain (each run is short), not each run
    assert chain_elapsed >= 1.2 - EARLY
    # an activity waiting for its retry when the run timed out is abandoned: not run again
    assert len(STARTS["exec-backoff"]) == 1
    statuses = sorted(d.status for d in chain_runs)
    assert statuses.count("timed_out") == 1, statuses
    assert statuses.count("continued_as_new") == len(statuses) - 1 >= 1, statuses


# --------------------------------------------------------------------------- isolation


@df.defn(name="work")
def work_in_a(x: str) -> str:
    return f"A:{x}:{df.activity_info().namespace}"


@df.defn(name="work")
def work_in_b(x: str) -> str:
    return f"B:{x}:{df.activity_info().namespace}"


def isolated_flow(x: str):  # type: ignore[no-untyped-def]
    return (yield df.activity("work", x))


async def test_namespaces_are_isolated() -> None:
    async with LocalEnvironment(namespace="ns-a") as env:
        server_b = await Server.connect(env.nats_url, ServerOptions(namespace="ns-b"))
        await server_b.start()
        server_task = asyncio.create_task(server_b.run())
        client_b = await df.Client.connect(env.nats_url, namespace="ns-b")
        worker_client_b = await df.Client.connect(env.nats_url, namespace="ns-b")
        try:
            async with env.worker(
                task_queue="shared", workflows=[isolated_flow], activities=[work_in_a]
            ) as worker_a:
                # the same workflow id in both namespaces: two workflows, no conflict
                handle_b = await client_b.start_workflow(
                    isolated_flow, "two", id="same-id", task_queue="shared"
                )

                async def b_task_waits() -> bool:
                    return (await client_b.queue_depths("shared")).get("workflow_pending") == 1

                await wait_for(b_task_waits, 5)
                # namespace A's worker on the same queue name never gets B's tasks: A's run
                # goes through all its tasks while B's first one waits
                handle_a = await env.client.start_workflow(
                    isolated_flow, "one", id="same-id", task_queue="shared"
                )
                assert handle_a.run_id != handle_b.run_id
                assert await handle_a.result(timeout=10) == "A:one:ns-a"
                history_b = await handle_b.fetch_history()
                # B's first workflow task was never run (by A's worker or anyone else)
                assert [type(e) for e in history_b] == [ev.WorkflowStarted]
                depths_b = await client_b.queue_depths("shared")
                assert (depths_b["workflow_pending"], depths_b["workflow_in_flight"]) == (1, 0)
                assert worker_a.stats["activity_tasks"] == 1
                a_workflow_tasks = worker_a.stats["workflow_tasks"]
                with pytest.raises(df.WorkflowNotFoundError):
                    await env.client.get_workflow_handle("only-in-b").fetch_history()
                await client_b.start_workflow(
                    isolated_flow, "three", id="only-in-b", task_queue="shared"
                )
                worker_b = df.Worker(worker_client_b, "shared", [isolated_flow], [work_in_b])
                async with worker_b:
                    assert await handle_b.result(timeout=10) == "B:two:ns-b"
                    only_b = client_b.get_workflow_handle("only-in-b")
                    assert await only_b.result(timeout=10) == "B:three:ns-b"
                assert worker_a.stats["workflow_tasks"] == a_workflow_tasks
                assert worker_a.stats["activity_tasks"] == 1
            with pytest.raises(df.WorkflowNotFoundError):
                await env.client.get_workflow_handle("only-in-b").fetch_history()

            # listing goes through the df-servers' visibility index, which follows the status
            # entries through a watch: wait until it has the closes
            async def listed(client: df.Client, n: int) -> bool:
                return len(await client.list_workflows()) == n

            await wait_for(lambda: listed(env.client, 1), 10)
            await wait_for(lambda: listed(client_b, 2), 10)
            # each namespace has its own stream, subjects and buckets
            js = env.client.pub.js
            a_info = await js.stream_info("DF_ns-a")
            b_info = await js.stream_info("DF_ns-b")
            assert a_info.config.subjects == ["df.ns-a.>"]
            assert b_info.config.subjects == ["df.ns-b.>"]
        finally:
            await client_b.close()
            await worker_client_b.close()
            await server_b.shutdown()
            server_task.cancel()
            await asyncio.gather(server_task, return_exceptions=True)


def local_work(x: int) -> dict[str, Any]:
    info = df.activity_info()
    return {"queue": info.task_queue, "value": x + 1}


def gpu_work(x: int) -> dict[str, Any]:
    info = df.activity_info()
    return {"queue": info.task_queue, "value": x * 10}


def routed_flow(x: int):  # type: ignore[no-untyped-def]
    a = yield df.activity(local_work, x)
    gpu = df.ActivityOptions(task_queue="gpu-pool", start_to_close_timeout=5)
    b = yield df.activity(gpu_work, x, options=gpu)
    return [a, b]


async def test_task_queues_route_activities_and_show_their_depth() -> None:
    async with LocalEnvironment() as env:
        client = env.client
        async with (
            env.worker(task_queue="main", workflows=[routed_flow], activities=[local_work]) as main,
            env.worker(task_queue="gpu-pool", activities=[gpu_work]) as gpu,
        ):
            result = await client.execute_workflow(
                routed_flow, 1, id="routed", task_queue="main", timeout=10
            )
            assert result == [{"queue": "main", "value": 2}, {"queue": "gpu-pool", "value": 10}]
            # each pool ran only what was routed to it (it has nothing else registered)
            assert main.stats["activity_tasks"] == 1 and gpu.stats["activity_tasks"] == 1
            assert gpu.stats["workflow_tasks"] == 0
            # a workflow on a queue nobody serves waits there, visibly
            js = client.pub.js
            # main's workflow tasks: its queue's, and its own sticky ones (runs it caches)
            main_consumers = [
                client.layout.workflow_consumer("main"),
                client.layout.sticky_consumer("main", main.sticky_token),
            ]

            async def delivered_to_main() -> int:
                infos = [await js.consumer_info(client.layout.stream, c) for c in main_consumers]
                return sum(i.delivered.consumer_seq for i in infos)

            tasks_before = main.stats["workflow_tasks"]
            delivered_before = await delivered_to_main()
            waiting = await client.start_workflow(routed_flow, 2, id="waiting", task_queue="later")

            async def later_pending() -> bool:
                return (await client.queue_depths("later")).get("workflow_pending") == 1

            await wait_for(later_pending, 5)
            # the main pool takes work while it waits, yet only from its own queue
            after = await client.execute_workflow(
                routed_flow, 4, id="after-waiting", task_queue="main", timeout=10
            )
            assert after == [{"queue": "main", "value": 5}, {"queue": "gpu-pool", "value": 40}]
            await settled(client, "main")
            delivered = await delivered_to_main()
            assert main.stats["workflow_tasks"] - tasks_before == delivered - delivered_before
            assert (await client.queue_depths("later")).get("workflow_pending") == 1
            assert len(await waiting.fetch_history()) == 1
        # no worker runs at all: routed tasks wait in their queues
        queued = await client.start_workflow(routed_flow, 3, id="queued", task_queue="main")

        async def pending() -> bool:
            return (await client.queue_depths("main")).get("workflow_pending") == 1

        await wait_for(pending, 5)
        async with (
            env.worker(task_queue="main", workflows=[routed_flow], activities=[local_work]),
            env.worker(task_queue="later", workflows=[routed_flow], activities=[local_work]),
            env.worker(task_queue="gpu-pool", activities=[gpu_work]),
        ):
            assert (await queued.result(timeout=10))[1] == {"queue": "gpu-pool", "value": 30}
            assert (await waiting.result(timeout=10))[0] == {"queue": "later", "value": 3}
            depths = await client.queue_depths("main")
    assert depths["workflow_pending"] == 0 and depths["activity_pending"] == 0


RUNNING = {"now": 0, "max": 0}
RUNNING_LOCK = threading.Lock()


async def overlapping(i: int) -> int:
    with RUNNING_LOCK:
        RUNNING["now"] += 1
        RUNNING["max"] = max(RUNNING["max"], RUNNING["now"])
    try:
        await asyncio.sleep(0.25)
    finally:
        with RUNNING_LOCK:
            RUNNING["now"] -= 1
    return i


def fan_out_flow(n: int):  # type: ignore[no-untyped-def]
    return (yield df.all_of(df.activity(overlapping, i) for i in range(n)))


async def test_max_concurrent_activities_limits_overlap() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[fan_out_flow], activities=[overlapping], max_concurrent_activities=2
        ):
            handle = await env.client.start_workflow(fan_out_flow, 6, id="fan-out")
            depth_seen = 0
            while True:
                depth = await env.client.queue_depths("default")
                depth_seen = max(depth_seen, depth.get("activity_pending", 0))
                try:
                    result = await handle.result(timeout=0.05)
                    break
                except TimeoutError:
                    continue
    assert result == list(range(6))
    assert RUNNING["max"] == 2  # in parallel, but never more than the limit
    assert depth_seen >= 1  # the rest waited in the queue


# --------------------------------------------------------------------------- validation


def charge(order_id: str, amount: float) -> str:
    return order_id


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: df.RetryPolicy(initial_interval=0), ["initial_interval", "> 0", "timedelta"]),
        (lambda: df.RetryPolicy(initial_interval=-1), ["initial_interval", "got -1"]),
        (lambda: df.RetryPolicy(backoff_coefficient=0.5), ["backoff_coefficient", ">= 1"]),
        (
            lambda: df.RetryPolicy(backoff=df.Backoff.LINEAR, backoff_coefficient=-1),
            ["backoff_coefficient", "LINEAR"],
        ),
        (
            lambda: df.RetryPolicy(initial_interval=2, maximum_interval=1),
            ["maximum_interval", "initial_interval"],
        ),
        (lambda: df.RetryPolicy(maximum_attempts=-1), ["maximum_attempts", ">= 0"]),
        (lambda: df.RetryPolicy(maximum_attempts=2.5), ["maximum_attempts", "int"]),  # type: ignore[arg-type]
        (lambda: df.RetryPolicy(jitter=1.5), ["jitter", "between 0 and 1"]),
        (lambda: df.RetryPolicy(backoff="sideways"), ["backoff", "EXPONENTIAL, LINEAR or FIXED"]),  # type: ignore[arg-type]
        (lambda: df.RetryPolicy(non_retryable_error_types=[42]), ["non_retryable_error_types"]),  # type: ignore[list-item]
        (
            lambda: df.ActivityOptions(start_to_close_timeout=0),
            ["start_to_close_timeout", "> 0", "None"],
        ),
        (lambda: df.ActivityOptions(heartbeat_timeout=-1), ["heartbeat_timeout", "got -1"]),
        (
            lambda: df.ActivityOptions(schedule_to_start_timeout=timedelta(seconds=-1)),
            ["schedule_to_start_timeout"],
        ),
        (lambda: df.ActivityOptions(schedule_to_close_timeout=0), ["schedule_to_close_timeout"]),
        (lambda: df.ActivityOptions(task_queue="two words"), ["task queue", "letters, digits"]),
        (lambda: df.ActivityOptions(retry_policy={"maximum_attempts": 3}), ["df.RetryPolicy"]),  # type: ignore[arg-type]
        (lambda: df.WorkflowOptions(execution_timeout=0), ["execution_timeout", "> 0"]),
        (lambda: df.activity(charge, "o-1"), ["amount"]),
        (lambda: df.activity(charge, "o-1", 1.0, 2), ["charge"]),
        (lambda: df.activity(charge, "o-1", object()), ["argument 1", "object"]),
        (lambda: df.activity(charge, "o-1", 1.0, options=5), ["df.ActivityOptions"]),  # type: ignore[arg-type]
    ],
)
def test_bad_values_are_rejected_where_they_are_built(build: Any, words: list[str]) -> None:
    with pytest.raises((df.InvalidArgumentError, df.PayloadError)) as info:
        build()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_valid_options_normalise_durations_and_error_types() -> None:
    policy = df.RetryPolicy(
        initial_interval=timedelta(milliseconds=250),
        non_retryable_error_types=[ValueError, "CardDeclined"],
        backoff="linear",  # type: ignore[arg-type]
    )
    assert policy.initial_interval == 0.25
    assert policy.non_retryable_error_types == ("ValueError", "CardDeclined")
    assert policy.backoff is df.Backoff.LINEAR
    assert policy.effective_maximum_interval == 25.0  # 100 x initial by default
    default = df.RetryPolicy()
    assert (default.initial_interval, default.backoff_coefficient, default.maximum_attempts) == (
        1.0,
        2.0,
        0,
    )
    resolved = df.ActivityOptions().resolved("q")
    assert resolved.start_to_close_timeout == 300.0 and resolved.task_queue == "q"


def bad_call_flow():  # type: ignore[no-untyped-def]
    yield df.activity(charge, "o-1")  # missing the amount


async def test_bad_activity_call_inside_a_workflow_fails_it_with_the_reason() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[bad_call_flow], activities=[charge]):
            with pytest.raises(df.WorkflowFailedError) as info:
                await env.client.execute_workflow(bad_call_flow, id="bad-call", timeout=10)
    assert "amount" in str(info.value.cause)


@dataclasses.dataclass
class Parcel:
    sku: str
    weight: float


def weigh(parcel: Parcel) -> float:
    return parcel.weight


def misfit_parcel_flow():  # type: ignore[no-untyped-def]
    try:
        yield df.activity(weigh, {"weight": "heavy"})
    except df.ActivityError as err:
        return {"type": err.cause.failure.type, "message": err.cause.failure.message}  # type: ignore[union-attr]
    return "unreachable"


async def test_activity_arguments_that_do_not_fit_fail_once_naming_each_field() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[misfit_parcel_flow], activities=[weigh]):
            out = await env.client.execute_workflow(misfit_parcel_flow, id="misfit", timeout=15)
            history = await _history(env.client, "misfit")
    assert out == {
        "type": "PayloadError",
        "message": "cannot turn argument 'parcel' of activity 'weigh' into Parcel: "
        "field 'sku' missing; field 'weight' expected float, got str 'heavy'",
    }
    assert len(_of(history, ev.ActivityScheduled)) == 1 and not _of(
        history, ev.ActivityRetryScheduled
    )  # not retried: the same payload cannot fit next time either


# --------------------------------------------------------------------------- crashes (daemons)

DAEMON_MODULE = "tests.integration.test_activity_semantics"


def _exec_log(line: str) -> None:
    path = os.environ.get("DF_TEST_EXEC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{line} {time.time()}\n")


def stuck_first_attempt(tag: str) -> str:
    info = df.activity_info()
    _exec_log(f"{tag} {info.attempt}")
    if info.attempt == 1:
        time.sleep(60)  # the process is killed meanwhile
    # still running (and not yet reported started) when the durable copy of the timer that
    # scheduled this retry arrives after its local fast path: it must not be dispatched again
    time.sleep(0.7)
    return f"{tag} done on attempt {info.attempt}"


def fails_first_attempt(tag: str) -> str:
    info = df.activity_info()
    _exec_log(f"{tag} {info.attempt}")
    if info.attempt == 1:
        raise RuntimeError("first attempt fails")
    return f"{tag} done on attempt {info.attempt}"


def stc_crash_flow(tag: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=3,
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=3),
    )
    return (yield df.activity(stuck_first_attempt, tag, options=opts))


def backoff_crash_flow(tag: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=10,
        retry_policy=df.RetryPolicy(initial_interval=3.0, maximum_attempts=3),
    )
    return (yield df.activity(fails_first_attempt, tag, options=opts))


def heartbeats_then_dies(tag: str) -> list[Any]:
    """Attempt 1 reports progress until its worker is killed; attempt 2 resumes from it."""
    info = df.activity_info()
    _exec_log(f"{tag} {info.attempt}")
    if info.attempt == 1:
        for step in range(1, 10_000):
            df.heartbeat({"step": step})
            time.sleep(0.05)
    return list(info.heartbeat_details)


def heartbeat_crash_flow(tag: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=60,  # far away: the heartbeat timeout must catch the crash
        heartbeat_timeout=1.0,
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=3),
    )
    return (yield df.activity(heartbeats_then_dies, tag, options=opts))


def leased_flow(tag: str):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go")
    opts = df.ActivityOptions(
        task_queue="leased",  # served by workers with a short --activity-lease
        start_to_close_timeout=60,
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=3),
    )
    return (yield df.activity(stuck_first_attempt, tag, options=opts))


DAEMON_WORKFLOWS = [stc_crash_flow, backoff_crash_flow, heartbeat_crash_flow, leased_flow]
DAEMON_ACTIVITIES = [stuck_first_attempt, fails_first_attempt, heartbeats_then_dies]
_WORKER_ARGS = (
    "--workflows",
    f"{DAEMON_MODULE}:DAEMON_WORKFLOWS",
    "--activities",
    f"{DAEMON_MODULE}:DAEMON_ACTIVITIES",
    "--activity-lease",
    "30",  # a lost attempt is NOT handed to another worker within the test
)


def _executions(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        tag, attempt, at = line.split()
        out.append((tag, int(attempt), float(at)))
    return out


def _single_close(history: list[ev.Event]) -> None:
    terminals = [e for e in history if isinstance(e, ev.TERMINAL_EVENTS)]
    assert len(terminals) == 1 and history[-1] is terminals[0], history
    assert isinstance(terminals[0], ev.WorkflowCompleted), terminals
    outcomes = [
        (e.seq, e.attempt)
        for e in history
        if isinstance(e, ev.ActivityCompleted | ev.ActivityRetryScheduled | ev.ActivityFailed)
    ]
    assert len(outcomes) == len(set(outcomes)), outcomes


async def _started_attempt(client: df.Client, wid: str) -> bool:
    try:
        return bool(_of(await _history(client, wid), ev.ActivityStarted))
    except df.WorkflowNotFoundError:
        return False


_LEASED_ARGS = (
    "--activities",
    f"{DAEMON_MODULE}:DAEMON_ACTIVITIES",
    "--activity-lease",
    "2",
)


async def test_attempts_of_a_sigkilled_worker_time_out_and_are_retried(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A started attempt is timed out by the server's timers (start-to-close, heartbeat); one
    killed before it was reported started is found when its task lease runs out."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    # the killed worker's workflow tasks go to the task queue after 1 s, not 5 s
    daemons.server("--sticky-timeout", "1")
    worker = daemons.worker(*_WORKER_ARGS)
    leased_worker = daemons.worker(*_LEASED_ARGS, task_queue="leased")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow(stc_crash_flow, "stc", id="stc", task_queue="tests")
        beating = await client.start_workflow(
            heartbeat_crash_flow, "hb", id="hb", task_queue="tests"
        )
        leased = await client.start_workflow(leased_flow, "lease", id="lease", task_queue="tests")

        async def progress_flushed() -> bool:
            try:
                entry = await kv.get(client.layout.heartbeat_key(beating_run, 1))
            except nats.js.errors.KeyNotFoundError:
                return False
            return b"step" in (entry.value or b"")

        # the attempts are reported started, so the server arms their start-to-close and
        # heartbeat timers; then the worker dies with both attempts
        kv = await client.pub.js.key_value(client.layout.activity_bucket)
        beating_run = beating.run_id or ""
        await wait_for(lambda: _started_attempt(client, "stc"), 20)
        await wait_for(progress_flushed, 10)
        await leased.signal("go")
        await wait_for(lambda: ("lease", 1) in [(t, a) for t, a, _ in _executions(log)], 10)
        worker.kill()
        leased_worker.kill()
        killed_at = time.time()
        daemons.worker(*_WORKER_ARGS)
        daemons.worker(*_LEASED_ARGS, task_queue="leased")
        assert await handle.result(timeout=30) == "stc done on attempt 2"
        resumed_from = await beating.result(timeout=30)
        assert await leased.result(timeout=30) == "lease done on attempt 2"
        history = await handle.fetch_history()
        hb_history = await beating.fetch_history()
        lease_history = await leased.fetch_history()
    finally:
        await client.close()
    _single_close(history)
    (started,) = [e for e in _of(history, ev.ActivityStarted) if e.attempt == 1]
    (retry,) = _of(history, ev.ActivityRetryScheduled)
    assert retry.failure.timeout_type == "start_to_close"
    assert "start_to_close_timeout of 3s" in retry.failure.message
    assert 3 - EARLY <= retry.at - started.at <= 3 + LATE
    # the heartbeats stopped with the worker: the server's heartbeat timer failed the attempt
    # and the next one resumed from the last progress the dead worker had flushed
    _single_close(hb_history)
    (hb_retry,) = _of(hb_history, ev.ActivityRetryScheduled)
    assert hb_retry.failure.timeout_type == "heartbeat"
    assert hb_retry.at - killed_at <= 1.0 + LATE
    assert len(resumed_from) == 1 and resumed_from[0]["step"] >= 1
    assert list(hb_retry.heartbeat_details) == resumed_from
    # the attempt lost with its worker was handed to the new worker when its lease ran out,
    # which reported it timed out; it was retried
    _single_close(lease_history)
    (lease_retry,) = _of(lease_history, ev.ActivityRetryScheduled)
    assert lease_retry.failure.timeout_type == "start_to_close"
    assert "handed to another worker" in lease_retry.failure.message
    # the 2 s lease (not the 30 s default), plus the new worker's start on a loaded machine
    assert lease_retry.at - killed_at <= 2.0 + 13.0
    runs = sorted((t, a) for t, a, _ in _executions(log))
    assert runs == [("hb", 1), ("hb", 2), ("lease", 1), ("lease", 2), ("stc", 1), ("stc", 2)]


async def test_server_sigkill_during_backoff_and_start_to_close_wait(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Every process dies while a retry backoff and a start-to-close timer are pending."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    server = daemons.server()
    worker = daemons.worker(*_WORKER_ARGS)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        stc = await client.start_workflow(stc_crash_flow, "stc", id="stc", task_queue="tests")
        backoff = await client.start_workflow(
            backoff_crash_flow, "backoff", id="backoff", task_queue="tests"
        )

        async def retry_pending() -> bool:
            return bool(_of(await backoff.fetch_history(), ev.ActivityRetryScheduled))

        await wait_for(retry_pending, 20)
        await wait_for(lambda: _started_attempt(client, "stc"), 20)
        worker.kill()
        server.kill()
        await asyncio.sleep(0.3)
        daemons.server()
        daemons.worker(*_WORKER_ARGS)
        assert await stc.result(timeout=30) == "stc done on attempt 2"
        assert await backoff.result(timeout=30) == "backoff done on attempt 2"
        stc_history = await stc.fetch_history()
        backoff_history = await backoff.fetch_history()
    finally:
        await client.close()
    for history in (stc_history, backoff_history):
        _single_close(history)
    executions = _executions(log)
    assert sorted((t, a) for t, a, _ in executions) == [
        ("backoff", 1),
        ("backoff", 2),
        ("stc", 1),
        ("stc", 2),
    ]
    # the start-to-close timer armed before the crash fired after it
    (started,) = [e for e in _of(stc_history, ev.ActivityStarted) if e.attempt == 1]
    (stc_retry,) = _of(stc_history, ev.ActivityRetryScheduled)
    assert stc_retry.failure.timeout_type == "start_to_close"
    assert stc_retry.at >= started.at + 3 - EARLY
    # the retry armed before the crash ran on time after it (3 s backoff)
    (retry,) = _of(backoff_history, ev.ActivityRetryScheduled)
    assert retry.delay == pytest.approx(3.0)
    second = next(at for t, a, at in executions if (t, a) == ("backoff", 2))
    # from the durable timer soon after the restart; loose, as a loaded machine restarts slowly
    assert retry.retry_at - EARLY <= second <= retry.retry_at + 10.0
