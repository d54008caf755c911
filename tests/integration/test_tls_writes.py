"""Writes over TLS are coalesced: a flush of many commands reaches the TLS layer as one buffer
(one ``SSL_write``, cut into full-size records), not one TLS record per publish; and every
message still arrives, whole and in order, across reconnects.

Against a real nats-server that requires TLS and verifies the client certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durablefuture as df
from durablefuture.natsserver import NatsServer
from durablefuture.transport.connection import connect
from durablefuture.transport.nats_client import CoalescingTransport
from tests.integration.pki import Pki, make_pki

N = 2_000


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_nats(tmp_path: Path, pki: Pki) -> Iterator[NatsServer]:
    server = NatsServer(
        str(tmp_path / "nats"),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca=str(pki.ca),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


class _Spy:
    """Counts what nats-py's stream writer hands the TLS transport (asyncio's sslproto), which
    makes one TLS record (at least) of each buffer it is given."""

    def __init__(self, nc: Any) -> None:
        self.buffers: list[int] = []
        tls_transport = nc._transport._io_writer.transport
        write, writelines = tls_transport.write, tls_transport.writelines

        def counted_write(data: bytes) -> None:
            self.buffers.append(len(data))
            write(data)

        def counted_writelines(items: Any) -> None:
            items = list(items)
            self.buffers.extend(len(b) for b in items)
            writelines(items)

        tls_transport.write = counted_write
        tls_transport.writelines = counted_writelines


async def _receive_all(sub: Any, n: int) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(n):
        msg = await sub.next_msg(timeout=10)
        got.append(msg.data)
    return got


async def test_a_burst_of_publishes_reaches_tls_as_few_buffers_and_arrives_whole(
    tls_nats: NatsServer, pki: Pki
) -> None:
    tls = df.TlsConfig(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    url = f"tls://127.0.0.1:{tls_nats.port}"
    reader = await connect(url, tls=tls, timeout=10)
    writer = await connect(url, tls=tls, timeout=10)
    try:
        assert type(writer._transport) is CoalescingTransport
        sub = await reader.subscribe("burst")
        await reader.flush()
        spy = _Spy(writer)
        payloads = [f"message {i} ".encode() * (1 + i % 7) for i in range(N)]
        for p in payloads:  # queued without awaiting the flusher in between
            await writer.publish("burst", p)
        await writer.flush()
        got = await _receive_all(sub, N)
        assert got == payloads
        # N publishes (and the PING of the flush) went out in a handful of buffers; one TLS
        # record per command would be N+ buffers
        assert 0 < len(spy.buffers) <= N // 20, len(spy.buffers)
        assert sum(spy.buffers) > sum(len(p) for p in payloads)
    finally:
        await writer.close()
        await reader.close()


async def test_coalesced_writes_survive_a_restart_of_nats(tls_nats: NatsServer, pki: Pki) -> None:
    """After nats-server is killed and restarted the client reconnects over TLS on the same
    (coalescing) transport and its publishes arrive."""
    tls = df.TlsConfig(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    url = f"tls://127.0.0.1:{tls_nats.port}"
    nc = await connect(url, tls=tls, timeout=10)
    try:
        tls_nats.stop(kill=True)
        for _ in range(200):  # bounded: until nats-py notices the connection is gone
            if not nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not nc.is_connected
        tls_nats.start()
        for _ in range(400):  # bounded: nats-py reconnects every 0.25 s
            if nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert nc.is_connected
        assert type(nc._transport) is CoalescingTransport
        sub = await nc.subscribe("after")
        await nc.flush()
        payloads = [b"x%d" % i for i in range(500)]
        for p in payloads:
            await nc.publish("after", p)
        await nc.flush()
        assert await _receive_all(sub, len(payloads)) == payloads
    finally:
        await nc.close()
