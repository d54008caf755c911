"""Replies over core NATS: one wildcard inbox per connection user, notices, requests.

:class:`ReplyInbox` is the one reply multiplexer: a single ``<inbox>.*`` subscription, each
reply subject a token under it routed to its waiter, so waiting for an answer (a PubAck, a
df-server's reply) costs no subscription, task or timer per message. Each
:class:`~durablefuture.transport.publisher.Publisher` has one (``publisher.replies``): its
PubAcks come back on it, and the client waits there for the answers to its requests.

NATS errors are translated here, once: a failed subscribe or request raises
:class:`~durablefuture.core.errors.TransportError` (:class:`NoResponders` when nobody listens,
:class:`RequestTimedOut` when nobody answered in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from durablefuture.core.errors import TransportError
from durablefuture.transport.guard import check_message

__all__ = [
    "NoResponders",
    "ReplyInbox",
    "RequestTimedOut",
    "Watch",
    "request",
    "request_with_headers",
]


_SECRET_CHARS = 8
"""Hex digits of randomness in each reply token (32 bits, against one wait's guesses)."""
_POOL_BYTES = 2048


class NoResponders(TransportError):
    """Nobody subscribes to the subject a request was sent to."""


class RequestTimedOut(TransportError):
    """A request got no answer in time."""


class ReplyInbox:
    """One wildcard subscription; each reply is routed by its subject's last token."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = ""
        self._next = 0
        self._pool, self._pool_at = "", 0
        self._routes: dict[str, Callable[[Msg], None]] = {}
        self._sub: Subscription | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self._sub is not None

    async def start(self) -> None:
        """Subscribe (once; concurrent callers wait for the same subscription)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.started:
                return
            prefix = f"{self.nc.new_inbox()}."
            try:
                self._sub = await self.nc.subscribe(prefix + "*", cb=self._on)
            except nats.errors.Error as exc:
                raise TransportError(f"subscribing to a reply inbox failed: {exc}") from exc
            self.prefix = prefix

    async def _on(self, msg: Msg) -> None:
        route = self._routes.get(msg.subject[len(self.prefix) :])
        if route is not None:
            route(msg)

    def _secret(self) -> str:
        # unguessable from the tokens seen before: every worker (or client) of a namespace
        # logs in as one user and may read that user's inboxes, so a counter alone would let
        # one of them have df-server answer into another's waiting request
        if self._pool_at >= len(self._pool):
            self._pool, self._pool_at = os.urandom(_POOL_BYTES).hex(), 0
        at = self._pool_at
        self._pool_at = at + _SECRET_CHARS
        return self._pool[at : at + _SECRET_CHARS]

    def open(self, route: Callable[[Msg], None]) -> str:
        """A new reply subject whose replies go to ``route`` until :meth:`close`."""
        self._next += 1
        token = f"{self._next}{self._secret()}"
        self._routes[token] = route
        return self.prefix + token

    def close(self, subject: str) -> None:
        self._routes.pop(subject[len(self.prefix) :], None)

    def expect(self) -> tuple[str, asyncio.Future[bytes]]:
        """A reply subject and the future its first reply's body resolves (``close`` it when
        giving up)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        subject = ""

        def first(msg: Msg) -> None:
            self.close(subject)
            if not future.done():
                future.set_result(msg.data)

        subject = self.open(first)
        return subject, future

    async def ask(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send a core-NATS request answered on this inbox; the answer's body (see
        :meth:`ask_msg`)."""
        return (await self.ask_msg(subject, data, timeout, headers)).data

    async def ask_msg(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Msg:
        """Send a core-NATS request answered on this inbox; the answer (body and headers).

        What :func:`request` does (:class:`NoResponders`, :class:`RequestTimedOut`, else
        :class:`TransportError`), for the requests every workflow makes (a worker's reports,
        a client's starts): nats-py's ``request`` draws each reply subject from the system's
        random source and waits with ``asyncio.wait_for`` (a future, a task wrapper and a timer
        per request); here the reply subject is this inbox's next token and the wait one timer.
        The request is checked as every publish is (``check_message``).
        """
        if not self.started:
            await self.start()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Msg] = loop.create_future()

        def answered(msg: Msg) -> None:
            if not answer.done():
                answer.set_result(msg)

        def timed_out() -> None:
            if not answer.done():
                answer.set_exception(RequestTimedOut(f"no answer on {subject} within {timeout:g}s"))

        reply = self.open(answered)
        timer: asyncio.TimerHandle | None = None
        try:
            check_message(self.nc, subject, data, headers, reply)
            try:
                await self.nc.publish(
                    subject, data, reply=reply, headers=dict(headers) if headers else None
                )
            except nats.errors.Error as exc:
                raise TransportError(f"request on {subject} failed: {exc}") from exc
            # the wait starts once the request is sent, as nats-py's ``request`` did
            timer = loop.call_later(timeout, timed_out)
            msg = await answer
        finally:
            if timer is not None:
                timer.cancel()
            self.close(reply)
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoResponders(f"nobody listens on {subject}")
        return msg


class Watch:
    """The core-NATS messages published on one subject, collected until :meth:`close`."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._sub: Subscription | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, timeout: float) -> None:
        """Until :attr:`received` holds a message (at once if it does) or ``timeout`` seconds
        pass. One future and one timer: the waiting task resumes in the loop turn after the
        message's (``asyncio.wait_for`` over an ``Event`` took a task of its own and two more
        turns, on the way from a closed notice to the read of the run's history)."""
        if self.received:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    @classmethod
    async def open(cls, nc: NATS, subject: str) -> Watch:
        watch = cls()

        async def on(msg: Msg) -> None:
            watch.received.append(msg.data)
            if watch._waiter is not None:
                _wake(watch._waiter)

        try:
            watch._sub = await nc.subscribe(subject, cb=on)
        except nats.errors.Error as exc:
            raise TransportError(f"subscribing to {subject} failed: {exc}") from exc
        return watch

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def request(
    nc: NATS,
    subject: str,
    data: bytes,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Send a core-NATS request and return the answer's body."""
    answer, _ = await request_with_headers(nc, subject, data, timeout, headers)
    return answer


async def request_with_headers(
    nc: NATS,
    subject: str,
    data: bytes,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Send a core-NATS request; the answer's body and headers."""
    try:
        msg = await nc.request(subject, data, timeout=timeout, headers=headers)
    except nats.errors.NoRespondersError:
        raise NoResponders(f"nobody listens on {subject}") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise RequestTimedOut(f"no answer on {subject} within {timeout:g}s") from None
    except nats.errors.Error as exc:
        raise TransportError(f"request on {subject} failed: {exc}") from exc
    return msg.data, dict(msg.headers or {})
