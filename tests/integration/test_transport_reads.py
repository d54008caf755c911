"""Reads through the transport: a task queue consumer's live state (``df why`` uses it), and
the typed error for a namespace no df-server has created (a worker waits for it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, StreamConfig

import durablefuture as df
from durablefuture.core.errors import NamespaceNotFoundError, TransportError
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.transport.connection import connect
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer, open_bucket
from durablefuture.transport.queues import queue_state
from durablefuture.transport.subjects import Layout
from tests.conftest import wait_for


async def test_a_missing_consumer_does_not_exist_and_an_existing_one_reports_its_state(
    nats_server: NatsServer,
) -> None:
    nc = await connect(nats_server.url, timeout=10)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="Q", subjects=["q.>"]))
        missing = await queue_state(js, "Q", "nobody")
        assert (missing.name, missing.exists) == ("nobody", False)
        await js.add_consumer("Q", ConsumerConfig(durable_name="tasks", ack_wait=7.0))
        for i in range(3):
            await js.publish("q.t", str(i).encode())
        state = await queue_state(js, "Q", "tasks")
        assert state.exists
        assert (state.pending, state.in_flight, state.pollers) == (3, 0, 0)
        assert state.ack_wait == 7.0
    finally:
        await nc.close()


async def test_a_namespace_no_server_created_is_a_namespace_not_found_error(
    nats_server: NatsServer,
) -> None:
    nc = await connect(nats_server.url, timeout=10)
    try:
        js = nc.jetstream()
        layout = Layout("nobody")
        with pytest.raises(NamespaceNotFoundError, match="start df-server"):
            await open_bucket(js, layout.activity_bucket)
        settings = ConsumerSettings(ack_wait=5.0, max_deliver=3)
        with pytest.raises(NamespaceNotFoundError, match="start df-server"):
            await ensure_consumer(js, layout, "c", layout.workflow_tasks("q"), settings)
        assert issubclass(NamespaceNotFoundError, TransportError)
    finally:
        await nc.close()


class _Warnings(logging.Handler):
    """Counts the worker's warnings that contain ``text`` while installed."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1

    def __enter__(self) -> _Warnings:
        logging.getLogger("durablefuture.worker").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("durablefuture.worker").removeHandler(self)


def _echo(x: int) -> Generator[Any, Any, int]:
    return (yield df.activity(_double, x))


def _double(x: int) -> int:
    return 2 * x


async def test_a_worker_started_before_the_server_waits_for_the_namespace(
    nats_server: NatsServer,
) -> None:
    client = await df.Client.connect(nats_server.url)
    worker = df.Worker(client, "early", [_echo], [_double])
    starting = asyncio.create_task(worker.start(namespace_timeout=60))
    server = None
    try:
        retries = _Warnings("retrying")
        with retries:
            await wait_for(lambda: retries.count >= 1, 20)  # it waits, saying so
        assert not starting.done()
        server = await Server.connect(nats_server.url, ServerOptions())
        await server.start()
        running = asyncio.create_task(server.run())
        await asyncio.wait_for(starting, 30)
        assert await client.execute_workflow(_echo, 21, id="early", task_queue="early") == 42
        await server.shutdown()
        with contextlib.suppress(BaseException):
            await running
    finally:
        starting.cancel()
        await worker.shutdown()
        await client.close()
