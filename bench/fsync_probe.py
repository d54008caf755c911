"""Raw nats-py probe: stored messages per second with ``sync_interval: always``.

``python bench/fsync_probe.py`` (``N=6000`` messages per figure by default) starts a throwaway
nats-server on loopback (file storage in a temp dir, flushed on every write) and prints one
JSON line: pipelined publishes to one stream, spread over 2 and 4 streams, with at most 16
unacked, and atomic batches of 10 and 100 messages, one at a time and several at once. Two
rounds of each. It measures the store, not DurableFuture (see bench/README.md, W5 section).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from durablefuture.natsserver import NatsServer

PAYLOAD = b"x" * 300


async def pipelined(nc: Client, prefixes: list[str], n: int, window: int) -> float:
    """``n`` publishes round-robin over the streams of ``prefixes``, at most ``window``
    unacked; stored messages per second."""
    inbox = nc.new_inbox()
    done = asyncio.Event()
    acked = errors = 0
    sem = asyncio.Semaphore(window)

    async def on_ack(msg: Msg) -> None:
        nonlocal acked, errors
        acked += 1
        errors += b'"error"' in msg.data
        sem.release()
        if acked == n:
            done.set()

    sub = await nc.subscribe(inbox + ".*", cb=on_ack)
    t0 = time.perf_counter()
    for i in range(n):
        await sem.acquire()
        subject = f"{prefixes[i % len(prefixes)]}.{i % 500}"
        await nc.publish(subject, PAYLOAD, reply=f"{inbox}.{i}")
    await asyncio.wait_for(done.wait(), 120)
    rate = n / (time.perf_counter() - t0)
    await sub.unsubscribe()
    assert errors == 0, f"{errors} publishes failed"
    return rate


async def batches(nc: Client, prefix: str, n: int, size: int, parallel: int) -> float:
    """``n`` messages as atomic batches of ``size``, ``parallel`` batches open at once."""

    async def one(k: int) -> None:
        bid = uuid.uuid4().hex[:16]
        subject = f"{prefix}.{k % 500}"
        for i in range(1, size + 1):
            headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i)}
            if i < size:
                await nc.publish(subject, PAYLOAD, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await nc.request(subject, PAYLOAD, headers=headers, timeout=30)
            ack = json.loads(reply.data)
            assert "error" not in ack, ack

    sem = asyncio.Semaphore(parallel)

    async def guarded(k: int) -> None:
        async with sem:
            await one(k)

    t0 = time.perf_counter()
    await asyncio.gather(*(guarded(k) for k in range(n // size)))
    return n / (time.perf_counter() - t0)


async def main() -> None:
    n = int(os.environ.get("N", "6000"))
    server = NatsServer(tempfile.mkdtemp(prefix="fsync-probe-"), sync_always=True).start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        for s in range(4):
            config = StreamConfig(
                name=f"S{s}", subjects=[f"s{s}.>"], storage=StorageType.FILE, allow_atomic=True
            )
            await js.add_stream(config)
        out: dict[str, list[int]] = {}
        for _ in range(2):
            for k in (1, 2, 4):
                rate = await pipelined(nc, [f"s{s}" for s in range(k)], n, 256)
                out.setdefault(f"streams{k}", []).append(round(rate))
            out.setdefault("streams1_window16", []).append(
                round(await pipelined(nc, ["s0"], n, 16))
            )
            for size, par in ((10, 1), (100, 1), (10, 20), (100, 8)):
                rate = await batches(nc, "s1", n, size, par)
                out.setdefault(f"batch{size}x{par}", []).append(round(rate))
        print(json.dumps({"msgs_per_s": out, "load1": round(os.getloadavg()[0], 2)}))
        await nc.close()
    finally:
        server.stop()
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
