"""Storage: what completed W1 workflows leave in the namespace while retained, and after expiry.

``python -m bench --workloads storage`` (or ``python -m bench.storage [bench options]``). The
workload stores a short retention with the namespace (``--storage-retention``, 60 s by default,
the issue's 1 minute; the df-servers pick it up within a second), waits out that second, runs
``storage_n`` W1 order workflows (two activities each, ``w1_conc`` in flight), then measures:

- ``retained_*``: once df-server has purged the handled inputs and tasks (the stream holds no
  ``in``/``wt``/``at`` messages of them any more), the bytes the namespace holds beyond what it
  held before the workload: its stream (``DF_<ns>``: histories and one expiry schedule per
  closed run), the status entries (``KV_DF_<ns>_runs``), the activity records and the payload
  objects; ``retained_bytes_per_wf`` divides the stream's share by the workflow count;
- ``expired_*``: after the retention is over and every run has been removed (bounded wait:
  retention + ``EXPIRY_SLACK`` seconds), the same figures again; ``expired_within_1mb`` says
  whether the namespace is back within 1 MB of where it was (the issue's target);
- ``by_kind_retained`` / ``by_kind_expired``: the stream's messages per subject kind.

Bytes are JetStream's stream state (``state.bytes``: what the stream holds), not the size of the
store directory on disk (nats-server compacts its block files later).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench import flows
from bench.stats import lat_stats, log

TASK_QUEUE = "bench"
EXPIRY_SLACK = 120.0
"""Seconds after the retention (counted from the last close) to wait for every removal."""
ONE_MB = 1_000_000


async def _footprint(client: Any) -> dict[str, Any]:
    from durablefuture.transport.usage import stream_size, stream_usage

    js = client.pub.js
    layout = client.layout
    usage = await stream_usage(js, layout)
    runs_msgs, runs_bytes = await stream_size(js, f"KV_{layout.runs_bucket}")
    _, act_bytes = await stream_size(js, f"KV_{layout.activity_bucket}")
    _, obj_bytes = await stream_size(js, f"OBJ_{layout.payloads_bucket}")
    return {
        "stream_bytes": usage.bytes,
        "stream_msgs": usage.messages,
        "by_kind": usage.by_kind,
        "status_entries": runs_msgs,
        "status_bytes": runs_bytes,
        "activity_bytes": act_bytes,
        "payload_bytes": obj_bytes,
        "total_bytes": usage.bytes + runs_bytes + act_bytes + obj_bytes,
    }


async def _until(what: str, check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"storage: {what} not reached within {timeout:g}s")
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


async def storage(client: Any, prefix: str, n: int, conc: int, retention: float) -> dict[str, Any]:
    from durablefuture.transport.namespace_settings import write_settings

    settings = await write_settings(client.pub.js, client.layout, {"retention": retention})
    assert settings.retention == retention
    await asyncio.sleep(2.0)  # every df-server reads the stored settings again each second
    before = await _footprint(client)
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            h = await client.start_workflow(
                flows.order_workflow, f"o{i}", 1.0 + i, id=f"{prefix}-st-{i}", task_queue=TASK_QUEUE
            )
            r = await h.result(timeout=600)
            assert r.startswith("charged/"), r
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    wall = time.perf_counter() - t0
    last_close = time.monotonic()

    async def compacted() -> bool:
        kinds = (await _footprint(client))["by_kind"]
        work = ("in", "wt", "at", "rm")
        return all(kinds.get(k, 0) <= before["by_kind"].get(k, 0) for k in work)

    settle_s = await _until("purge of handled work", compacted, 60.0)
    retained = await _footprint(client)

    async def expired() -> bool:
        now = await _footprint(client)
        kinds, was = now["by_kind"], before["by_kind"]
        return bool(
            now["status_entries"] <= before["status_entries"]
            and all(kinds.get(k, 0) <= was.get(k, 0) for k in ("h", "rx"))
        )

    remaining = retention - (time.monotonic() - last_close)
    expiry_s = await _until("expiry of every run", expired, max(0.0, remaining) + EXPIRY_SLACK)
    await _until("purge of the removals", compacted, 30.0)
    after = await _footprint(client)

    def delta(snap: dict[str, Any], key: str) -> int:
        return int(snap[key] - before[key])

    out: dict[str, Any] = {
        "n": n,
        "retention_s": retention,
        "wall_s": round(wall, 3),
        "wf_per_s": round(n / wall, 1),
        **lat_stats(lat, "e2e_"),
        "baseline_total_bytes": before["total_bytes"],
        "settle_s": round(settle_s, 2),
        "retained_stream_bytes": delta(retained, "stream_bytes"),
        "retained_status_bytes": delta(retained, "status_bytes"),
        "retained_activity_bytes": delta(retained, "activity_bytes"),
        "retained_payload_bytes": delta(retained, "payload_bytes"),
        "retained_total_bytes": delta(retained, "total_bytes"),
        "retained_bytes_per_wf": round(delta(retained, "stream_bytes") / n, 1),
        "retained_total_bytes_per_wf": round(delta(retained, "total_bytes") / n, 1),
        "retained_msgs_per_wf": round(delta(retained, "stream_msgs") / n, 2),
        "by_kind_retained": retained["by_kind"],
        "expiry_wait_s": round(expiry_s, 2),
        "expired_stream_bytes": delta(after, "stream_bytes"),
        "expired_total_bytes": delta(after, "total_bytes"),
        "expired_within_1mb": delta(after, "total_bytes") <= ONE_MB,
        "by_kind_expired": after["by_kind"],
        "_wfs": n,
    }
    log(
        f"storage: {n} W1 workflows kept {out['retained_bytes_per_wf']} B each in the stream "
        f"({out['retained_total_bytes_per_wf']} B with status and activity records); "
        f"{out['expired_total_bytes']} B left after the {retention:g}s retention"
    )
    return out


def main() -> int:
    """``python -m bench.storage [bench options]``: the storage workload alone."""
    from bench.__main__ import main as bench_main

    return bench_main(["--workloads", "storage", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
