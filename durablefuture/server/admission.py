"""Admission of new starts: runs already going come first, due timers before everything.

Every append df-server makes waits its turn in one queue: the namespace's stream stores its
messages one at a time, and with ``sync_interval: always`` each costs a disk flush. A burst of
starts (1,000 clients at once) would put thousands of appends (history, status entry, first
workflow task) ahead of the runs already going; a timer that comes due during the burst would
be recorded only after all of them, seconds late. So a new start from a client waits here
until fewer than ``limit`` starts are being handled, and while timer firings are being
recorded only ``limit // 8`` (at least one) may be: the burst goes through at the pace of
the disk, each run's first workflow task and timer land within a few appends of its start,
and a due timer waits behind tens of appends, not thousands. Starts are never stopped
altogether, so a stream of firings cannot starve them.

Only client starts wait (``in.start``): reports, signals, timer firings and df-server's own
inputs (child starts, continue-as-new) move runs that exist. A start waiting here keeps its
input in progress, so JetStream does not hand it to another server meanwhile. This changes
when a start is handled, never what is recorded: a crash leaves it unacked, and it is
redelivered as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["StartGate"]


class StartGate:
    """Orders df-server's own work: due timers, then runs already going, then new starts.

    ``limit``: starts handled at once (0: no limit). ``keepalive``: seconds between two
    "still working on it" signals for a start that waits.
    """

    def __init__(self, limit: int, keepalive: float = 1.0) -> None:
        self.limit = max(0, limit)
        self.keepalive = keepalive
        self._starts = 0
        self._firings = 0
        self._changed = asyncio.Condition()
        self.waited = 0
        """Starts that had to wait, over the server's life."""

    @property
    def _room(self) -> int:
        if self._firings:
            return max(1, self.limit // 8)
        return self.limit

    @contextlib.asynccontextmanager
    async def start(
        self, keep_alive: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the start places while handling a new start (waits for one)."""
        if self.limit:
            await self._admit(keep_alive)
        try:
            yield
        finally:
            if self.limit:
                self._starts -= 1
                await self._notify()

    async def _admit(self, keep_alive: Callable[[], Awaitable[None]] | None) -> None:
        async with self._changed:
            if self._starts < self._room:
                self._starts += 1
                return
            self.waited += 1
            while self._starts >= self._room:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._starts < self._room),
                        self.keepalive,
                    )
                except TimeoutError:
                    if keep_alive is not None:
                        with contextlib.suppress(Exception):  # redelivered if lost: harmless
                            await keep_alive()
            self._starts += 1

    @contextlib.asynccontextmanager
    async def firing(self) -> AsyncIterator[None]:
        """Mark a timer firing being recorded (starts give way meanwhile)."""
        self._firings += 1
        try:
            yield
        finally:
            self._firings -= 1
            if not self._firings:
                await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
