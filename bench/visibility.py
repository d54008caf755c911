"""Visibility: list and count over many closed runs, through the df-server's index.

The issue's shape: with ``n`` closed runs stored (100,000 in a full run), the first page of 50
for a query on type + status + one search attribute (target <= 100 ms) and its count (target
<= 200 ms), and the memory the index takes per run.

How the runs get there: ``REAL`` runs go through the daemons (started with search attributes,
completed by the worker: the real path end to end); the other ``n - REAL`` are closed-run status
entries written straight into the status bucket, pipelined, the way df-server writes them when a
run closes (same codec, same keys). The index reads nothing else, so what it holds and what a
query costs are the same as for runs that really ran, and the load takes seconds instead of the
minutes 100,000 workflows take on a busy two-core machine.

Figures (client round trips over core NATS request/reply to the separate df-server process):

- ``page_ms_*``: first page of 50, ``WorkflowType = 'type-3' AND ExecutionStatus = 'Completed'
  AND CustomerTier = 'tier-7'`` (about 1 run in 600 matches); ``page2_ms``: the next page
  through its token; ``count_ms_*``: the same query's count;
- ``count_all_ms``: every run; ``scan_page_ms`` / ``scan_count_ms``: a query no value index
  serves (``Priority >= 8 AND CloseTime > '...'``), which evaluates every run in memory;
- ``server_rss_bytes_per_run``: the df-server's RSS growth while the runs were indexed, per
  run; ``index_bytes_per_run``: the same index built in this process under tracemalloc (the
  index alone, without the allocator's slack);
- ``indexed_s``: from the first write until the count reached ``n`` (writes included).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
from typing import Any

from bench import flows

TASK_QUEUE = "bench"
REAL = 200
TYPES = 10
TIERS = 60
QUERY = "WorkflowType = 'type-3' AND ExecutionStatus = 'Completed' AND CustomerTier = 'tier-7'"
SCAN = "Priority >= 8 AND CloseTime > '2020-01-01T00:00:00Z'"
REPS = 30
PIPELINE = 2000


def _summary(i: int, base: float) -> Any:
    from durablefuture.core.effects import RunStatus, RunSummary
    from durablefuture.core.search_attributes import search_attributes

    status = (RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.FAILED)[
        i % 4
    ]
    start = base + i * 0.01
    return RunSummary(
        workflow_id=f"vis-{i:07d}",
        run_id=f"{i:012x}{'0' * 20}",
        workflow_type=f"type-{i % TYPES}",
        task_queue=TASK_QUEUE,
        status=status,
        start_time=start,
        close_time=start + 0.5,
        history_length=9,
        request_id=f"req-{i}",
        search_attributes=search_attributes(
            {"CustomerTier": f"tier-{(i // TYPES) % TIERS}", "Priority": i % 10}
        ),
    )


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "p50": round(statistics.median(xs) * 1000, 2),
        "p95": round(xs[min(len(xs) - 1, int(len(xs) * 0.95))] * 1000, 2),
        "max": round(xs[-1] * 1000, 2),
    }


async def _timed(reps: int, fn: Any) -> tuple[list[float], Any]:
    out: list[float] = []
    value = None
    for _ in range(reps):
        t0 = time.perf_counter()
        value = await fn()
        out.append(time.perf_counter() - t0)
    return out, value


def _index_bytes(n: int, base: float) -> float:
    """Bytes per run of a RunIndex holding ``n`` runs, measured with tracemalloc."""
    from durablefuture.codec.visibility import listed
    from durablefuture.codec.wire import default_codec
    from durablefuture.core.visibility import RunIndex
    from durablefuture.transport.subjects import Layout

    codec = default_codec()
    layout = Layout("bench")
    blobs = [
        (layout.status_key(s.workflow_id, s.run_id), codec.encode_summary(s))
        for s in (_summary(i, base) for i in range(n))
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = RunIndex()
    for key, blob in blobs:
        index.put(key, listed(codec.decode_summary(blob)))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(index) == n
    return used / n


async def visibility(client: Any, prefix: str, n: int, server_procs: list[Any]) -> dict[str, Any]:
    import durablefuture as df

    real = min(REAL, n)
    base = time.time() - 86400
    before_rss = sum(p.memory_info().rss for p in server_procs)
    t0 = time.perf_counter()

    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        opts = df.WorkflowOptions(
            task_queue=TASK_QUEUE,
            search_attributes={"CustomerTier": f"tier-{i % TIERS}", "Priority": i % 10},
        )
        async with sem:
            await client.execute_workflow(
                flows.one_activity_workflow, i, id=f"{prefix}-vis-{i}", options=opts, timeout=120
            )

    async with asyncio.TaskGroup() as tg:
        for i in range(real):
            tg.create_task(one(i))
    real_s = time.perf_counter() - t0

    layout = client.layout
    subject = f"$KV.{layout.runs_bucket}."
    t1 = time.perf_counter()
    pending: list[Any] = []
    for i in range(n - real):
        s = _summary(i, base)
        key = layout.status_key(s.workflow_id, s.run_id)
        pending.append(await client.pub.send(subject + key, client.codec.encode_summary(s)))
        if len(pending) >= PIPELINE:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    written_s = time.perf_counter() - t1
    existing = 1  # the round's warm-up run
    for _ in range(1200):  # until the index has every run (bounded: ~2 min)
        if await client.count_workflows() >= n + existing:
            break
        await asyncio.sleep(0.1)
    indexed_s = time.perf_counter() - t1
    total = await client.count_workflows()
    after_rss = sum(p.memory_info().rss for p in server_procs)

    page_t, page = await _timed(REPS, lambda: client.list_workflows(QUERY, page_size=50))
    count_t, count = await _timed(REPS, lambda: client.count_workflows(QUERY))
    page2_t, page2 = await _timed(
        5, lambda: client.list_workflows(QUERY, page_size=50, next_page_token=page.next_page_token)
    )
    all_t, _ = await _timed(5, lambda: client.count_workflows())
    scan_page_t, _ = await _timed(3, lambda: client.list_workflows(SCAN, page_size=50))
    scan_count_t, scan_count = await _timed(3, lambda: client.count_workflows(SCAN))
    index_bytes = await asyncio.to_thread(_index_bytes, min(n, 20_000), base)
    return {
        "runs": total,
        "real_runs": real,
        "real_runs_s": round(real_s, 2),
        "written_s": round(written_s, 2),
        "indexed_s": round(indexed_s, 2),
        "query": QUERY,
        "page_rows": len(page),
        "page2_rows": len(page2),
        "count": count,
        **{f"page_ms_{k}": v for k, v in _ms(page_t).items()},
        "page2_ms": _ms(page2_t)["p50"],
        **{f"count_ms_{k}": v for k, v in _ms(count_t).items()},
        "count_all_ms": _ms(all_t)["p50"],
        "scan_query": SCAN,
        "scan_count": scan_count,
        "scan_page_ms": _ms(scan_page_t)["p50"],
        "scan_count_ms": _ms(scan_count_t)["p50"],
        "server_rss_bytes_per_run": round((after_rss - before_rss) / max(1, n), 1),
        "index_bytes_per_run": round(index_bytes, 1),
        "page_target_ok": _ms(page_t)["p50"] <= 100,
        "count_target_ok": _ms(count_t)["p50"] <= 200,
        "_wfs": n,
    }
