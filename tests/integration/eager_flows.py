"""A workflow of two activities that log each execution, for the eager activity crash tests
(imported by daemon subprocesses too)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import durablefuture as df

STEPS = 2


def logged_step(tag: str, step: int) -> str:
    """Logs every execution (``<tag> <step> <attempt>``), then takes a while."""
    info = df.activity_info()
    with open(os.environ["DF_TEST_EXEC_LOG"], "a") as f:
        f.write(f"{tag} {step} {info.attempt}\n")
    time.sleep(float(os.environ.get("DF_TEST_ACTIVITY_SECONDS", "0.05")))
    return f"{tag}:{step}"


def logged_flow(tag: str):  # type: ignore[no-untyped-def]
    return (yield from _steps(tag, 60))


def brief_logged_flow(tag: str):  # type: ignore[no-untyped-def]
    """``logged_flow`` with a start_to_close_timeout of 2 s."""
    return (yield from _steps(tag, 2))


def _steps(tag: str, stc: float):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=stc),
        retry_policy=df.RetryPolicy(initial_interval=0.2, maximum_interval=1.0),
    )
    done = []
    for step in range(STEPS):
        done.append((yield df.activity(logged_step, tag, step, options=opts)))
    return done


def flaky_step(tag: str, step: int) -> str:
    """Logs every execution (``<tag> <step> <attempt>``); attempt 1 fails."""
    info = df.activity_info()
    with open(os.environ["DF_TEST_EXEC_LOG"], "a") as f:
        f.write(f"{tag} {step} {info.attempt}\n")
    if info.attempt == 1:
        raise RuntimeError("planned failure of attempt 1")
    return f"{tag}:{step}"


def flaky_flow(tag: str):  # type: ignore[no-untyped-def]
    """One ``flaky_step``, retried after 0.2 s (signals are only recorded)."""
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=df.RetryPolicy(initial_interval=0.2, maximum_interval=1.0),
    )
    return (yield df.activity(flaky_step, tag, 0, options=opts))
