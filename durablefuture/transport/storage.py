"""Waiting out a full JetStream store: one policy for every daemon.

When JetStream has no room ("insufficient resources": the server's ``max_file_store``, an
account limit or a full disk), a daemon keeps the message it is handling. It neither naks it
(each redelivery counts towards the consumer's ``max_deliver``, after which JetStream never
delivers it again) nor dead-letters it: it retries with a growing delay and meanwhile tells
JetStream it is still working on the message, so the message is not handed to anyone else.
One log line says that storage is full and why, one that it accepts messages again; nothing
is logged per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.msg import Msg

from durablefuture.core.errors import StorageFullError

__all__ = ["StorageWait"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageWait:
    """Retries what failed for lack of storage, for one daemon (``who`` names it in the log).

    ``keepalive``: seconds between two "still working on it" signals for a kept message (keep
    it under a third of the consumer's ack wait). ``stopping``: once set, waiting ends and the
    caller gives up; the kept message is redelivered after its ack wait.
    """

    def __init__(
        self,
        who: str,
        *,
        keepalive: float = 1.0,
        max_delay: float = 5.0,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.who = who
        self.keepalive = keepalive
        self.max_delay = max_delay
        self.stopping = stopping
        self.full_since: float | None = None
        self._back_at = float("-inf")  # when storage last accepted a message after being full
        self.waits = 0
        """Retries that waited for storage, over the daemon's life."""
        self.episodes = 0
        """Times storage was found full after it had been accepting messages."""

    @property
    def full(self) -> bool:
        return self.full_since is not None

    async def wait(
        self, exc: StorageFullError, keep: Msg | None, attempt: int, began: float | None = None
    ) -> bool:
        """Wait before retry ``attempt + 1``, keeping ``keep`` in progress. False: stopping.

        ``began`` (``time.monotonic()``) is when the failed attempt was made: one made before
        storage was seen to accept messages again is not news, and is not logged.
        """
        stale = began is not None and began < self._back_at
        if self.full_since is None and not stale:
            self.full_since = time.monotonic()
            self.episodes += 1
            log.error(
                "%s: JetStream storage is full (%s). Messages are kept, neither dropped nor "
                "dead-lettered, and retried until space is freed",
                self.who,
                exc,
                extra={"cause": "storage_full"},
            )
        self.waits += 1
        delay = min(self.max_delay, 0.2 * 2**attempt)
        end = time.monotonic() + delay
        while True:
            if keep is not None:
                with contextlib.suppress(Exception):
                    await keep.in_progress()
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            step = min(remaining, self.keepalive)
            if self.stopping is None:
                await asyncio.sleep(step)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), step)
            if self.stopping.is_set():
                return False

    def stored(self) -> None:
        """A message was stored: if storage had been full, say that it is back."""
        since = self.full_since
        if since is None:
            return
        self.full_since = None
        self._back_at = time.monotonic()
        log.warning(
            "%s: JetStream storage accepts messages again after %.1fs; resuming",
            self.who,
            time.monotonic() - since,
            extra={"cause": "storage_full"},
        )

    async def retry(self, op: Callable[[], Awaitable[T]], keep: Msg | None = None) -> T:
        """``await op()`` until it does not fail for lack of storage (or the daemon stops)."""
        attempt = 0
        while True:
            began = time.monotonic()
            try:
                result = await op()
            except StorageFullError as exc:
                if not await self.wait(exc, keep, attempt, began):
                    raise
                attempt += 1
                continue
            self.stored()
            return result
