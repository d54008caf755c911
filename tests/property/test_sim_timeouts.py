"""Simulated activity time against a model: for any duration, start-to-close timeout and
retry policy, the Simulation ends each attempt and retries exactly when the model says."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Simulation

T0 = 1000.0
quarters = st.integers(1, 40).map(lambda n: n / 4)  # 0.25 .. 10 s, exact in binary


async def work(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def flow(seconds: float, limit: float, attempts: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=limit),
        retry_policy=df.RetryPolicy(
            initial_interval=1, backoff_coefficient=2, maximum_attempts=attempts
        ),
    )
    try:
        return (yield df.activity(work, seconds, options=opts))
    except df.ActivityError as err:
        return str(getattr(err.cause, "timeout_type", ""))


@settings(max_examples=60, deadline=None)
@given(seconds=quarters, limit=quarters, attempts=st.integers(1, 4))
def test_attempts_end_and_retry_when_the_model_says(
    seconds: float, limit: float, attempts: int
) -> None:
    if seconds == limit:
        seconds += 0.25  # a tie between the sleep and the deadline is left out of the model
    sim = Simulation([flow], [work], start_time=T0)
    sim.start(flow, seconds, limit, attempts, id="w")
    sim.run()
    events: list[Any] = sim.run_of("w").events
    if seconds < limit:
        assert sim.result("w") == seconds
        (done,) = [e for e in events if isinstance(e, ev.ActivityCompleted)]
        assert done.at == T0 + seconds
        return
    assert sim.result("w") == "start_to_close"
    # attempt k (from 1) times out `limit` after it starts; the backoff before k+1 is 2**(k-1)
    ends = []
    start = 0.0
    for k in range(1, attempts + 1):
        ends.append(start + limit)
        start = start + limit + 2 ** (k - 1)
    closes = [
        e.at - T0 for e in events if isinstance(e, ev.ActivityRetryScheduled | ev.ActivityTimedOut)
    ]
    assert closes == ends
    assert [a for _, _, a in sim.activity_calls] == list(range(1, attempts + 1))
