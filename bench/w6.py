"""W6: many open workflows. ``n`` workflows started evenly over ``ramp`` seconds, each running
an activity, sleeping ``sleep`` seconds (a durable timer), then running a second activity.

The full run is the one the performance issue asks for: 100,000 workflows started over about
two minutes, each sleeping 60 s, so tens of thousands are open at once. ``--quick`` and the
``--w6-count``/``--w6-ramp``/``--w6-sleep`` options make it smaller.

Measured:

- ``open_peak``: the most workflows open at once (start acknowledged, close not yet seen; the
  closes are counted from df-server's closed notices);
- ``{server,worker}_kb_per_open_wf``: (RSS at the sample with the most open workflows - RSS
  before the first start) / open workflows then, per process role (all processes of the role
  together). It covers everything an open workflow costs a process: df-server's run cache
  entry, the worker's live generator, and the timers and bookkeeping of both;
- ``late_inwf_*``: in-workflow timer lateness, ``workflow.now()`` after the sleep minus before
  it, minus the sleep (what the workflow code sees);
- ``lost``: workflows whose result is not the expected one when read at the end (must be 0),
  ``start_*``: how long a start call took while the ramp ran (df-server keeping up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench import flows
from bench.stats import lat_stats, log

TASK_QUEUE = "bench"
START_CONCURRENCY = 200
READ_CONCURRENCY = 100
SAMPLE_EVERY = 0.5


async def w6(
    client: Any,
    prefix: str,
    n: int,
    ramp: float,
    sleep: float,
    rss: Callable[[], Mapping[str, int]],
    timeout: float,
) -> dict[str, Any]:
    ids = [f"{prefix}-w6-{i}" for i in range(n)]
    base = dict(rss())
    started = 0
    closed: set[str] = set()
    mine = f"{prefix}-w6-"

    async def on_closed(msg: Any) -> None:
        # dfev.<ns>.closed.<workflow id token>.<run>; our ids are plain subject tokens
        token = msg.subject.split(".")[-2]
        if token.startswith(mine):
            closed.add(token)

    sub = await client.nc.subscribe(f"{client.layout.events_prefix}.closed.>", cb=on_closed)
    peak: dict[str, Any] = {"open": 0, "rss": base}
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            open_now = started - len(closed)
            if open_now > peak["open"]:
                peak.update(open=open_now, rss=dict(rss()), at=round(time.monotonic() - t0, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)

    sem = asyncio.Semaphore(START_CONCURRENCY)
    start_lat: list[float] = []

    async def start(i: int) -> None:
        nonlocal started
        due = t0 + i * ramp / n
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        async with sem:
            tc = time.monotonic()
            await client.start_workflow(
                flows.sleeper_workflow, i, sleep, id=ids[i], task_queue=TASK_QUEUE
            )
            start_lat.append(time.monotonic() - tc)
            started += 1

    t0 = time.monotonic()
    sampling = asyncio.create_task(sampler())
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(start(i))
        ramp_s = time.monotonic() - t0
        log(f"w6: {n} started in {ramp_s:.1f}s; waiting for them to close")
        deadline = time.monotonic() + timeout
        while len(closed) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await sampling
        await sub.unsubscribe()
    total_s = time.monotonic() - t0

    # every result, read back (closed notices are best effort: the results are the truth)
    late: list[float] = []
    lost: list[str] = []
    read = asyncio.Semaphore(READ_CONCURRENCY)

    async def check(i: int) -> None:
        async with read:
            try:
                r = await client.get_workflow_handle(ids[i]).result(timeout=30)
            except Exception as exc:
                lost.append(f"{ids[i]}: {type(exc).__name__}: {exc}")
                return
            t_before, t_after, value = r
            if value != i + 1:
                lost.append(f"{ids[i]}: result {r!r}")
            late.append(t_after - t_before - sleep)

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(check(i))
    open_peak = peak["open"]
    per_wf = {
        f"{role}_kb_per_open_wf": round((peak["rss"][role] - base[role]) / open_peak / 1024, 2)
        for role in base
        if open_peak
    }
    return {
        "n": n,
        "ramp_s": ramp,
        "sleep_s": sleep,
        "ramp_actual_s": round(ramp_s, 2),
        "total_s": round(total_s, 2),
        "open_peak": open_peak,
        "open_peak_at_s": peak.get("at"),
        "rss_base_mb": {k: round(v / 2**20, 1) for k, v in base.items()},
        "rss_at_peak_mb": {k: round(v / 2**20, 1) for k, v in peak["rss"].items()},
        **per_wf,
        **lat_stats(late, "late_inwf_"),
        **lat_stats(start_lat, "start_"),
        "closed_seen": len(closed),
        "lost": len(lost),
        "lost_examples": lost[:3],
        "_wfs": n,
    }
