"""The history store's optimistic concurrency, against a real JetStream."""

from __future__ import annotations

import asyncio

import nats.aio.msg
import pytest
from attrs import evolve
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

N_RUNS = 500  # stale reads showed after ~150 runs when reads went to any replica


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


async def test_reads_right_after_appends_see_them_on_an_r3_stream(
    nats_cluster: NatsCluster,
) -> None:
    """Any replica may answer a direct get, one that has not applied the newest append yet
    included (about 1% of reads right after a write, measured on a healthy 3-node cluster).
    Every read of the store reaches what was appended before it: the run's batches, its last
    sequence, the newest batch of the workflow id, the first batch of a run."""
    layout = Layout("default")
    writer_nc = await connect(nats_cluster.url)
    readers = []
    try:
        pub = Publisher(writer_nc)
        await ensure_namespace(pub.js, layout, 3)
        leader = await nats_cluster.stream_leader(layout.stream)
        writer = HistoryStore(writer_nc, pub, layout, default_codec())
        for node in nats_cluster.nodes:  # a reader on each node: their replicas answer them
            nc = await connect(node.url)
            readers.append((nc, HistoryStore(nc, Publisher(nc), layout, default_codec())))
        stale: list[str] = []
        for i in range(N_RUNS):
            run = f"run{i}"
            started = evolve(_started(), run_id=run, workflow_id=f"wf{i}")
            seq = await writer.append(f"wf{i}", run, "start", [started], 0, whole_workflow=True)
            fired = ev.TimerFired(event_id=2, at=2.0, seq=1)
            seq = await writer.append(f"wf{i}", run, "tmr:t1", [fired], seq)
            for _, store in readers:
                batches = await store.read(f"wf{i}", run)
                if [b.stream_seq for b in batches][-1:] != [seq]:
                    stale.append(f"read {i}: {[b.stream_seq for b in batches]}")
                if await store.last_seq(f"wf{i}", run) != seq:
                    stale.append(f"last_seq {i}")
                last = await store.last_of_workflow(f"wf{i}")
                if last is None or last.batch.stream_seq != seq:
                    stale.append(f"last_of_workflow {i}")
                if await store.first_batch(f"wf{i}", run) is None:
                    stale.append(f"first_batch {i}")
        assert not stale, f"stale reads (stream leader {leader.name}): {stale}"
    finally:
        for nc, _ in readers:
            await nc.close()
        await writer_nc.close()


async def test_leader_reads_come_back_on_the_publishers_inbox(nats_server: NatsServer) -> None:
    """The store's reads of the stream leader are answered on its publisher's reply inbox
    (no nats-py request per read) and read what the plain request reads; a read that cannot
    be answered still raises a TransportError naming it."""
    from durablefuture.transport.stored import leader_get

    nc = await connect(nats_server.url)
    try:
        pub = Publisher(nc)
        layout = Layout("default")
        await ensure_namespace(pub.js, layout, 1)
        store = HistoryStore(nc, pub, layout, default_codec())
        seq = await store.append("wf", "run1", "start", [_started()], 0, whole_workflow=True)
        asked: list[str] = []
        ask = pub.replies.ask

        async def counted(subject: str, *args: object, **kwargs: object) -> bytes:
            asked.append(subject)
            return await ask(subject, *args, **kwargs)  # type: ignore[arg-type]

        pub.replies.ask = counted  # type: ignore[method-assign]
        batch = await store.last_batch("wf", "run1")
        assert batch is not None and batch.stream_seq == seq
        assert asked == [f"$JS.API.STREAM.MSG.GET.{layout.stream}"]
        subject = layout.history("wf", "run1")
        request: dict[str, object] = {"last_by_subj": subject}
        ours = await leader_get(nc, layout.stream, request, subject, 5.0, pub.replies)
        plain = await leader_get(nc, layout.stream, request, subject, 5.0)
        assert ours == plain and ours is not None and ours.seq == seq
        assert await store.last_batch("wf", "no-such-run") is None
        with pytest.raises(TransportError, match="reading nothing"):
            await leader_get(nc, "NO_SUCH_STREAM", request, "nothing", 5.0, pub.replies)
    finally:
        await nc.close()


async def test_a_direct_read_of_the_newest_batch_reads_what_the_leader_reads(
    nats_server: NatsServer,
) -> None:
    """``last_batch(direct=True)`` (a direct get, on the publisher's inbox) finds the batch the
    leader's API finds, None for a run without history; an answer that names another subject
    or no readable sequence is refused as unreadable, never taken for a batch."""
    from durablefuture.transport.stored import direct_last

    nc = await connect(nats_server.url)
    try:
        pub = Publisher(nc)
        layout = Layout("default")
        await ensure_namespace(pub.js, layout, 1)
        store = HistoryStore(nc, pub, layout, default_codec())
        first = await store.append("wf", "run1", "start", [_started()], 0, whole_workflow=True)
        fired = [ev.TimerFired(event_id=2, at=2.0, seq=1)]
        seq = await store.append("wf", "run1", "t", fired, first)
        asked: list[str] = []
        ask = pub.replies.ask_msg

        async def counted(subject: str, *args: object, **kwargs: object) -> object:
            asked.append(subject)
            return await ask(subject, *args, **kwargs)  # type: ignore[arg-type]

        pub.replies.ask_msg = counted  # type: ignore[assignment,method-assign]
        direct = await store.last_batch("wf", "run1", direct=True)
        assert asked == [f"$JS.API.DIRECT.GET.{layout.stream}"]
        leader = await store.last_batch("wf", "run1")
        assert direct is not None and direct == leader and direct.stream_seq == seq
        assert await store.last_batch("wf", "no-such-run", direct=True) is None

        # answers from someone else than a stream (here: on a stream name nobody serves)
        subject = layout.history("wf", "run1")
        answers = iter(
            [
                {"Nats-Subject": "df.default.h.other.run", "Nats-Sequence": "3"},
                {"Nats-Subject": subject, "Nats-Sequence": "3x"},
                {"Nats-Subject": subject, "Nats-Sequence": "1" * 21},
                {"Nats-Subject": subject, "Nats-Sequence": "3", "Status": "408"},
            ]
        )

        async def forge(msg: nats.aio.msg.Msg) -> None:
            await nc.publish(msg.reply, b"junk", headers=next(answers))

        await nc.subscribe("$JS.API.DIRECT.GET.FAKE", cb=forge)
        for _ in range(4):
            with pytest.raises(TransportError, match="unreadable direct get answer"):
                await direct_last("FAKE", subject, "the history", 5.0, pub.replies)
    finally:
        await nc.close()
