"""Receipts: what df-server recorded of this worker's reports, fed to the cached generators.

A report sent with a receipt names the worker's receipt subject (``Df-Receipt``). df-server
sends the batch it appended for it there, or, for a report asked of it with
``Df-Answer-Receipt``, carries the batch in its ``recorded`` answer (one message less per
report: ``transport/report_requests.py``). Either way the worker applies it only once its
report is answered or stored, as every report with a receipt is sent holding the run's lock.
A receipt only moves a cached generator on: one that does not fit (a gap, an event that
differs from what the generator assumed) drops nothing but the shortcut, and a full replay
follows on the next workflow task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from durablefuture.codec.wire import Codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.errors import DecodeError, TransportError
from durablefuture.transport.headers import GRANTED_HEADER, RUN_HEADER, SEQ_HEADER
from durablefuture.transport.messages import Msg
from durablefuture.transport.report_requests import parse_granted, stream_seq
from durablefuture.worker.cache import RunCache
from durablefuture.worker.reports import Reports

__all__ = ["MAX_OFFERED", "Receipt", "Receipts"]

log = logging.getLogger("durablefuture.worker")

MAX_OFFERED = 1024
"""The most runs kept in ``Receipts.offered`` (the oldest dropped first: a grant for one
dropped waits for its check list, as before)."""

Receipt = tuple[int, bytes, tuple[int, ...]]
"""An eager start's receipt: the batch's stream sequence (0: none), the batch, and the
activity seqs whose first attempts are granted to this worker."""


class Receipts:
    """Applies the receipts of one worker's reports to its cache of live generators."""

    def __init__(self, cache: RunCache, codec: Codec, reports: Reports, identity: str) -> None:
        self.cache = cache
        self.codec = codec
        self.reports = reports
        self.identity = identity
        self._tasks: set[asyncio.Task[None]] = set()
        """Receipts waiting for their run's handler, and next parts of large decisions
        waiting to be sent (kept referenced until done)."""
        reports.on_answered = self.on_answered
        self.run_granted: (
            Callable[[ev.WorkflowStarted | None, Sequence[ev.Event], Sequence[int]], None] | None
        ) = None
        """Runs the activity attempts granted to this worker (``eager.py``)."""
        self.expected: dict[str, asyncio.Future[Receipt]] = {}
        """Runs whose eager start's receipt is awaited (``eager_starts``), by run id."""
        self.offered: dict[str, ev.WorkflowStarted] = {}
        """Runs whose report in flight offers activity slots, with their WorkflowStarted
        taken when the report went out (``eager.py``): a grant in the answer is run from it
        even if the run left the cache meanwhile. Each report with a receipt is sent holding
        its run's lock, so a run has one at most; one not answered (stored) is dropped by
        its receipt or replaced by the run's next report, and at most ``MAX_OFFERED`` are
        kept."""

    async def on_receipt(self, msg: Msg) -> None:
        """The server recorded our decisions: feed them to the cached generator (a receipt
        sent apart: for a stored report, or from a server that does not answer with it)."""
        run_id = (msg.headers or {}).get(RUN_HEADER, "")
        if not self.cache.lock(run_id).locked():
            # a stored report's (none of its grants is run), and no report of the run is in
            # flight: each is sent holding the run's lock
            self.offered.pop(run_id, None)
        waiter = self.expected.get(run_id)
        if waiter is not None:  # an eager start's: its taker holds the run's lock and applies it
            if not waiter.done():
                headers = msg.headers or {}
                seq = stream_seq(headers.get(SEQ_HEADER, "")) or 0
                granted = headers.get(GRANTED_HEADER, "")
                # a grant not well formed is not run (its check list has its task stored)
                seqs = (parse_granted(granted.encode()) or ()) if granted else ()
                waiter.set_result((seq, msg.data, seqs))
            return
        if run_id not in self.cache:
            return
        events = await self._receipt_events(msg.data)
        if events is None:
            return
        seq_header = (msg.headers or {}).get(SEQ_HEADER, "")
        seq = stream_seq(seq_header) or 0  # a hostile header: the receipt still applies
        if self.cache.lock(run_id).locked():
            # the run's handler waits for a df-server's answer: apply this when it is done,
            # without holding up the receipts of other runs (one subscription delivers all)
            task = asyncio.create_task(self._apply_receipt(run_id, seq, events))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        await self._apply_receipt(run_id, seq, events)

    async def on_answered(
        self, run_id: str, seq: int, data: bytes, granted: tuple[int, ...] = ()
    ) -> None:
        """The answer to our report carried its receipt. The reporter holds the run's lock:
        applied at once, before whatever waits for the lock (an activity's result to fuse
        with what the code decides next). Never raises: a receipt not applied leaves the
        cached generator behind, and the next task's events or a history read bring it on.
        The attempts of ``granted`` activity seqs are this worker's to run (``eager.py``),
        also when the run left the cache while the report waited (from the WorkflowStarted
        taken when it went out); one not run here has its task stored when its check list
        fires."""
        started = self.offered.pop(run_id, None)
        cached = self.cache.get(run_id)
        if cached is not None and started is None:
            started = cached.execution.started
        if cached is None and not (granted and started is not None):
            return
        events = await self._receipt_events(data)
        if events is not None and granted and self.run_granted is not None:
            self.run_granted(started, events, granted)
            # let the attempts claim their leases before the receipt is fed to the generator
            # (the claims are on the activities' path, the rest of this report is not)
            await asyncio.sleep(0)
        if events is not None and self._catch_up(run_id, seq, events):
            # the next part of a large decision, sent by a task of its own once the lock is
            # free (each answer carries the receipt that sends the next: no recursion)
            task = asyncio.create_task(self._next_part_locked(run_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def offering(self, run_id: str, started: ev.WorkflowStarted | None) -> None:
        """A report for ``run_id`` goes out offering activity slots (``started``), or not
        (None)."""
        self.offered.pop(run_id, None)
        if started is None:
            return
        self.offered[run_id] = started
        while len(self.offered) > MAX_OFFERED:
            del self.offered[next(iter(self.offered))]

    def supersede(self, run_id: str) -> None:
        """A stored workflow task for ``run_id`` arrived: an eager start's generator waiting
        for its receipt is dropped at once (df-server created the run as before)."""
        waiter = self.expected.get(run_id)
        if waiter is not None and not waiter.done():
            waiter.set_result((0, b"", ()))

    async def events_of(self, data: bytes) -> Sequence[ev.Event] | None:
        """A receipt's events (None if they do not decode)."""
        return await self._receipt_events(data)

    async def _receipt_events(self, data: bytes) -> Sequence[ev.Event] | None:
        try:
            _, events = self.codec.decode_batch(data)
            if self.codec.refers(data):
                events = await self.codec.resolve_events(events)
        except (DecodeError, TransportError):
            return None
        return events

    async def _apply_receipt(self, run_id: str, seq: int, events: Sequence[ev.Event]) -> None:
        async with self.cache.lock(run_id):
            if self._catch_up(run_id, seq, events):
                await self._next_part(run_id)

    def _catch_up(self, run_id: str, seq: int, events: Sequence[ev.Event]) -> bool:
        """Feed a receipt's events to the cached generator (the run's lock held); whether
        the next part of a large decision is due."""
        cached = self.cache.get(run_id)
        if cached is None or not cached.catch_up(events):
            return False
        cached.last_seq = max(cached.last_seq, seq)
        if cached.execution.closed:
            self.cache.remember_closed(run_id)
            return False
        if cached.execution.finished:
            return False
        return cached.execution.has_pending_commands and not cached.awaiting_server()

    async def _next_part_locked(self, run_id: str) -> None:
        async with self.cache.lock(run_id):
            await self._next_part(run_id)

    async def _next_part(self, run_id: str) -> None:
        """A large decision goes out in parts: send the next one (the run's lock held)."""
        cached = self.cache.get(run_id)
        if cached is None:
            return
        execution = cached.execution
        if execution.finished or not execution.has_pending_commands or cached.awaiting_server():
            return  # sent meanwhile (a workflow task for the run), or nothing left
        commands, more = self.reports.bounded(execution.activation().commands)
        report = inp.CompleteWorkflowTask(
            run_id, execution.last_event_id, commands, self.identity, more=more
        )
        cached.sent(commands)
        wid = execution.started.workflow_id if execution.started else ""
        try:
            await self.reports.send(wid, report, receipt=True)
        except TransportError as exc:
            # the server dispatches a workflow task for the rest (the last report said
            # "more"); it replays from history and reports what is wrong
            log.debug("next part of run %s not sent: %s", run_id, exc)
            self.cache.pop(run_id)
