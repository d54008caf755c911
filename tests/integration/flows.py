"""Workflows and activities used by the integration tests (imported by daemon subprocesses too)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import durablefuture as df

FAST_RETRY = df.RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_interval=1.0)


def slow_add(x: int, y: int) -> int:
    """Takes long enough for a crash to land mid-activity; records each execution."""
    time.sleep(float(os.environ.get("DF_TEST_ACTIVITY_SECONDS", "0.3")))
    log = os.environ.get("DF_TEST_EXEC_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"slow_add {x} {y} attempt {df.activity_info().attempt}\n")
    return x + y


def double(x: int) -> int:
    return 2 * x


def add_workflow(x: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(slow_add, x, 1, options=opts)
    b = yield df.activity(double, a, options=opts)
    c = yield df.activity(slow_add, b, 10, options=opts)
    return {"x": x, "result": c}


def expected_add(x: int) -> dict[str, int]:
    return {"x": x, "result": 2 * (x + 1) + 10}


WORKFLOWS = [add_workflow]
ACTIVITIES = [slow_add, double]
