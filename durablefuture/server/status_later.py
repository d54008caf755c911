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

The open check and the create are two steps: a close and a removal of the run between them
(a removal purges the status entry, so the create's guard passes again) would leave a
"running" entry for a run that is gone. So after a create the run's history is read again:
a run closed or removed by then loses the entry just written (a purge up to its sequence, so
a close's entry written after it stays). That check is tried again like a write that failed.

The entries of a burst of starts fall due together, one ``status_delay`` after it: just when
timers as long as the delay fire (W5: 1,000 runs sleeping 1 s, started at once). Each write is
two history reads and a stored message; a thousand at once put a thousand appends and two
thousand reads in front of those firings, on the same disk (the firings of the runs of one
burst came up to seconds late with ``sync_interval: always``). So at most
``base.STATUS_WRITES`` are written at once, the others waiting their turn in order: a lag of
lists of a few hundred milliseconds more in such a burst, and a run that closes while its
entry waits gets none (its closed entry is its only one). No entry waits for its turn more
than ``WRITE_TURN_WAIT`` seconds: then it is written anyway. Eight at once write fewer
entries a second than df-server starts runs, so under a sustained flow of starts of runs that
stay open the entries waiting grew without bound, and lists lagged more and more; past that
wait the writes slow the starts again, as before the limit.

A write that fails (NATS away, no stream leader) is tried again, at growing intervals up to
``_RETRY_CAP`` seconds, for as long as the run is open and the server runs: an outage of any
length delays the entry, it does not lose it. What waits is small (``PendingStatus``: the
encoded entry and the run's ids) and only for runs started within ``status_delay`` (which
``ServerOptions`` caps at ``MAX_STATUS_DELAY``) or during the outage.

A df-server that dies with writes pending leaves those runs without an entry, as one that died
right after a start always could (``server/starts.py``). The next df-server to read such a run
from its history (its next input: a worker's report, a timer, a signal) writes the entry, as
the run's cache says nothing of one (``RunCache.status_entry``), whatever its ``status_delay``
(0 too); at the latest its close writes the closed entry. A run that has no input until it
closes stays unlisted as running meanwhile: nothing depends on the entry (above), so that is a
lag of lists only. A server that shuts down cleanly writes its pending entries first, those of
runs it creates while it drains (starts it had taken) too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from durablefuture.core import events as ev
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.state import RunState
from durablefuture.server.base import PendingStatus, ServerBase
from durablefuture.server.runs import RunCache
from durablefuture.transport.compaction import purge
from durablefuture.transport.history import Batch
from durablefuture.transport.publisher import EXPECTED_LAST_SUBJECT_SEQ, WrongLastSequence

__all__ = ["StatusLater"]

log = logging.getLogger("durablefuture.server")

_RETRY_CAP = 30.0
"""Longest wait, in seconds, between two tries of one entry (each failure doubles the wait)."""
WRITE_TURN_WAIT = 2.0
"""Seconds a running status entry waits at most for its turn (``base.STATUS_WRITES`` at once)
before it is written anyway."""
_WARN_AT = 5
"""Failed tries of one entry before it is logged as a warning (the earlier ones at info)."""


def _closes(last: Batch | None) -> bool:
    """Whether the run whose newest history batch is ``last`` is closed or gone."""
    return last is None or bool(last.events and isinstance(last.events[-1], ev.TERMINAL_EVENTS))


class StatusLater(ServerBase):
    """Writes the "running" status entries of runs that stay open (a part of ``Server``)."""

    def _status_later(self, cache: RunCache, summary: RunSummary) -> None:
        """Write ``summary`` (a running one) as the run's status entry once the run has been
        open ``status_delay`` seconds, unless it has closed by then. While the server stops it
        stays pending: the shutdown writes it (``_status_flush``)."""
        cache.status_entry = True
        if summary.run_id in self._status_pending:
            return
        # the age on the clock the start time was taken from; the wait on the event loop's
        # (a lag of lists, not workflow time: a skipping clock does not skip it)
        age = max(0.0, self.clock.now() - summary.start_time)
        # a copy of its length: the encoder's own result keeps its whole buffer (~4 KB)
        body = bytes(memoryview(self.codec.encode_summary(summary)))
        delay = max(0.0, self.options.status_delay - age)
        self._status_arm(summary.workflow_id, summary.run_id, body, delay, 0)

    def _status_arm(
        self, wid: str, run_id: str, body: bytes, delay: float, tries: int, created: int = 0
    ) -> None:
        handle = asyncio.get_running_loop().call_later(delay, self._status_due, run_id)
        self._status_pending[run_id] = PendingStatus(handle, wid, body, tries, created)

    def _status_seen(self, cache: RunCache) -> None:
        """A run this server has just handled an input for: one read from its history (not
        started here, or dropped from the cache since) may have lost its entry with the
        df-server that was to write it, so its entry is written (once it is old enough)."""
        if not cache.status_entry and cache.state.is_open:
            self._status_later(cache, cache.state.summary())

    def _status_closed(self, run_id: str) -> None:
        """The run has closed: its closed entry is written, its running one is not needed."""
        pending = self._status_pending.pop(run_id, None)
        if pending is not None:
            pending.handle.cancel()

    def _status_due(self, run_id: str) -> None:
        if self._stopping.is_set():
            return  # left pending: the shutdown writes it (``_status_flush``)
        pending = self._status_pending.pop(run_id, None)
        if pending is None:
            return
        task = asyncio.create_task(self._status_write(run_id, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _status_write(self, run_id: str, pending: PendingStatus) -> None:
        """Write the run's running entry if it is still open and has none (a failure is
        tried again later, for as long as the run is open and the server runs), at most
        ``base.STATUS_WRITES`` at once, or after waiting ``WRITE_TURN_WAIT`` for a turn."""
        try:
            async with asyncio.timeout(WRITE_TURN_WAIT):
                await self._status_writes.acquire()
        except TimeoutError:
            # waited long enough: written over the limit (a backlog stays bounded)
            await self._status_write_now(run_id, pending)
            return
        try:
            await self._status_write_now(run_id, pending)
        finally:
            self._status_writes.release()

    async def _status_write_now(self, run_id: str, pending: PendingStatus) -> None:
        wid, created = pending.workflow_id, pending.created
        key = self.layout.status_key(wid, run_id)
        subject = f"$KV.{self.layout.runs_bucket}.{key}"
        cache = self._cache.get(run_id)
        try:
            if not created:
                if self.visibility is not None and key in self.visibility.index.runs:
                    return  # written already (a close, an upsert, another server)
                if cache is not None and not cache.state.is_open:
                    return
                if _closes(await self.history.last_batch(wid, run_id)):
                    return  # closed (by another server), or removed
                headers = {EXPECTED_LAST_SUBJECT_SEQ: "0"}
                created = (await (await self.pub.send(subject, pending.body, headers))).seq
            await self._status_recheck(wid, run_id, subject, created)
        except WrongLastSequence:
            return  # an entry is there: a close, or another writer's
        except Exception as exc:
            tries = pending.tries + 1
            if self._stopping.is_set():
                log.warning("the running status entry of run %s was not written: %s", run_id, exc)
                if cache is not None:
                    cache.status_entry = False  # its next input (elsewhere) tries again
                return
            level = logging.WARNING if tries == _WARN_AT else logging.INFO
            log.log(level, "writing the running status entry of run %s failed: %s", run_id, exc)
            # an entry created is checked again even for a run closed here: the close may
            # have been removed since, and the entry with it, before this one was created
            still = created or cache is None or cache.state.is_open
            if still and run_id not in self._status_pending:
                wait = min(_RETRY_CAP, max(self.options.status_delay, 0.1) * 2 ** (tries - 1))
                self._status_arm(wid, run_id, pending.body, wait, tries, created)

    async def _status_recheck(self, wid: str, run_id: str, subject: str, seq: int) -> None:
        """The entry at ``seq`` has just been created: if the run has closed or been removed
        since it was found open, that entry is purged (only up to ``seq``: a close's entry
        stored after it stays), and a removed run's is dropped from the index as well."""
        last = await self.history.last_batch(wid, run_id)
        if not _closes(last):
            return
        await purge(self.nc, f"KV_{self.layout.runs_bucket}", subject, below_seq=seq + 1)
        if last is not None:
            last = await self.history.last_batch(wid, run_id)  # removed meanwhile?
        if last is None and self.visibility is not None:
            await self.visibility.forget(wid, run_id)
        log.info("purged the running status entry of run %s, closed or removed meanwhile", run_id)

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
        far as this server knows), so none waits for the run's next input elsewhere. Inputs
        still being handled (starts taken before the stop) may add more: those are written
        once they finish, within ``timeout`` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        limit = asyncio.Semaphore(64)

        async def one(run_id: str, pending: PendingStatus) -> None:
            async with limit:
                await self._status_write(run_id, pending)

        while (left := deadline - loop.time()) > 0:
            pending, self._status_pending = self._status_pending, {}
            for entry in pending.values():
                entry.handle.cancel()
            if pending:
                writes = asyncio.gather(*(one(r, p) for r, p in pending.items()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(writes, left)
            elif self._tasks:
                await asyncio.wait(set(self._tasks), timeout=left)
                if not self._status_pending:
                    return
            else:
                return
