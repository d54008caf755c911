"""Time skipping for a local engine: jump to the next timer whenever nothing is happening.

The df-server and the workers share one :class:`~durablefuture.clock.SkippingClock`. A
:class:`TimeSkipper` watches the engine; when no input is being handled, no workflow or
activity task waits in (or is being worked on from) a task queue, and this holds twice a
moment apart, it moves the clock to the earliest armed timer (a sleep, a retry backoff, an
activity or workflow timeout), which fires it. While an activity runs nothing is skipped, so
its start-to-close and heartbeat timeouts pass in real time, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from durablefuture.clock import SkippingClock

__all__ = ["TimeSkipper"]


class TimeSkipper:
    """Skips ``clock`` ahead while ``idle()`` says the engine has nothing to do."""

    def __init__(
        self,
        clock: SkippingClock,
        idle: Callable[[], Awaitable[bool]],
        *,
        poll: float = 0.01,
        idle_timeout: float = 60.0,
    ) -> None:
        self.clock = clock
        self.idle = idle
        self.poll = poll
        self.idle_timeout = idle_timeout
        self.auto = True
        """Skip on its own whenever idle (False: only :meth:`sleep` moves time)."""
        self.skips = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="df-time-skipper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            if not self.auto or self.clock.next_deadline() is None or self._lock.locked():
                continue
            async with self._lock:
                if self.auto and await self._settled():
                    nxt = self.clock.next_deadline()
                    if nxt is not None:
                        self._jump(nxt)

    def _jump(self, when: float) -> None:
        if when > self.clock.now():
            self.skips += 1
        self.clock.advance_to(when)

    async def _settled(self) -> bool:
        """Idle now and still idle a moment later (a message between two parts is seen)."""
        if not await self.idle():
            return False
        await asyncio.sleep(self.poll)
        return await self.idle()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the engine is idle; False if it is still busy after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.idle_timeout if timeout is None else timeout)
        while not await self._settled():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.poll)  # a busy answer may come without a pause
        return True

    async def sleep(self, seconds: float) -> None:
        """Move time ``seconds`` ahead, firing every timer due on the way in order and
        letting the engine settle after each; returns once the engine is idle again (or
        after ``idle_timeout`` of real time if it stays busy, e.g. a long activity)."""
        target = self.clock.now() + seconds
        async with self._lock:
            while True:
                await self.wait_idle()
                nxt = self.clock.next_deadline()
                if nxt is None or nxt > target:
                    self._jump(target)
                    break
                self._jump(nxt)
            await asyncio.sleep(0)
            await self.wait_idle()
