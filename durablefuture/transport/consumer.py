"""A pull consumer that streams messages as they arrive, with credit-based flow control.

nats-py's ``fetch(batch)`` waits for a whole batch (or the timeout) once a lingering pull has
started, which adds latency when traffic is light. This consumer keeps pull requests
outstanding and hands each message over the moment it arrives. ``credits`` bound how many
messages are delivered and not yet released, so a worker never takes more tasks than it can run.

Anyone who learns a consumer's inbox can publish to it, so nothing that arrives there is
believed on its face. Each pull request gets its own reply subject, ``<inbox>.<token>`` with 64
random bits. Only a delivery carrying this consumer's ack subject takes a credit; only a status
(``404``/``408``/``409``, as a status line or a ``Status`` header) on the reply subject of the
request outstanding *now* ends that request, once.
A forged status anywhere else is counted as junk and ignored, so it can neither make the loop
send extra pull requests nor leave several open at once (which would multiply the credits).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from durablefuture.codec.jsapi import api_request
from durablefuture.transport.connection import on_reconnect
from durablefuture.transport.guard import check_subject

__all__ = ["Msg", "PullConsumer", "delivery_count", "stored_time", "stream_sequence"]

log = logging.getLogger(__name__)

MISSING_BACKOFF = 1.0
"""Seconds before asking again after JetStream answered "no responders" (503): the consumer
does not exist (or JetStream is away), and asking at once would be a hot loop."""


def _ack_numbers(reply: str | None) -> tuple[int, int, int] | None:
    """(deliveries, stream sequence, stored time in ns) from a JetStream ack subject, or None
    for anything ``msg.metadata`` would refuse to read.

    The same checks as nats-py's ``Msg.Metadata._from_reply`` (token count, ``$JS.ACK``
    prefix, every number and the timestamp readable), without building its frozen dataclasses
    for every delivery.
    """
    if not reply:
        return None
    tokens = reply.split(".")
    n = len(tokens)
    if not ((n == 9 or n >= 11) and tokens[0] == "$JS" and tokens[1] == "ACK"):
        return None
    first = 4 if n == 9 else 6  # deliveries, stream seq, consumer seq, timestamp, pending
    try:
        delivered, stream_seq, _, stamp, _ = (int(t) for t in tokens[first : first + 5])
        datetime.datetime.fromtimestamp(stamp / 1_000_000_000.0, datetime.UTC)
    except Exception:  # as nats-py would raise: not readable
        return None
    return delivered, stream_seq, stamp


def delivery_count(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg`` (1 when it carries no JetStream metadata)."""
    numbers = _ack_numbers(getattr(msg, "reply", None))
    return max(1, numbers[0] or 1) if numbers is not None else 1


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery (0 when it has none)."""
    numbers = _ack_numbers(getattr(msg, "reply", None))
    return numbers[1] if numbers is not None else 0


def stored_time(msg: Msg) -> float | None:
    """When nats-server stored a JetStream delivery (seconds since the epoch, its clock), or
    None when it carries no JetStream metadata."""
    numbers = _ack_numbers(getattr(msg, "reply", None))
    return numbers[2] / 1e9 if numbers is not None else None


class PullConsumer:
    """Pull messages from durable ``consumer`` of ``stream``; iterate with :meth:`next`."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        *,
        credits: int = 256,
        expires: float = 5.0,
        on_missing: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.consumer = consumer
        self.capacity = max(1, credits)
        self.expires = expires
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._subs: list[Subscription] = []
        self._inbox = ""
        self._token = ""  # reply token of the pull request outstanding now ("" if none)
        self._past: deque[str] = deque(maxlen=8)  # reply tokens of the last requests
        self._requested = 0  # messages asked for and not yet delivered or expired
        self.requests = 0  # pull requests sent
        self._held = 0  # messages delivered and not yet released
        self._wakeup = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        self.junk = 0  # messages on the inbox that were not deliveries of this consumer
        self.missing = 0  # pull requests answered "no responders" (no such consumer)
        self._missing = False
        self.on_missing = on_missing
        """Called (after a pause) when the consumer turned out missing, e.g. to create it."""

    async def start(self) -> None:
        on_reconnect(self.nc, self._renew)
        self._inbox = self.nc.new_inbox()
        # the replies to our requests come on <inbox>.<token>; the bare inbox is watched too,
        # only to count what is sent there
        for subject in (f"{self._inbox}.*", self._inbox):
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_msg))
        self._pump_task = asyncio.create_task(self._pump(), name=f"pull:{self.consumer}")

    async def stop(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _renew(self) -> None:
        """Pull requests do not survive a reconnect: ask again."""
        self._end_request()

    def _end_request(self) -> None:
        self._token = ""
        self._requested = 0
        self._wakeup.set()

    def release(self, n: int = 1) -> None:
        """A delivered message is done with (acked, nacked or terminated): free its credit."""
        self._held = max(0, self._held - n)
        self._wakeup.set()

    async def next(self) -> Msg:
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()

    def _is_delivery(self, msg: Msg) -> bool:
        """A message of our consumer carries its ack subject: ``$JS.ACK.<stream>.<consumer>.``
        (or the longer form with domain and account hash). Anything else on the inbox is junk
        that anyone who learned the inbox could have sent; it must not take a credit.
        """
        tokens = (msg.reply or "").split(".")
        if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
            return False
        if len(tokens) == 9:
            return tokens[2] == self.stream and tokens[3] == self.consumer
        return len(tokens) >= 12 and tokens[4] == self.stream and tokens[5] == self.consumer

    def _token_of(self, subject: str) -> str:
        prefix = self._inbox + "."
        return subject[len(prefix) :] if subject.startswith(prefix) else ""

    def _ignore(self, msg: Msg, what: str) -> None:
        self.junk += 1
        if self.junk & (self.junk - 1) == 0:  # 1, 2, 4, 8 ...: bounded logging
            log.warning(
                "pull %s: ignored %d message(s) on its inbox that are not %s (last on %r from %r)",
                self.consumer,
                self.junk,
                what,
                msg.subject[:100],
                (msg.reply or "")[:100],
            )

    async def _on_msg(self, msg: Msg) -> None:
        token = self._token_of(msg.subject)
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            # (a delivery arrives under its stream subject, not the reply subject)
            if not self._is_delivery(msg):
                self._ignore(msg, "deliveries of this consumer")
                return
            self._held += 1
            self._queue.put_nowait(msg)
            if self._token:
                self._requested = max(0, self._requested - 1)
                if self._requested == 0:
                    self._end_request()  # the request is fulfilled: ask again
            return
        if status == "100":  # idle heartbeat / flow control
            if msg.reply and msg.reply.startswith("$JS.FC."):  # never answer another subject
                with contextlib.suppress(Exception):
                    check_subject(msg.reply, "flow-control reply")
                    await self.nc.publish(msg.reply)
            return
        # 404 no messages, 408 request expired, 409 limits / leadership change: the request is
        # over, if it is the one outstanding now; a status for any other is not JetStream's
        if not token or token != self._token:
            if token and token in self._past:
                # a late status of an earlier request of ours (one we gave up waiting for, or
                # sent before a reconnect): that request is over already
                log.debug("pull %s: status %s of an earlier request", self.consumer, status)
                return
            self._ignore(msg, "the status of this consumer's outstanding pull request")
            return
        if status == "409":
            log.debug("pull %s: %s", self.consumer, (msg.headers or {}).get("Description"))
        if status == "503":
            self.missing += 1
            self._missing = True
            if self.missing & (self.missing - 1) == 0:  # 1, 2, 4, 8 ...: bounded logging
                log.warning(
                    "pull %s: no responders (%d times): the consumer does not exist or "
                    "JetStream is not available; asking again every %gs",
                    self.consumer,
                    self.missing,
                    MISSING_BACKOFF,
                )
        self._end_request()

    async def _pump(self) -> None:
        """Keep exactly one pull request outstanding, for as many messages as we have room for.

        One request at a time keeps the bookkeeping exact: it ends when all its messages have
        arrived or with a status (expired, limits), and the next one is sent right away.
        """
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        expires_ns = int(self.expires * 1e9)
        while not self._closed:
            self._wakeup.clear()  # before looking: a wake-up from now on is not missed
            want = self.capacity - self._held
            if self._missing and not self._token:
                self._missing = False
                await asyncio.sleep(MISSING_BACKOFF)
                if self.on_missing is not None:
                    try:
                        await self.on_missing()
                    except Exception as exc:  # asked again after the next pause
                        log.debug("pull %s: could not restore the consumer: %s", self.consumer, exc)
                continue
            if not self._token and want > 0:
                body = api_request({"batch": want, "expires": expires_ns})
                token = secrets.token_hex(8)
                self._token = token
                self._past.append(token)
                self._requested = want
                self.requests += 1
                try:
                    await self.nc.publish(subject, body, reply=f"{self._inbox}.{token}")
                except Exception as exc:
                    self._token = ""
                    self._requested = 0
                    log.warning("pull request on %s failed: %s", self.consumer, exc)
                    await asyncio.sleep(0.5)
                    continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.expires + 1.0)
            except TimeoutError:
                # no status arrived for our request (e.g. lost on a reconnect): ask again
                self._token = ""
                self._requested = 0
