"""Reading a task queue consumer's live state goes through the transport (``df why`` uses it)."""

from __future__ import annotations

from nats.js.api import ConsumerConfig, StreamConfig

from durablefuture.natsserver import NatsServer
from durablefuture.transport.connection import connect
from durablefuture.transport.queues import queue_state


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
