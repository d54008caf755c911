"""Requests to the df-server: stored in the namespace's stream, answered on the client's inbox.

A start is asked first as a core request (``dfev.<ns>.start``, :meth:`Requests._ask_start`),
and stored only if no df-server answers it in time (``transport/start_requests.py``).

A request survives a crash of anything (it is stored first) and is answered by whichever
df-server processes it; the answer comes back on a reply subject of the client's one
:class:`~durablefuture.transport.replies.ReplyInbox` (its publisher's, which PubAcks use too).
:func:`error_from_reply` turns a refusal into the matching error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from durablefuture.codec.wire import Codec, InputEnvelope, Reply, default_codec
from durablefuture.core.errors import (
    DurableFutureError,
    MessageRejectedError,
    ServerUnavailableError,
    TransportError,
)
from durablefuture.core.reply_errors import error_for_reply
from durablefuture.transport.connection import NATS
from durablefuture.transport.headers import REPLY_HEADER
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.layout import KeyValue, open_bucket
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.retrying import Backoff, retry_until
from durablefuture.transport.start_requests import (
    ANSWER_WAIT,
    PAUSE,
    STORE,
    ask_start,
    refused_to_ask,
)
from durablefuture.transport.subjects import Layout
from durablefuture.transport.workers import WorkerRegistry

if TYPE_CHECKING:
    from durablefuture.schedules import Schedules

__all__ = ["Requests", "error_from_reply"]

log = logging.getLogger("durablefuture.client")

_RESEND = Backoff(first=0.5, most=0.5)
"""A request JetStream did not acknowledge is sent again every half second."""


class Requests:
    """A client's connection, namespace and stores, and its requests to the df-server."""

    def __init__(self, nc: NATS, namespace: str = "default", *, codec: Codec | None = None):
        self.nc = nc
        self.namespace = namespace
        self.layout = Layout(namespace)
        self.pub = Publisher(nc)
        # large payloads travel by reference through the namespace's object store
        self.codec = (codec or default_codec()).with_store(ObjectPayloads(self.pub.js, self.layout))
        self.history = HistoryStore(nc, self.pub, self.layout, self.codec)
        self.request_timeout = 15.0
        self.start_wait = ANSWER_WAIT
        """Seconds to wait for a df-server to answer a start request before storing the
        start instead (0: always store it)."""
        self._ask_starts_at = 0.0  # after a start request nats-server refused: store until then
        self._replies = self.pub.replies  # one inbox for PubAcks and server replies
        self._runs_kv: KeyValue | None = None
        self._own_nc = False
        self.registry = WorkerRegistry(nc, self.pub, self.layout, self.codec)
        self._schedule_ops: Schedules | None = None

    async def _kv(self) -> KeyValue:
        if self._runs_kv is None:
            self._runs_kv = await open_bucket(self.pub.js, self.layout.runs_bucket)
        return self._runs_kv

    async def _request(self, kind: str, env: InputEnvelope, msg_id: str = "") -> Reply:
        return await self._ask(self.layout.input(kind), await self.codec.pack_input(env), msg_id)

    async def _ask_start(self, env: InputEnvelope) -> Reply:
        """Ask a df-server to start a run now; store the start if none answers in time (the
        same request id: a start made meanwhile is answered with its run)."""
        data = await self.codec.pack_input(env)
        if self.start_wait > 0 and time.monotonic() >= self._ask_starts_at:
            answer = await ask_start(
                self._replies, self.layout.start_requests, data, wait=self.start_wait
            )
            if answer is None and refused_to_ask(self.nc, self.layout.start_requests):
                log.warning(
                    "nats-server refuses this client's start requests (%s: credentials made "
                    "before it existed? regenerate them with `df auth init`); starts are "
                    "stored for the next %gs",
                    self.layout.start_requests,
                    PAUSE,
                )
                self._ask_starts_at = time.monotonic() + PAUSE
            elif answer is not None and answer != STORE:
                try:
                    return self.codec.decode_reply(answer)
                except DurableFutureError as exc:  # not a df-server's answer: store it
                    log.warning("a start request got an answer that is no reply: %s", exc)
        return await self._ask(self.layout.input("start"), data)

    async def _ask(self, subject: str, data: bytes, msg_id: str = "") -> Reply:
        """Store a request on ``subject`` and wait for a df-server's answer."""
        await self._replies.start()
        reply_to, fut = self._replies.expect()
        headers = {REPLY_HEADER: reply_to}
        if msg_id:
            headers[MSG_ID] = msg_id
        deadline = time.monotonic() + self.request_timeout
        try:
            await self._store_request(subject, data, headers, deadline)
            data = await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ServerUnavailableError(
                f"no df-server answered within {self.request_timeout:g}s (namespace "
                f"{self.namespace!r}). The request is stored and will be processed once a "
                "df-server runs; start one with `df-server --nats URL` or `df dev`"
            ) from None
        finally:
            self._replies.close(reply_to)
        return self.codec.decode_reply(data)

    async def _store_request(
        self, subject: str, data: bytes, headers: dict[str, str], deadline: float
    ) -> None:
        """Publish a request until JetStream acknowledges it, or ``deadline``.

        A NATS cluster that loses a node can leave a publish unanswered (the connection was on
        the node that died or froze) or refused while the stream elects a leader; both are
        sent again, unchanged. That is safe: inputs carry ``Nats-Msg-Id`` and an input id the
        server applies once, starts a request id it answers with the run it started.
        """

        async def store() -> None:
            timeout = max(0.5, min(self.pub.timeout, deadline - time.monotonic()))
            await self.pub.publish(subject, data, headers, timeout=timeout)

        def again(exc: Exception, tries: int, _delay: float) -> None:
            log.info(
                "storing a request on %s failed (attempt %d: %s); sending it again",
                subject,
                tries,
                exc,
            )

        await retry_until(
            store,
            deadline=deadline,
            retry_on=(TransportError,),
            never=(MessageRejectedError,),
            backoff=_RESEND,
            on_retry=again,
            max_tries=1000,  # bounded by the deadline; the count is a backstop
        )


def error_from_reply(reply: Reply, workflow_id: str) -> DurableFutureError:
    """The error a df-server's refusal stands for (``reply.error_type`` names it)."""
    return error_for_reply(
        reply.error_type, reply.message, workflow_id=workflow_id, run_id=reply.run_id
    )
