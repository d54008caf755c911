"""The run cache: each run's folded state and events, kept while memory allows.

A cached run is only a shortcut: before a decision that matters it is checked against the
stream (an append conflict or a newer sequence refreshes it), and a miss reads the history.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from attrs import define, field

from durablefuture import metrics
from durablefuture.core import events as ev
from durablefuture.core.errors import CorruptHistoryError, DurableFutureError
from durablefuture.core.state import RunState
from durablefuture.server.base import ServerBase
from durablefuture.transport.history import Batch, fold

__all__ = ["RunCache", "RunCaches", "RunMissing", "new_run_id"]


def new_run_id() -> str:
    return uuid.uuid4().hex


@define
class RunCache:
    workflow_id: str
    state: RunState
    events: list[ev.Event]
    last_seq: int
    first_seq: int  # stream sequence of the run's first batch (its start)
    lock: asyncio.Lock = field(factory=asyncio.Lock)
    wft_sent_upto: int = 0
    history_bytes: int = 0
    """Bytes of the run's stored history messages (for the namespace's history limits)."""
    history_warned: bool = False
    sticky: str = ""  # sticky token of the worker holding the run's generator ("": none known)
    status_entry: bool = False
    """This server has had the run's "running" status entry written, or has a write of it
    pending (``server/status_later.py``); False for a run read from history, whose entry
    may have been lost with the df-server that was to write it."""
    timers: bool = False
    """Durable timers of the run may be stored: this server armed one, or it cannot tell (a run
    read from history, or moved on by another server). False only for a run this server
    started and has armed none for: its spent timers and its close need no purge request
    (a timer left behind would only fire, be ignored and be compacted)."""

    def apply(self, seq: int, input_id: str, events: Sequence[ev.Event], size: int = 0) -> None:
        self.state.apply(list(events), input_id)
        self.events.extend(events)
        self.last_seq = seq
        self.history_bytes += size


class RunMissing(DurableFutureError):
    pass


class RunCaches(ServerBase):
    """Finding, loading and refreshing runs in the server's cache (least recently used first
    out, never one whose lock is held)."""

    def _cached(self, run_id: str) -> RunCache | None:
        cache = self._cache.get(run_id)
        if cache is not None:
            self._cache.move_to_end(run_id)
        return cache

    def _remember(self, run_id: str, cache: RunCache) -> None:
        self._cache[run_id] = cache
        self._cache.move_to_end(run_id)
        while len(self._cache) > self.options.cache_size:
            oldest_id, oldest = next(iter(self._cache.items()))
            if oldest.lock.locked():
                break
            del self._cache[oldest_id]

    async def _load(self, workflow_id: str, run_id: str) -> RunCache:
        cache = self._cached(run_id)
        if cache is not None:
            self.stats["cache_hits"] += 1
            metrics.CACHE_LOOKUPS.inc("server", "hit")
            return cache
        self.stats["cache_misses"] += 1
        metrics.CACHE_LOOKUPS.inc("server", "miss")
        batches = await self.history.read(workflow_id, run_id)
        if not batches:
            raise RunMissing(f"no history for workflow {workflow_id!r} run {run_id}")
        cache = self._from_batches(workflow_id, run_id, batches)
        existing = self._cache.get(run_id)
        if existing is not None:  # loaded concurrently
            return existing
        self._remember(run_id, cache)
        return cache

    def _from_batches(self, workflow_id: str, run_id: str, batches: list[Batch]) -> RunCache:
        state = fold(workflow_id, run_id, batches)
        events = [e for b in batches for e in b.events]
        cache = RunCache(workflow_id, state, events, batches[-1].stream_seq, batches[0].stream_seq)
        cache.history_bytes = sum(b.size for b in batches)
        cache.timers = True  # armed by whoever recorded these batches, perhaps
        return cache

    async def _refresh(self, cache: RunCache) -> bool:
        """Read batches appended by others; returns True if there were any."""
        run_id = cache.state.run_id
        try:
            batches = await self.history.read(cache.workflow_id, run_id, cache.last_seq)
            fold(cache.workflow_id, run_id, batches, cache.state)
        except CorruptHistoryError:
            self._cache.pop(run_id, None)  # partly folded: never use it again
            raise
        if batches:
            cache.timers = True  # another server moved the run on, and may have armed some
        for b in batches:
            cache.events.extend(b.events)
            cache.last_seq = b.stream_seq
            cache.history_bytes += b.size
        return bool(batches)
