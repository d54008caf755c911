"""An asyncio event loop on a simulated clock, for async activities in the Simulation.

``loop.time()`` is simulated: it starts at 0 and moves only when every task on the loop waits
for a timer, and then jumps straight to that timer. So ``await asyncio.sleep(30)`` in an
activity takes 30 simulated seconds and no real time, and ``asyncio.timeout`` /
``asyncio.wait_for`` deadlines fall where they would on a real loop.

Work handed to threads (``asyncio.to_thread``, ``loop.run_in_executor``) takes no simulated
time: while any is running the loop waits for it in real time without moving the clock. A loop
with nothing scheduled, no thread running and a task still waiting would wait forever (the
activity awaits something no one will ever deliver); after a short real grace period (a thread
it does not know of may still wake it) it raises instead, naming that case.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar, TypeVarTuple, Unpack

__all__ = ["StalledActivityError", "VirtualLoop"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


STALL_GRACE = 1.0
"""Real seconds a loop with nothing scheduled waits for a wake-up from an unknown thread."""


class StalledActivityError(RuntimeError):
    """An async activity awaits something that can never happen inside the simulation."""


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        if loop is None or (timeout is not None and timeout <= 0) or loop.threads:
            # something is ready now, or a thread is working: wait for it for real
            return list(super().select(timeout))
        if timeout is None:
            # a thread the loop does not know of may still wake it (call_soon_threadsafe)
            ready = super().select(STALL_GRACE)
            if ready:
                return list(ready)
            raise StalledActivityError(
                "the activity awaits something that never happens in the Simulation (no timer "
                "is scheduled and no thread is running); in a Simulation an async activity may "
                "await asyncio.sleep, asyncio timeouts and threads; test activities that wait "
                "for outside events (network, queues) with LocalEnvironment"
            )
        loop.offset += timeout  # idle until the next timer: jump to it
        return list(super().select(0))


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is simulated (see module docstring)."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.offset = 0.0
        self.threads = 0

    def time(self) -> float:
        return self.offset

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: object) -> None:
        self.threads -= 1

    async def shutdown_default_executor(self, *args: float | None) -> None:
        # joins the executor from a thread of its own, which then wakes the loop
        self.threads += 1
        try:
            await super().shutdown_default_executor(*args)
        finally:
            self.threads -= 1
