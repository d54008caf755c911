"""W8: schedules. ``n`` schedules each firing every ``every`` seconds for ``secs`` seconds.

The full run is the one the schedules issue asks for: 1,000 schedules each firing every minute
for 5 minutes (5,000 actions); ``--quick`` fires 50 schedules every second for 10 s.

Every schedule gets the same window: ``start_at`` a few seconds after the creation begins (so
all are created before their first time), ``end_at`` ``secs - 1`` seconds later, overlap
ALLOW_ALL (every due second must start an action, whatever is still running), the default
catch-up window (nothing is dropped for being late). Each action starts
``bench.flows.noop_workflow`` on the bench task queue, so the df-worker runs them too.

Measured after the window has closed and the actions have been taken (bounded wait), from the
recorded histories, one read per expected action:

- ``late_*``: WorkflowStarted.at - the scheduled second (both on the df-server's clock): how late
  the action's run started.
- ``missed``: expected (schedule, second) pairs with no run when measured (the end of the
  window plus the drain, at most ``DRAIN_SECONDS``). Split by cause: ``not_taken`` (the
  schedules had not taken them: their steps were behind) and ``start_backlog`` (taken and
  their start request stored, but df-server had not handled it yet). An overloaded run shows
  a backlog there; a lost action would show as ``missed`` after a full drain.
- ``late_*`` covers the started actions only: backlogged ones would be later still.
- ``window_cpu_s`` / ``window_cpu_ms_per_action``: CPU seconds of nats-server, df-server and
  df-worker (and their total) from the end of the creation to the end of the drain, and that
  per due action: what taking and starting the actions cost, without the creation and the
  history reads of the measurement (the workload line's ``*_cpu_s`` include both).
- ``burst_cpu_ms_per_action``: CPU of each process from 0.5 s before each due second to
  ``BURST_SECONDS`` after it, summed over the due seconds and divided by the actions due then:
  what one second's burst of actions costs while it is being started (whatever a process does
  later for them, such as a step that records their runs a poll later, is in ``window_cpu_*``
  only). Measured when the interval leaves room for it (``every`` >= 10 s).
- ``late_by_second``: the same per due second (its offset from the first, in seconds: p50 / p99
  / max ms), to tell a slow burst from a slow tail in every burst (up to 20 due seconds).
- ``duplicated``: runs beyond the first for one action's workflow id, plus actions the schedules
  counted beyond the expected ones (``extra``). Both must be 0.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench import flows
from bench.stats import lat_stats, log

TASK_QUEUE = "bench"
CREATE_CONCURRENCY = 50
READ_CONCURRENCY = 100
BURST_SECONDS = 4.0
"""How long after a due second its burst is counted (``burst_cpu_ms_per_action``)."""
DRAIN_SECONDS = 120.0
"""After the window: how long to wait at most for every due action to be taken and started
(the schedules have taken them all and df-server has no input left to handle)."""


async def w8(
    client: Any,
    prefix: str,
    n: int,
    secs: int,
    every: int = 1,
    snaps: Callable[[], Mapping[str, tuple[float, int]]] | None = None,
) -> dict[str, Any]:
    import durablefuture as df
    from durablefuture.core import events as ev
    from durablefuture.core.errors import DurableFutureError
    from durablefuture.core.schedule_spec import iso

    lead = max(3.0, n / 100)  # creation runs at a few hundred per second here
    # on a multiple of ``every``: epoch-aligned and start-aligned intervals then agree
    start = math.ceil((time.time() + lead) / every) * every
    end = start + secs - 1
    sids = [f"{prefix}-w8-{i}" for i in range(n)]
    sem = asyncio.Semaphore(CREATE_CONCURRENCY)

    def schedule(sid: str) -> df.Schedule:
        return df.Schedule(
            action=df.ScheduleStartWorkflow(
                flows.noop_workflow, 1, id_prefix=sid, task_queue=TASK_QUEUE
            ),
            spec=df.ScheduleSpec(
                intervals=[df.Interval(every=every)],
                start_at=_dt(start),
                end_at=_dt(end),
            ),
            policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
        )

    async def create(sid: str) -> float:
        async with sem:
            handle = await client.create_schedule(sid, schedule(sid))
            return float((await handle.describe(1)).created_at.timestamp())

    t0 = time.perf_counter()
    created = await asyncio.gather(*(create(s) for s in sids))
    create_s = time.perf_counter() - t0
    # a schedule created after its start_at has no times before it was created (not missed)
    expected = {
        sid: [t for t in range(start, end + 1, every) if t > at]
        for sid, at in zip(sids, created, strict=True)
    }
    total = sum(len(v) for v in expected.values())
    late_created = sum(1 for at in created if at >= start)
    log(f"W8: {n} schedules created in {create_s:.1f}s; {total} actions due until {iso(end)}")

    async def taken(before: int) -> int:
        try:
            return sum(d.actions_taken for d in await client.list_schedules(next_actions=0))
        except DurableFutureError as exc:  # a busy nats-server: ask again at the next poll
            log(f"W8: reading the schedules failed ({exc}); trying again")
            return before

    async def inputs_pending() -> int:
        """Server inputs (the actions' start requests among them) not yet handled."""
        try:
            info = await client.pub.js.consumer_info(
                client.layout.stream, client.layout.server_consumer
            )
        except Exception as exc:  # a busy nats-server: ask again at the next poll
            log(f"W8: reading the server's input consumer failed ({exc}); trying again")
            return 1
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    cpu0 = snaps() if snaps is not None else {}
    burst: dict[str, float] = {}
    burst_actions = 0
    for t in range(start, end + 1, every):  # the window itself, each due second's burst timed
        if snaps is None or every < 10:
            break
        await asyncio.sleep(max(0.0, t - 0.5 - time.time()))
        b0 = snaps()
        await asyncio.sleep(max(0.0, t + BURST_SECONDS - time.time()))
        b1 = snaps()
        for k in b0:
            if k != "client":
                burst[k] = burst.get(k, 0.0) + b1[k][0] - b0[k][0]
        burst_actions += sum(1 for v in expected.values() if t in v)
    burst["total"] = sum(burst.values())
    await asyncio.sleep(max(0.0, end + 1 - time.time()))
    deadline = time.monotonic() + DRAIN_SECONDS
    count = await taken(0)
    drained = False
    while time.monotonic() < deadline:
        if count >= total and await inputs_pending() == 0:
            drained = True
            break
        await asyncio.sleep(2.0)
        count = await taken(count)
    drain_s = DRAIN_SECONDS - max(0.0, deadline - time.monotonic())
    cpu1 = snaps() if snaps is not None else {}
    # CPU of the window and the drain only (not the creation, not the history reads below)
    window_cpu = {k: cpu1[k][0] - cpu0[k][0] for k in cpu0 if k != "client"}
    window_cpu["total"] = sum(window_cpu.values())

    lateness: list[float] = []
    by_second: dict[int, list[float]] = {}
    missed = duplicated = 0
    read = asyncio.Semaphore(READ_CONCURRENCY)

    async def check(sid: str, nominal: int) -> None:
        nonlocal missed, duplicated
        batches = []
        for attempt in range(5):  # bounded: a read times out on a busy nats-server
            try:
                async with read:
                    batches = await client.history.read_workflow(f"{sid}-{iso(nominal)}")
                break
            except DurableFutureError:
                if attempt == 4:
                    raise
                await asyncio.sleep(1.0)
        runs = {run for run, _ in batches}
        if not runs:
            missed += 1
            return
        duplicated += len(runs) - 1
        first = batches[0][1].events[0]
        assert isinstance(first, ev.WorkflowStarted), first
        lateness.append(first.at - nominal)
        by_second.setdefault(nominal - start, []).append(first.at - nominal)

    await asyncio.gather(*(check(s, t) for s, times in expected.items() for t in times))
    extra = max(0, count - total)  # actions the schedules took beyond the due ones
    # the schedules stay: end_at has passed, so they take no more actions, and the round's
    # nats-server is thrown away (deleting 1,000 through a backlogged df-server would time out)
    return {
        "schedules": n,
        "seconds": secs,
        "every_s": every,
        "expected_actions": total,
        "started_actions": len(lateness),
        "missed": missed,
        "not_taken": max(0, total - count),
        "taken_at_end": count,
        "drained": drained,
        "start_backlog": max(0, min(count, total) - len(lateness)),
        "duplicated": duplicated + extra,
        "schedules_created_after_start": late_created,
        "create_s": round(create_s, 2),
        "drain_s": round(drain_s, 2),
        "window_cpu_s": {k: round(v, 2) for k, v in window_cpu.items()},
        "window_cpu_ms_per_action": {
            k: round(v * 1000 / max(1, total), 3) for k, v in window_cpu.items()
        },
        "burst_cpu_ms_per_action": {
            k: round(v * 1000 / max(1, burst_actions), 3) for k, v in burst.items()
        },
        **lat_stats(lateness, "late_"),
        "late_by_second": {
            str(k): [lat_stats(v, "")[p] for p in ("p50_ms", "p99_ms", "max_ms")]
            for k, v in sorted(by_second.items())[:20]
        },
        "_wfs": max(1, total),
    }


def _dt(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC)
