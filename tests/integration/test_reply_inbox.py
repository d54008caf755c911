"""Requests answered on a connection's one reply inbox (``ReplyInbox.ask``): what a worker's
reports and a client's starts are asked with. Each outcome is the one nats-py's ``request``
gave: the answer's body, :class:`NoResponders`, :class:`RequestTimedOut`; a request NATS would
refuse is not sent; nothing is left routed once a request is over."""

from __future__ import annotations

import asyncio

import pytest

from durablefuture.core.errors import MessageRejectedError
from durablefuture.natsserver import NatsServer
from durablefuture.transport.connection import connect
from durablefuture.transport.messages import Msg
from durablefuture.transport.nats_client import close_quietly
from durablefuture.transport.replies import NoResponders, ReplyInbox, RequestTimedOut

pytestmark = pytest.mark.asyncio


async def test_asked_requests_end_as_nats_py_requests_did(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url, timeout=10)
    try:
        seen: list[tuple[bytes, dict[str, str]]] = []

        async def answer(msg: Msg) -> None:
            seen.append((msg.data, dict(msg.headers or {})))
            await msg.respond(b"answered " + msg.data)

        async def ignore(_msg: Msg) -> None:
            return None

        await nc.subscribe("svc.echo", cb=answer)
        await nc.subscribe("svc.silent", cb=ignore)
        await nc.flush()
        inbox = ReplyInbox(nc)  # started by its first request

        body = await inbox.ask("svc.echo", b"one", 5.0, {"Df-Receipt": "_INBOX.x"})
        assert body == b"answered one"
        assert seen == [(b"one", {"Df-Receipt": "_INBOX.x"})]
        # many at once, each answer to its own request
        bodies = await asyncio.gather(*(inbox.ask("svc.echo", b"%d" % i, 5.0) for i in range(50)))
        assert bodies == [b"answered %d" % i for i in range(50)]

        with pytest.raises(NoResponders, match=r"nobody listens on svc\.nobody"):
            await inbox.ask("svc.nobody", b"", 5.0)
        with pytest.raises(RequestTimedOut, match=r"no answer on svc\.silent within 0\.2s"):
            await inbox.ask("svc.silent", b"", 0.2)
        with pytest.raises(MessageRejectedError):
            await inbox.ask("svc.bad subject", b"", 5.0)
        with pytest.raises(MessageRejectedError):
            await inbox.ask("svc.echo", b"", 5.0, {"Df-Receipt": "a\r\nPUB x 0"})
        assert len(seen) == 51  # the refused ones were never sent

        # a request whose waiter is cancelled stops waiting at once
        waiting = asyncio.ensure_future(inbox.ask("svc.silent", b"", 30.0))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert inbox._routes == {}  # nothing left routed: no answer can reach a stale waiter
    finally:
        await close_quietly(nc)


async def test_a_reply_subject_cannot_be_told_from_the_ones_before(
    nats_server: NatsServer,
) -> None:
    """Every worker (or client) of a namespace logs in as one user and may read that user's
    inboxes: from the reply subjects it sees, it must not be able to name the next one and
    have df-server (or JetStream) answer into another process's waiting request."""
    nc = await connect(nats_server.url)
    try:
        inbox = ReplyInbox(nc)
        await inbox.start()
        seen = [inbox.open(lambda msg: None) for _ in range(1_000)]
        tokens = [subject[len(inbox.prefix) :] for subject in seen]
        assert len(set(tokens)) == len(tokens)
        for n, token in enumerate(tokens, start=1):
            # the counter keeps tokens apart; what follows it is drawn at random
            assert token.startswith(str(n)) and len(token) == len(str(n)) + 8, token
        suffixes = [token[len(str(n)) :] for n, token in enumerate(tokens, start=1)]
        assert len(set(suffixes)) > 990  # (a repeat among 1,000 draws of 32 bits is rare)
        assert inbox.prefix + str(len(seen) + 1) != inbox.open(lambda msg: None)
    finally:
        await close_quietly(nc)
