"""Workflows for the tests of effects lost between an append and its effects (imported by
daemon subprocesses too): an eager first step whose completion carries the next decisions
(fused), of which nothing but that batch's own effects would dispatch anything."""

from __future__ import annotations

import time
from datetime import timedelta

import durablefuture as df
from tests.integration.eager_flows import logged_step

_EAGER = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=df.RetryPolicy(initial_interval=0.2, maximum_interval=1.0),
)
_ONCE = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=df.RetryPolicy(maximum_attempts=1),  # never granted: its task is stored
)


def then_once_flow(tag: str):  # type: ignore[no-untyped-def]
    """Step 0 (granted to the worker that decided it), then step 1, allowed one attempt."""
    first = yield df.activity(logged_step, tag, 0, options=_EAGER)
    second = yield df.activity(logged_step, tag, 1, options=_ONCE)
    return [first, second]


def then_sleep_flow(tag: str):  # type: ignore[no-untyped-def]
    """Step 0 (granted to the worker that decided it), then a short sleep."""
    first = yield df.activity(logged_step, tag, 0, options=_EAGER)
    yield df.sleep(0.5)
    return [first]


_ELSEWHERE = df.ActivityOptions(
    task_queue="elsewhere",
    start_to_close_timeout=timedelta(seconds=300),
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=df.RetryPolicy(maximum_attempts=1),
)


_LOCAL = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=10))


def endless_step(tag: str) -> str:
    """Heartbeats until it is cancelled."""
    while True:
        df.heartbeat(tag)
        time.sleep(0.2)


def noted(tag: str) -> str:
    return tag


def first_of_flow(tag: str):  # type: ignore[no-untyped-def]
    """Step 0 (granted) against ``endless_step`` on another queue; then a local activity (so
    the step's completion is reported alone, with no decisions fused into it)."""
    _, first = yield df.any_of(
        df.activity(logged_step, tag, 0, options=_EAGER),
        df.activity(endless_step, tag, options=_ELSEWHERE),
    )
    return (yield df.local_activity(noted, first, options=_LOCAL))


PARTS = 8


def sized_step(tag: str, step: int, blob: str) -> str:
    """``logged_step`` with a large argument."""
    return logged_step(tag, step)


def parted_flow(tag: str):  # type: ignore[no-untyped-def]
    """A short sleep, then ``PARTS`` activities of 60 kB arguments each, allowed one attempt
    (never granted): a decision too large for one report, sent in two parts (in a workflow
    task that carries only the events since the run's last one)."""
    yield df.sleep(0.2)
    blob = "x" * 60_000
    steps = (df.activity(sized_step, tag, i, blob, options=_ONCE) for i in range(PARTS))
    return len((yield df.all_of(*steps)))


def signalled_flow(tag: str):  # type: ignore[no-untyped-def]
    """Waits (an hour at most) for the signal ``go``, and returns its argument."""
    return (yield df.wait_signal("go", timeout=3600))


async def _signal_with_start(url: str, workflow_id: str) -> None:
    client = await df.Client.connect(url)
    client.start_wait = 60  # the answer is waited for, never stored meanwhile
    await client.start_workflow(
        "signalled_flow", workflow_id, id=workflow_id, task_queue="tests", signal=("go", ["x"])
    )


if __name__ == "__main__":  # a client that signals with start, killed by its test
    import asyncio
    import sys

    asyncio.run(_signal_with_start(sys.argv[1], sys.argv[2]))
