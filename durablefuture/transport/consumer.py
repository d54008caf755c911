"""A pull consumer that streams messages as they arrive, with credit-based flow control.

nats-py's ``fetch(batch)`` waits for a whole batch (or the timeout) once a lingering pull has
started, which adds latency when traffic is light. This consumer keeps pull requests
outstanding and hands each message over the moment it arrives. ``credits`` bound how many
messages are delivered and not yet released, so a worker never takes more tasks than it can run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from durablefuture.transport.connection import on_reconnect
from durablefuture.transport.guard import check_subject

__all__ = ["Msg", "PullConsumer", "delivery_count", "stream_sequence"]

log = logging.getLogger(__name__)


def delivery_count(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg`` (1 when it carries no JetStream metadata)."""
    try:
        return max(1, int(msg.metadata.num_delivered or 1))
    except Exception:  # not a JetStream delivery: its reply subject is not an ack subject
        return 1


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery (0 when it has none)."""
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:
        return 0


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
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.consumer = consumer
        self.capacity = max(1, credits)
        self.expires = expires
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._requested = 0  # messages asked for and not yet delivered or expired
        self._held = 0  # messages delivered and not yet released
        self._wakeup = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        self.junk = 0  # messages on the inbox that were not deliveries of this consumer

    async def start(self) -> None:
        on_reconnect(self.nc, self._renew)
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        self._pump_task = asyncio.create_task(self._pump(), name=f"pull:{self.consumer}")

    async def stop(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def _renew(self) -> None:
        """Pull requests do not survive a reconnect: ask again."""
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

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if not self._is_delivery(msg):
                self.junk += 1
                if self.junk & (self.junk - 1) == 0:  # 1, 2, 4, 8 ...: bounded logging
                    log.warning(
                        "pull %s: ignored %d message(s) on its inbox that are not deliveries "
                        "of this consumer (last from subject %r)",
                        self.consumer,
                        self.junk,
                        msg.subject[:100],
                    )
                return
            self._held += 1
            self._queue.put_nowait(msg)
            self._requested = max(0, self._requested - 1)
            if self._requested == 0:
                self._wakeup.set()  # the request is fulfilled: ask again
            return
        if status == "100":  # idle heartbeat / flow control
            if msg.reply and msg.reply.startswith("$JS.FC."):  # never answer another subject
                with contextlib.suppress(Exception):
                    check_subject(msg.reply, "flow-control reply")
                    await self.nc.publish(msg.reply)
            return
        # 404 no messages, 408 request expired, 409 limits: the request is over.
        if status == "409":
            log.debug("pull %s: %s", self.consumer, (msg.headers or {}).get("Description"))
        self._requested = 0
        self._wakeup.set()

    async def _pump(self) -> None:
        """Keep exactly one pull request outstanding, for as many messages as we have room for.

        One request at a time keeps the bookkeeping exact: it ends when all its messages have
        arrived or with a status (expired, limits), and the next one is sent right away.
        """
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        expires_ns = int(self.expires * 1e9)
        while not self._closed:
            want = self.capacity - self._held
            if self._requested == 0 and want > 0:
                body = orjson.dumps({"batch": want, "expires": expires_ns})
                self._requested = want
                try:
                    await self.nc.publish(subject, body, reply=self._inbox)
                except Exception as exc:
                    self._requested = 0
                    log.warning("pull request on %s failed: %s", self.consumer, exc)
                    await asyncio.sleep(0.5)
                    continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.expires + 1.0)
            except TimeoutError:
                # no status arrived for our request (e.g. lost on a reconnect): ask again
                self._requested = 0
