"""The worker's cache of live workflow generators, and one lock per run.

A cached run saves the replay of its history on the next workflow task; it is only ever a
shortcut. Each entry is checked against history whenever history is read, and dropped (a full
replay follows) the moment it does not fit.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence

from durablefuture.core import events as ev
from durablefuture.core.commands import Command
from durablefuture.core.replay import WorkflowExecution

__all__ = ["CachedRun", "RunCache"]


class CachedRun:
    """A live generator, the stream sequence it reflects, and events it assumed.

    ``provisional`` holds activity completions this worker fed to the generator before the
    server recorded them (fused reports). Each is checked against the history the next time
    history is read; any difference means the server decided otherwise, and the cache is
    dropped for a full replay.
    """

    __slots__ = ("diverged", "execution", "inflight_at", "inflight_seq", "last_seq", "provisional")

    def __init__(self, execution: WorkflowExecution, last_seq: int) -> None:
        self.execution = execution
        self.last_seq = last_seq
        self.provisional: dict[int, ev.Event] = {}
        self.diverged = False
        self.inflight_seq: int | None = None
        self.inflight_at = 0.0

    def sent(self, commands: Sequence[Command]) -> None:
        """Remember the first command of a report on its way to the server."""
        first = next((c.seq for c in commands if hasattr(c, "seq")), None)
        self.inflight_seq = first
        self.inflight_at = time.monotonic()

    def awaiting_server(self) -> bool:
        """A report of ours is not recorded yet (and not so old that it may have been lost)."""
        seq = self.inflight_seq
        if seq is None:
            return False
        if not self.execution.is_pending(seq) or time.monotonic() - self.inflight_at > 5.0:
            self.inflight_seq = None
            return False
        return True

    def confirm(self, events: Sequence[ev.Event]) -> bool:
        """Check recorded ``events`` against assumed ones; False (for good) if any differs."""
        if self.diverged:
            return False
        if not self.provisional:
            return True
        for e in events:
            assumed = self.provisional.pop(e.event_id, None)
            if assumed is not None and assumed != e:
                self.diverged = True
                return False
        return True

    def unverifiable(self, first_event_id: int) -> bool:
        """Assumed events before ``first_event_id`` cannot be checked against these events."""
        return any(i < first_event_id for i in self.provisional)

    def catch_up(self, events: Sequence[ev.Event]) -> bool:
        """Feed recorded ``events`` the generator has not seen; False if they do not fit."""
        have = self.execution.last_event_id
        if not events or events[0].event_id > have + 1:
            return False
        if self.unverifiable(events[0].event_id):
            # receipts arrive in order: an assumed event not confirmed by now was not recorded
            # as assumed
            self.diverged = True
            return False
        seen = [e for e in events if e.event_id <= have]
        if not self.confirm(seen):
            return False
        new = [e for e in events if e.event_id > have]
        if new:
            try:
                self.execution.feed(new)
            except Exception:
                self.diverged = True
                return False
        return True


class RunCache:
    """Live generators by run id (least recently stored first), at most ``size`` of them;
    the runs seen closed (as many); and a lock per run that the run's handlers share."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._runs: OrderedDict[str, CachedRun] = OrderedDict()
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __getitem__(self, run_id: str) -> CachedRun:
        return self._runs[run_id]

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> CachedRun | None:
        return self._runs.get(run_id)

    def pop(self, run_id: str) -> CachedRun | None:
        return self._runs.pop(run_id, None)

    def keep(self, run_id: str, entry: CachedRun) -> None:
        """Store ``entry`` as the newest; the oldest entries beyond ``size`` are dropped."""
        self._runs[run_id] = entry
        while len(self._runs) > self.size:
            self._runs.popitem(last=False)

    def is_closed(self, run_id: str) -> bool:
        return run_id in self._closed

    def remember_closed(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._closed[run_id] = None
        while len(self._closed) > self.size:
            self._closed.popitem(last=False)

    def lock(self, run_id: str) -> asyncio.Lock:
        lock = self._locks.get(run_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[run_id] = lock
        return lock
