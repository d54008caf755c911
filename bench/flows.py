"""Workflows and activities of the benchmark (W1-W5), imported by the df-worker process too.

The same shapes as ``bench-peers/temporal_defs.py``: no-op async activities, a 60 s
start-to-close timeout on every activity call.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import durablefuture as df

OPTS = df.ActivityOptions(start_to_close_timeout=60)


# ---- activities: plain async functions, no real work ----
async def charge(order_id: str, amount: float) -> dict[str, Any]:
    return {"order_id": order_id, "amount": amount, "status": "charged"}


async def ship(order_id: str) -> str:
    return f"shipped:{order_id}"


async def noop(i: int) -> int:
    return i


ACTIVITIES = [charge, ship, noop]


# ---- workflows ----
def order_workflow(order_id: str, amount: float) -> Generator[Any, Any, str]:  # W1
    c = yield df.activity(charge, order_id, amount, options=OPTS)
    s = yield df.activity(ship, order_id, options=OPTS)
    return f"{c['status']}/{s}"


def one_activity_workflow(i: int) -> Generator[Any, Any, int]:  # W2
    result: int = yield df.activity(noop, i, options=OPTS)
    return result


def long_history_workflow(n: int) -> Generator[Any, Any, int]:  # W3
    total = 0
    for i in range(n):
        total += yield df.activity(noop, i, options=OPTS)
    return total


def fan_out_workflow(n: int) -> Generator[Any, Any, int]:  # W4
    results = yield df.all_of([df.activity(noop, i, options=OPTS) for i in range(n)])
    return sum(results)


def timer_workflow(seconds: float) -> Generator[Any, Any, list[float]]:  # W5
    t0 = df.workflow.now().timestamp()
    yield df.sleep(seconds)  # durable timer
    t1 = df.workflow.now().timestamp()
    return [t0, t1]


def sleeper_workflow(i: int, seconds: float) -> Generator[Any, Any, list[float]]:  # W6
    a: int = yield df.activity(noop, i, options=OPTS)
    t0 = df.workflow.now().timestamp()
    yield df.sleep(seconds)  # durable timer: the run stays open meanwhile
    t1 = df.workflow.now().timestamp()
    b: int = yield df.activity(noop, a + 1, options=OPTS)
    return [t0, t1, b]


def noop_workflow(i: int) -> Generator[Any, Any, int]:  # W8: the action every schedule starts
    return i
    yield  # a generator: a workflow


def waiting_workflow(i: int) -> Generator[Any, Any, Any]:  # memory: stays open
    state = {"i": i}
    df.workflow.set_query_handler("state", lambda: state)
    return (yield df.wait_signal("go"))


WORKFLOWS = [
    waiting_workflow,
    order_workflow,
    one_activity_workflow,
    long_history_workflow,
    fan_out_workflow,
    timer_workflow,
    noop_workflow,
    sleeper_workflow,
]
