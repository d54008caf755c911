"""The time the server and workers read for timers, retries, timeouts and workflow time.

Production uses :data:`REAL_CLOCK` (``time.time`` and the event loop's ``call_later``, nothing
more). Tests may give the server and workers one :class:`SkippingClock`: it reads the wall
clock plus an offset, and :meth:`SkippingClock.advance_to` moves that offset forward, firing
the timers that fall due on the way. ``durablefuture.testing.skipping`` decides when to skip
(nothing running, nothing in flight).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["REAL_CLOCK", "Clock", "RealClock", "SkippingClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What reads time: ``now()`` (epoch seconds) and ``call_at(when, callback)``."""

    skips: bool
    """True when time may jump ahead (tests): delays the JetStream schedules alone would
    honour (retry backoffs) are also kept in this clock, so they fire when time jumps."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class RealClock:
    """The wall clock; ``call_at`` is the running loop's ``call_later``."""

    skips = False
    now = staticmethod(time.time)

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


REAL_CLOCK: Clock = RealClock()


class _Timer:
    __slots__ = ("callback", "cancelled", "handle", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class SkippingClock:
    """Wall time plus an offset that only grows; its timers fire at their (skipped) time.

    Between skips time runs at the wall clock's pace, so an activity that really runs for
    0.3 s takes 0.3 s of this clock too and its timeouts behave as in production. All the
    timers of one clock must be armed from the same event loop.
    """

    skips = True

    def __init__(self, start: float | None = None) -> None:
        self.offset = 0.0 if start is None else start - time.time()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.skipped = 0.0
        """Seconds skipped so far."""

    def now(self) -> float:
        return time.time() + self.offset

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        self._loop = asyncio.get_running_loop()
        timer = _Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._ids), timer))
        self._schedule(timer)
        return timer

    def _schedule(self, timer: _Timer) -> None:
        assert self._loop is not None
        delay = timer.when - self.now()
        if delay <= 0:
            timer.handle = self._loop.call_soon(self._fire, timer)
        else:
            timer.handle = self._loop.call_later(delay, self._fire, timer)

    def _fire(self, timer: _Timer) -> None:
        if timer.cancelled:
            return
        if timer.when > self.now():  # woken early by the event loop's rounding
            self._schedule(timer)
            return
        timer.cancelled = True
        timer.handle = None
        timer.callback()

    def next_deadline(self) -> float | None:
        """When the earliest armed timer is due (None: none is armed)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance_to(self, when: float) -> None:
        """Jump to ``when`` (if later than now); timers due by then fire in order, soon."""
        ahead = when - self.now()
        if ahead <= 0:
            return
        self.offset += ahead
        self.skipped += ahead
        for _, _, timer in sorted(self._heap):
            if not timer.cancelled:
                if timer.handle is not None:
                    timer.handle.cancel()
                self._schedule(timer)
