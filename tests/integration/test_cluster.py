"""DurableFuture on a real 3-node NATS cluster (tests/cluster.py): replicas and fail-over."""

from __future__ import annotations

import nats
import nats.js.errors

import durablefuture as df
from durablefuture.transport.connection import connect
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer, ensure_namespace
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.subjects import Layout
from tests.cluster import NatsCluster
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import add_workflow, expected_add, waiting_add

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


def _streams(layout: Layout) -> list[str]:
    """The namespace's stream and the streams behind its KV buckets (runs, act, workers)."""
    return [
        layout.stream,
        *(f"KV_{b}" for b in (layout.runs_bucket, layout.activity_bucket, layout.workers_bucket)),
    ]


async def _replicas(js: nats.js.JetStreamContext, layout: Layout) -> dict[str, tuple[int, int]]:
    """(configured replicas, peers seen by the leader + 1) of every stream and consumer."""
    out: dict[str, tuple[int, int]] = {}
    for name in _streams(layout):
        info = await js.stream_info(name)
        peers = len(info.cluster.replicas or []) + 1 if info.cluster else 1
        out[name] = (info.config.num_replicas or 1, peers)
    for consumer in await js.consumers_info(layout.stream):
        # 0 means "as many as the stream"
        configured = consumer.config.num_replicas or out[layout.stream][0]
        peers = len(consumer.cluster.replicas or []) + 1 if consumer.cluster else 1
        out[f"{layout.stream} > {consumer.name}"] = (configured, peers)
    return out


async def test_the_namespace_is_r3_everywhere(
    cluster_daemons: Daemons, nats_cluster: NatsCluster
) -> None:
    """df-server --replicas 3: the stream, every KV bucket and every consumer have 3 peers."""
    cluster_daemons.server()
    cluster_daemons.worker(*WF, *ACT)
    await wait_namespace(cluster_daemons.url, timeout=60)
    client = await df.Client.connect(cluster_daemons.url)
    try:
        result = await client.execute_workflow(
            add_workflow, 3, id="r3", task_queue="tests", timeout=60
        )
        assert result == expected_add(3)
        replicas = await _replicas(client.pub.js, client.layout)
    finally:
        await client.close()
    assert {"server", "wt_tests", "at_tests"} <= {k.split(" > ")[-1] for k in replicas}
    assert all(r == (3, 3) for r in replicas.values()), replicas


async def test_a_namespace_created_at_r1_is_raised_to_the_replicas_asked_for(
    nats_cluster: NatsCluster,
) -> None:
    """A namespace first created without --replicas (R1) is widened by a df-server started
    with --replicas 3: stream, buckets and the consumers (which follow their stream), so losing
    one node loses nothing."""
    layout = Layout("default")
    nc = await connect(nats_cluster.url)
    try:
        js = Publisher(nc).js
        await ensure_namespace(js, layout, 1)
        settings = ConsumerSettings(ack_wait=2, max_deliver=5)
        await ensure_consumer(js, layout, layout.server_consumer, layout.inputs, settings)
        before = await _replicas(js, layout)
        assert len(before) == 5 and {v[0] for v in before.values()} == {1}, before
        await ensure_namespace(js, layout, 3)

        async def all_r3() -> bool:
            return all(v == (3, 3) for v in (await _replicas(js, layout)).values())

        await wait_for(all_r3, 30)
        await ensure_namespace(js, layout, 1)  # never narrowed
        assert all(v[0] == 3 for v in (await _replicas(js, layout)).values())
    finally:
        await nc.close()


async def test_client_requests_ride_out_a_leader_election(
    cluster_daemons: Daemons, nats_cluster: NatsCluster
) -> None:
    """A start and a signal sent just after the stream's leader is SIGKILLed are stored once
    the cluster has elected another: the client sends them again (same request and message
    ids) instead of failing when one publish gets no PubAck in time."""
    cluster_daemons.server()
    cluster_daemons.worker(*WF, *ACT)
    await wait_namespace(cluster_daemons.url, timeout=60)
    client = await df.Client.connect(cluster_daemons.url)
    client.pub.timeout = 0.5  # shorter than an election: every request needs a second send
    client.request_timeout = 60
    try:
        assert await client.execute_workflow(
            add_workflow, 1, id="before", task_queue="tests", timeout=60
        ) == expected_add(1)
        leader = await nats_cluster.stream_leader(client.layout.stream)
        leader.kill()
        # the run waits for the signal, so it is still open when the signal is sent (a start
        # asked of df-server can be made, and a run that waits for nothing closed, before the
        # signal's own publish is stored)
        handle = await client.start_workflow(waiting_add, 2, id="after", task_queue="tests")
        await handle.signal("go", 1)
        assert await handle.result(timeout=60) == 6
        history = await handle.fetch_history()
    finally:
        await client.close()
    assert [type(e).__name__ for e in history].count("SignalReceived") == 1


async def test_daemons_started_while_jetstream_has_no_quorum_wait_for_it(
    cluster_daemons: Daemons, nats_cluster: NatsCluster
) -> None:
    """A df-server and a df-worker started while two of three nodes are down (JetStream
    answers ``503`` or not at all) stay up, say they are retrying, and serve once the nodes
    are back: no NATS traceback, no exit."""
    first = cluster_daemons.server()
    await wait_namespace(cluster_daemons.url, timeout=60)
    first.terminate()
    n2, n3 = nats_cluster.node("n2"), nats_cluster.node("n3")
    n2.kill()
    n3.kill()
    server = cluster_daemons.server()
    worker = cluster_daemons.worker(*WF, *ACT)
    # observable: each says it is waiting for JetStream (the JetStream API cannot answer)
    await wait_for(lambda: all("retrying" in d.log() for d in (server, worker)), timeout=60)
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    n2.start()
    n3.start()
    await nats_cluster.wait_healthy(timeout=90)
    client = await df.Client.connect(cluster_daemons.url)
    client.request_timeout = 60
    try:
        result = await client.execute_workflow(
            add_workflow, 4, id="after-quorum", task_queue="tests", timeout=60
        )
    finally:
        await client.close()
    assert result == expected_add(4)
    for d in (server, worker):
        assert d.proc is not None and d.proc.poll() is None, d.log()
        assert "Traceback" not in d.log(), d.log()
