"""A run's "running" status entry, written only once the run has stayed open a while.

A status entry in the runs bucket is what lists and counts read (``server/visibility.py``,
``client.list_workflows``). Most runs close within tens of milliseconds of their start: a
"running" entry written right after the WorkflowStarted append would be replaced by the
closed one almost at once, one stored message per run for nothing. So the entry is written
``ServerOptions.status_delay`` seconds after the start, and only if the run is still open then;
a run that closes sooner gets one entry, its closed one. Lists are eventually consistent, as in
Temporal's visibility: a new run is listed as running up to that delay late (0: at once, as
before the option).

Nothing that must know whether a run is open reads its status entry: its history answers
(starts and the id reuse policy, signals, cancels, schedules' overlap policies, children and
parents, continue-as-new, ``describe()``, ``df why``, removals). A client waiting for a result
reads the entry and takes a missing one as "not closed yet", waking on the closed notice; a
query reads the run's task queue from its history when there is no entry. An upsert of search
attributes writes the entry while the run is open (``effects._reindex`` creates it if it is
missing), which is as good as this write.

The write is create-only (expected last subject sequence 0): it never replaces a close, an
upsert's entry or a corrupt mark. Before it, the run must still be open: not known closed
here, no entry in the visibility index (a close written by another df-server), and its newest
history batch does not close it (read from the stream: a run removed since has none). A close
seen by this server cancels the pending write.

A df-server that dies with writes pending leaves those runs without an entry, as one that died
right after a start always could (``server/starts.py``). The next df-server to read such a run
from its history (its next input: a worker's report, a timer, a signal) writes the entry, as
the run's cache says nothing of one (``RunCache.status_entry``); at the latest its close writes
the closed entry. A run that has no input until it closes stays unlisted as running meanwhile:
nothing depends on the entry (above), so that is a lag of lists only. A server that shuts
down cleanly writes its pending entries first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from durablefuture.core import events as ev
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.state import RunState
from durablefuture.server.base import ServerBase
from durablefuture.server.runs import RunCache
from durablefuture.transport.publisher import EXPECTED_LAST_SUBJECT_SEQ, WrongLastSequence

__all__ = ["StatusLater"]

log = logging.getLogger("durablefuture.server")

_TRIES = 5
"""Writes of one entry tried (each after ``status_delay``) before this server gives up on it."""


class StatusLater(ServerBase):
    """Writes the "running" status entries of runs that stay open (a part of ``Server``)."""

    def _status_later(self, cache: RunCache, summary: RunSummary) -> None:
        """Write ``summary`` (a running one) as the run's status entry once the run has been
        open ``status_delay`` seconds, unless it has closed by then."""
        cache.status_entry = True
        run_id = summary.run_id
        if run_id in self._status_pending or self._stopping.is_set():
            return
        # the age on the clock the start time was taken from; the wait on the event loop's
        # (a lag of lists, not workflow time: a skipping clock does not skip it)
        age = max(0.0, self.clock.now() - summary.start_time)
        self._status_arm(summary, max(0.0, self.options.status_delay - age), 1)

    def _status_arm(self, summary: RunSummary, delay: float, attempt: int) -> None:
        handle = asyncio.get_running_loop().call_later(delay, self._status_due, summary, attempt)
        self._status_pending[summary.run_id] = (handle, summary)

    def _status_seen(self, cache: RunCache) -> None:
        """A run this server has just handled an input for: one read from its history (not
        started here, or dropped from the cache since) may have lost its pending entry with
        the df-server that started it, so its entry is written (once it is old enough)."""
        if self.options.status_delay > 0 and not cache.status_entry and cache.state.is_open:
            self._status_later(cache, cache.state.summary())

    def _status_closed(self, run_id: str) -> None:
        """The run has closed: its closed entry is written, its running one is not needed."""
        pending = self._status_pending.pop(run_id, None)
        if pending is not None:
            pending[0].cancel()

    def _status_due(self, summary: RunSummary, attempt: int) -> None:
        if self._stopping.is_set():
            return  # left pending: the shutdown writes it (``_status_flush``)
        self._status_pending.pop(summary.run_id, None)
        task = asyncio.create_task(self._status_write(summary, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _status_write(self, summary: RunSummary, attempt: int) -> None:
        """Write the run's running entry if it is still open and has none (a failure is
        tried again later, up to ``_TRIES`` times in all)."""
        wid, run_id = summary.workflow_id, summary.run_id
        key = self.layout.status_key(wid, run_id)
        cache = self._cache.get(run_id)
        try:
            if self.visibility is not None and key in self.visibility.index.runs:
                return  # written already (a close, an upsert, another server)
            if cache is not None and not cache.state.is_open:
                return
            last = await self.history.last_batch(wid, run_id)
            if last is None or (last.events and isinstance(last.events[-1], ev.TERMINAL_EVENTS)):
                return  # closed (by another server), or removed
            body = self.codec.encode_summary(summary)
            subject = f"$KV.{self.layout.runs_bucket}.{key}"
            await (await self.pub.send(subject, body, {EXPECTED_LAST_SUBJECT_SEQ: "0"}))
        except WrongLastSequence:
            return  # an entry is there: a close, or another writer's
        except Exception as exc:
            if attempt >= _TRIES or self._stopping.is_set():
                log.warning("the running status entry of run %s was not written: %s", run_id, exc)
                if cache is not None:
                    cache.status_entry = False  # its next input here tries again
            else:
                log.info("writing the running status entry of run %s failed: %s", run_id, exc)
                if run_id not in self._status_pending:
                    self._status_arm(summary, max(self.options.status_delay, 0.1), attempt + 1)

    async def _status_base(
        self, workflow_id: str, run_id: str, cached: RunCache | None
    ) -> RunSummary | None:
        """What a status entry written over a missing one (a corrupt mark) keeps of the run:
        from its cache, else from its WorkflowStarted (None if that cannot be read either)."""
        if cached is not None:
            return cached.state.summary()
        try:
            head = await self.history.first_batch(workflow_id, run_id)
        except DurableFutureError as exc:  # the start itself is unreadable
            log.debug("the start of run %s cannot be read: %s", run_id, exc)
            return None
        started = head.events[0] if head is not None and head.events else None
        if not isinstance(started, ev.WorkflowStarted):
            return None
        state = RunState(started=started)
        state.apply([started])
        return state.summary()

    async def _status_flush(self, timeout: float) -> None:
        """At a clean shutdown: write the pending entries now (their runs are still open as
        far as this server knows), so none waits for the run's next input elsewhere."""
        pending, self._status_pending = self._status_pending, {}
        if not pending:
            return
        for handle, _ in pending.values():
            handle.cancel()
        summaries = [summary for _, summary in pending.values()]
        limit = asyncio.Semaphore(64)

        async def one(summary: RunSummary) -> None:
            async with limit:
                await self._status_write(summary, _TRIES)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(s) for s in summaries)), timeout)
