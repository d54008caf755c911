"""Workflows whose timelines hold the segments the examples never draw: timeouts, timers,
children, a run that times out. Run by an in-process worker (``env.worker``)."""

from __future__ import annotations

import asyncio
import contextlib

import durablefuture as df

TASK_QUEUE = "ui-tests"


async def stalls() -> str:
    """Never finishes within its start-to-close timeout (cancelled at the deadline)."""
    await asyncio.sleep(30)
    return "unreachable"


def child_flow(n: int):  # type: ignore[no-untyped-def]
    yield df.sleep(0.05)
    return n * 2


def timeouts_flow():  # type: ignore[no-untyped-def]
    """An activity whose two attempts time out, a timer, a signal wait that times out, a child."""
    opts = df.ActivityOptions(
        start_to_close_timeout=0.3,
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=2),
    )
    with contextlib.suppress(df.ActivityError):
        yield df.activity(stalls, options=opts)
    yield df.sleep(0.1)
    with contextlib.suppress(df.TimeoutError):
        yield df.wait_signal("never", timeout=0.2)
    doubled = yield df.child_workflow(child_flow, 21, id="timeouts-child")
    return {"child": doubled}


def fails() -> str:
    raise df.ApplicationError("always fails", non_retryable=True)


def everything_pending():  # type: ignore[no-untyped-def]
    """At once: an activity no worker takes, one running, one waiting for its retry, a timer."""
    yield df.all_of(
        df.activity(stalls, options=df.ActivityOptions(task_queue="nobody-polls-this")),
        # a heartbeat timeout makes the worker report the attempt started at once
        df.activity(
            stalls, options=df.ActivityOptions(start_to_close_timeout=60, heartbeat_timeout=60)
        ),
        df.activity(
            fails_then_waits,
            options=df.ActivityOptions(retry_policy=df.RetryPolicy(initial_interval=600)),
        ),
        df.sleep(600),
    )


def fails_then_waits() -> str:
    raise df.ApplicationError("fails; the retry is due in 10 minutes")


def once_more(n: int):  # type: ignore[no-untyped-def]
    """Continues as new once, then completes."""
    if n == 0:
        yield df.continue_as_new(1)
    yield df.sleep(0.01)
    return n


def failing_flow():  # type: ignore[no-untyped-def]
    yield df.activity(fails, options=df.ActivityOptions(start_to_close_timeout=5))


def signalled():  # type: ignore[no-untyped-def]
    """Waits for signal "go" (sent with the start, so it is already there)."""
    value = yield df.wait_signal("go")
    return value


def waits_too_long():  # type: ignore[no-untyped-def]
    """Waits for a signal nobody sends; started with an execution timeout, so the run times out."""
    yield df.wait_signal("never")


WORKFLOWS = [
    signalled,
    timeouts_flow,
    child_flow,
    waits_too_long,
    everything_pending,
    once_more,
    failing_flow,
]
ACTIVITIES = [stalls, fails, fails_then_waits]
