"""JetStream out of storage ("insufficient resources"): nothing is lost, nothing runs twice.

A nats-server with a small ``max_file_store`` is filled up by a filler stream while workflows
are in flight: activity results wait in the worker, start requests wait in the df-server. Both
daemons say once, in one line, that storage is full; they keep what they hold (no nak that
would use up max_deliver, no dead letter) and carry on when the filler is deleted. Every
workflow started completes, and every activity ran once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

import durablefuture as df
from durablefuture.client import Client
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.worker import Worker, WorkerOptions
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

FULL = "JetStream storage is full"
AGAIN = "JetStream storage accepts messages again"
N_RUNNING = 4
N_WAITING = 4

runs: Counter[str] = Counter()
running: set[str] = set()
gate = asyncio.Event()


async def held_step(name: str) -> str:
    runs[f"held:{name}"] += 1
    running.add(name)
    if name.startswith("a"):
        await gate.wait()
    return name


def step(name: str) -> str:
    runs[f"step:{name}"] += 1
    return f"{name} done"


def two_steps(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(held_step, name)
    return (yield df.activity(step, first))


async def _fill(url: str) -> None:
    """Store filler messages, smaller and smaller, until not even one byte fits."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="FILLER", subjects=["filler.>"]))
        for size in (60_000, 4_096, 256, 1):
            while True:
                try:
                    await js.publish("filler.x", b"f" * size)
                except nats.js.errors.ServiceUnavailableError as exc:
                    assert exc.err_code == 10023  # insufficient resources
                    break
    finally:
        await nc.close()


async def _free(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream("FILLER")
    finally:
        await nc.close()


async def _start_server(url: str) -> tuple[Server, asyncio.Task[None]]:
    server = await Server.connect(url, ServerOptions(input_ack_wait=3.0))
    await server.start()
    return server, asyncio.create_task(server.run())


async def _stop_server(server: Server, task: asyncio.Task[None]) -> None:
    await server.shutdown()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_full_store_holds_every_input_and_everything_completes_once_when_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    global gate
    gate = asyncio.Event()
    runs.clear()
    running.clear()
    caplog.set_level(logging.WARNING)
    with NatsServer(str(tmp_path / "nats"), max_file_store=4 * 1024 * 1024) as ns:
        server, server_task = await _start_server(ns.url)
        client = await Client.connect(ns.url)
        worker_client = await Client.connect(ns.url)
        options = WorkerOptions(workflow_task_timeout=3.0, activity_lease=3.0, drain_timeout=5.0)
        worker = Worker(worker_client, "default", [two_steps], [held_step, step], options=options)
        try:
            async with worker:
                # in flight: N runs whose first activity is running on the worker
                handles = [
                    await client.start_workflow(two_steps, f"a{i}", id=f"a{i}")
                    for i in range(N_RUNNING)
                ]
                await wait_for(lambda: len(running) == N_RUNNING, 15)

                # waiting for a df-server: N start requests stored while none runs
                await _stop_server(server, server_task)
                client.request_timeout = 120.0
                starts = [
                    asyncio.create_task(client.start_workflow(two_steps, f"b{i}", id=f"b{i}"))
                    for i in range(N_WAITING)
                ]
                js = client.pub.js
                layout = client.layout

                async def stored() -> bool:
                    info = await js.consumer_info(layout.stream, layout.start_consumer)
                    return info.num_pending == N_WAITING

                await wait_for(stored, 15)

                await _fill(ns.url)

                # the activities finish: their reports cannot be stored, the worker keeps them
                gate.set()
                await wait_for(lambda: worker._storage.waits >= 3 * N_RUNNING, 30)
                # a df-server comes back: it cannot record the starts, it keeps them
                server, server_task = await _start_server(ns.url)
                await wait_for(lambda: server.stats["storage_waits"] >= 3 * N_WAITING, 30)
                info = await js.consumer_info(layout.stream, layout.start_consumer)
                assert info.num_ack_pending == N_WAITING  # held, neither acked nor dropped
                assert not any(s.done() for s in starts)

                await _free(ns.url)

                handles += await asyncio.gather(*starts)
                results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
                names = [f"a{i}" for i in range(N_RUNNING)] + [f"b{i}" for i in range(N_WAITING)]
                assert results == [f"{n} done" for n in names]
                assert runs == Counter({f"{k}:{n}": 1 for n in names for k in ("held", "step")})
                dead = await js.stream_info(layout.stream, subjects_filter=layout.dead_letters())
                assert not dead.state.subjects
        finally:
            await _stop_server(server, server_task)
            await client.close()
            await worker_client.close()

    # one line per daemon saying storage is full and why, one saying it is back; no tracebacks
    lines = [r.getMessage() for r in caplog.records]
    full = [line for line in lines if FULL in line]
    assert len(full) == 2, full
    assert any(line.startswith("df-server") for line in full)
    assert any(line.startswith("df-worker") for line in full)
    assert all("insufficient resources" in line for line in full)
    assert len([line for line in lines if AGAIN in line]) == 2
    assert not [r for r in caplog.records if r.exc_info], "tracebacks were logged"
