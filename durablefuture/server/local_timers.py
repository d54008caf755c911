"""The local fast path of a df-server's durable timers: one heap, one event-loop timer.

Every durable timer the server arms (a sleep, a timeout, a retry backoff) is stored as a
JetStream message schedule, the truth that survives a crash; the server also keeps it here so
it fires on time from memory (``Effects._arm``). Tens of thousands of runs asleep at once each
have one armed, so an armed timer is one small slotted entry in a heap and in a by-run map,
not an event-loop timer of its own with a closure and a copy of the arming request's context
(about 1 KB each, and a request's context can hold its answer's batch). The loop timer is
armed for the earliest entry only, in an empty context: a timer fires as its own work, not as
part of the request that happened to arm it. A cancelled or re-armed entry stays in the heap,
marked dead, until it comes up or the dead outnumber the live (then the heap is rebuilt).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
from collections.abc import Callable

from durablefuture.clock import Clock, TimerHandle

__all__ = ["EARLY", "LocalTimers"]

EARLY = 0.001
"""Seconds before its time an entry still counts as due (the event loop's timers have a
resolution of a millisecond and may wake that much early)."""


class _Due:
    """One armed timer (``run_id`` empty once it is cancelled or fired)."""

    __slots__ = ("key", "n", "run_id", "when", "workflow_id")

    def __init__(self, when: float, n: int, run_id: str, key: str, workflow_id: str) -> None:
        self.when = when
        self.n = n
        self.run_id = run_id
        self.key = key
        self.workflow_id = workflow_id

    def __lt__(self, other: _Due) -> bool:
        return (self.when, self.n) < (other.when, other.n)


class LocalTimers:
    """Timers kept in memory by run and timer key; ``fire(workflow_id, run_id, key)`` is
    called once for each that comes due before it is cancelled or armed again."""

    def __init__(self, clock: Clock, fire: Callable[[str, str, str], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._heap: list[_Due] = []
        self._runs: dict[str, tuple[_Due, ...]] = {}
        self._live = 0
        self._ids = itertools.count()
        self._handle: TimerHandle | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        return self._live

    def arm(self, workflow_id: str, run_id: str, key: str, when: float) -> None:
        """Fire ``key`` of ``run_id`` at ``when`` (instead of when it was armed before)."""
        self.cancel(run_id, key)
        due = _Due(when, next(self._ids), run_id, key, workflow_id)
        self._runs[run_id] = (*self._runs.get(run_id, ()), due)
        self._live += 1
        heapq.heappush(self._heap, due)
        if self._handle is None or when < self._armed_at:
            self._wake_at(when)

    def cancel(self, run_id: str, key: str) -> None:
        dues = self._runs.get(run_id)
        if dues is None:
            return
        left = tuple(d for d in dues if d.key != key)
        if len(left) == len(dues):
            return
        for d in dues:
            if d.key == key:
                self._kill(d)
        self._keep(run_id, left)
        self._compact()

    def cancel_run(self, run_id: str) -> None:
        """Forget every timer of ``run_id`` (it closed)."""
        for d in self._runs.pop(run_id, ()):
            self._kill(d)
        self._compact()

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        self._runs.clear()
        self._live = 0

    def _keep(self, run_id: str, dues: tuple[_Due, ...]) -> None:
        if dues:
            self._runs[run_id] = dues
        else:
            del self._runs[run_id]

    def _kill(self, due: _Due) -> None:
        due.run_id = ""
        self._live -= 1

    def _compact(self) -> None:
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [d for d in self._heap if d.run_id]
            heapq.heapify(self._heap)

    def _wake_at(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        # armed in an empty context: the loop timer keeps a copy of the context it is armed
        # in, and whatever request armed the earliest entry is none of the timers' business
        self._handle = contextvars.Context().run(self._clock.call_at, when, self._due)

    def _due(self) -> None:
        self._handle = None
        now = self._clock.now() + EARLY
        try:
            while self._heap and (self._heap[0].when <= now or not self._heap[0].run_id):
                due = heapq.heappop(self._heap)
                run_id = due.run_id
                if not run_id:
                    continue
                self._kill(due)
                self._keep(run_id, tuple(d for d in self._runs[run_id] if d is not due))
                self._fire(due.workflow_id, run_id, due.key)
        finally:
            self._rewake()

    def _rewake(self) -> None:
        """Wake for the earliest entry left (unless ``fire`` armed one as early)."""
        heap = self._heap
        if heap and (self._handle is None or heap[0].when < self._armed_at):
            self._wake_at(heap[0].when)
