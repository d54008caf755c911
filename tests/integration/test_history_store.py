"""The history store's optimistic concurrency, against a real JetStream."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import StreamConfig

from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.errors import TransportError
from durablefuture.natsserver import NatsServer
from durablefuture.transport.connection import connect
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.layout import ensure_namespace
from durablefuture.transport.publisher import MSG_ID, Publisher, WrongLastSequence
from durablefuture.transport.subjects import Layout
from tests.cluster import NatsCluster


def _started() -> ev.WorkflowStarted:
    return ev.WorkflowStarted(
        event_id=1,
        at=1.0,
        workflow_type="w",
        workflow_id="wf",
        run_id="run1",
        namespace="default",
        task_queue="q",
    )


async def test_two_writers_at_the_same_position_one_wins_the_other_is_told(
    nats_server: NatsServer,
) -> None:
    await _two_writers(nats_server.url, replicas=1)


async def test_two_writers_at_the_same_position_on_an_r3_stream(nats_cluster: NatsCluster) -> None:
    """On a clustered stream JetStream checks the message id before the expected sequence, so
    the loser's append comes back as a "duplicate" of the winner's (same position, same id):
    the store must still tell it that it lost (it used to report success, and the server went
    on from events that were never recorded)."""
    await _two_writers(nats_cluster.url, replicas=3)


async def _two_writers(url: str, replicas: int) -> None:
    nc = await connect(url)
    try:
        pub = Publisher(nc)
        layout = Layout("default")
        await ensure_namespace(pub.js, layout, replicas)
        assert (await pub.js.stream_info(layout.stream)).config.num_replicas == replicas
        store = HistoryStore(nc, pub, layout, default_codec())
        seq1 = await store.append("wf", "run1", "start", [_started()], 0, whole_workflow=True)
        first = ev.TimerFired(event_id=2, at=2.0, seq=1)
        other = ev.SignalReceived(event_id=2, at=2.5, name="go")
        await store.append("wf", "run1", "tmr:t1", [first], seq1)
        # A second writer with a stale view writes different events at the same position: it
        # must learn it lost (its message id names the same position, but not the same bytes).
        with pytest.raises(WrongLastSequence):
            await store.append("wf", "run1", "sig:1", [other], seq1)
        # Repeating the winner's own append is recognised as already done.
        again = await store.append("wf", "run1", "tmr:t1", [first], seq1)
        batches = await store.read("wf", "run1")
        assert [b.input_id for b in batches] == ["start", "tmr:t1"]
        assert again == batches[-1].stream_seq
    finally:
        await nc.close()


async def test_a_publish_no_stream_takes_yet_is_sent_again_until_one_does(
    nats_server: NatsServer,
) -> None:
    """JetStream answers 503 while no stream (leader) takes a subject, as a cluster does while
    a stream elects its leader: the publisher sends it again until its deadline, and only a
    503 that lasts that long is an error."""
    nc = await connect(nats_server.url)
    try:
        pub = Publisher(nc, timeout=1.0)
        with pytest.raises(TransportError, match=r"no JetStream stream took late\.x within 1s"):
            await pub.publish("late.x", b"lost")
        pending = await pub.send("late.x", b"kept", {MSG_ID: "late-1"}, timeout=30)
        await asyncio.sleep(0.6)  # refused at least once by now
        await pub.js.add_stream(StreamConfig(name="LATE", subjects=["late.>"]))
        ack = await pending
        assert (ack.stream, ack.seq, ack.duplicate) == ("LATE", 1, None)
        assert (await pub.js.stream_info("LATE")).state.messages == 1
    finally:
        await nc.close()
