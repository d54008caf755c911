"""Handover: one activity attempt, at most one worker running it.

Before running an attempt a worker claims it (a create-only lease entry in the activity bucket)
and renews the lease while the attempt runs. A worker given a copy of a task whose attempt
another worker holds never starts it: it keeps its delivery while the holder renews the lease,
and once the renewals stop either acks (history holds the attempt's outcome, reported again
so that its effects are derived again, see ``Handover.attempt_closed``) or reports the attempt
timed out, lost with its worker (the server retries it per policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from durablefuture import metrics
from durablefuture.client import Client
from durablefuture.core import inputs as inp
from durablefuture.core.effects import ActivityTask
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.state import RunState
from durablefuture.transport.leases import AttemptLease, AttemptLeases
from durablefuture.transport.messages import Msg
from durablefuture.worker.options import WorkerOptions
from durablefuture.worker.reports import Reports

__all__ = ["AttemptRecord", "Handover"]

log = logging.getLogger("durablefuture.worker")


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a future nobody awaits (a lost lease renewal is tolerated)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a lease renewal failed: %s", future.exception())


class AttemptRecord:
    """What this process knows of one activity attempt it took a delivery of.

    While ``done`` is not set a handler is on it (running it, or waiting for the worker that
    holds its lease). Then ``report`` is its outcome, ``reported`` once that is stored (or
    nothing needs reporting). Another delivery of the same attempt waits for ``done`` and
    never starts the attempt again.
    """

    __slots__ = ("done", "report", "reported")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.report: inp.RunInput | None = None
        self.reported = False


class Handover:
    """Claims, renews and watches the leases of one worker's activity attempts."""

    def __init__(
        self,
        client: Client,
        leases: AttemptLeases | None,
        *,
        identity: str,
        task_queue: str,
        options: WorkerOptions,
        reports: Reports,
        stopping: asyncio.Event,
    ) -> None:
        self.client = client
        self.leases = leases
        self.identity = identity
        self.task_queue = task_queue
        self.options = options
        self.reports = reports
        self.stopping = stopping

    def log_again(self, task: ActivityTask, holder: str) -> None:
        log.info(
            "attempt %d of activity %s (#%d of run %s) was delivered again; %s has it, so it is "
            "not run again",
            task.attempt,
            task.name,
            task.seq,
            task.run_id,
            holder,
            extra={
                "workflow_id": task.workflow_id,
                "run_id": task.run_id,
                "activity_id": task.seq,
                "attempt": task.attempt,
            },
        )

    async def claim(self, task: ActivityTask) -> AttemptLease | None:
        """Take the attempt's lease: None if this worker runs it, else who holds it."""
        if self.leases is None:
            return None
        return await self.leases.claim(
            task.run_id,
            task.seq,
            task.attempt,
            self.identity,
            self.options.activity_lease,
            time.time(),
        )

    async def renew(self, task: ActivityTask) -> None:
        """A sign of life of a running attempt for other workers, without waiting for the
        store (best effort: a lost renewal is followed by the next one)."""
        if self.leases is None:
            return
        try:
            ack = await self.leases.renew(
                task.run_id,
                task.seq,
                task.attempt,
                self.identity,
                self.options.activity_lease,
                time.time(),
            )
        except Exception as exc:
            log.debug("could not renew the lease of activity %s: %s", task.seq, exc)
            return
        ack.add_done_callback(_consume)

    async def attempt_closed(self, task: ActivityTask) -> bool:
        """Whether history holds the attempt's outcome (or the run is over).

        When history holds the outcome's own batch, it is reported again (the same input id)
        while the run is open, or when that batch closed it: a df-server may have appended
        it, asked by a worker lost before it stored the report, and failed at its effects
        (the next attempt or activity task, a timer, the close's status). df-server takes it
        as a duplicate and derives the batch's effects again; nothing is appended, whatever
        the report carries. That batch need not be the run's newest: other inputs (the result
        of a parallel branch, a signal, a timer) are recorded on top of it while the task
        waits for its redelivery, and none of them implies what it did."""
        batches = await self.client.history.read(task.workflow_id, task.run_id)
        if not batches:
            return True  # no such run (any more)
        state = RunState.from_history([(b.input_id, b.events) for b in batches])
        act = state.activities.get(task.seq)
        closed = not state.is_open or act is None or act.closed or act.attempt > task.attempt
        redo = inp.CompleteActivityTask(task.run_id, task.seq, task.attempt)
        at = [i for i, b in enumerate(batches) if b.input_id == redo.input_id]
        if closed and at and (at[-1] == len(batches) - 1 or state.is_open):
            log.info(
                "attempt %d of activity %s (#%d of run %s): its outcome is recorded (%d batches "
                "after it); reporting it again so its effects are derived again",
                task.attempt,
                task.name,
                task.seq,
                task.run_id,
                len(batches) - 1 - at[-1],
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
            await self.reports.send(task.workflow_id, redo)
        return closed

    async def hold(self, msg: Msg, waiting: Awaitable[object]) -> bool:
        """Await ``waiting`` while keeping ``msg`` from being redelivered; False (and
        ``waiting`` abandoned) if the worker stops first."""
        job = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self.stopping.wait())
        every = max(0.05, self.options.activity_lease / 3)
        try:
            while True:
                done, _ = await asyncio.wait(
                    {job, stop}, timeout=every, return_when=asyncio.FIRST_COMPLETED
                )
                if job in done:
                    job.result()
                    return True
                if stop in done:
                    return False
                with contextlib.suppress(Exception):
                    await msg.in_progress()
        finally:
            job.cancel()
            stop.cancel()

    async def follow(
        self, task: ActivityTask, msg: Msg, record: AttemptRecord, lease: AttemptLease
    ) -> None:
        """Another worker holds this attempt: never start it here.

        Keep this delivery while the holder renews the lease. Once it stops, the attempt
        finished (history holds its outcome: just ack) or the holder is gone (report the
        attempt timed out, as lost with its worker; the server retries it per policy).
        """
        leases = self.leases
        assert leases is not None
        poll = max(0.05, min(1.0, self.options.activity_lease / 4))
        # A live holder rewrites the lease every quarter of it. An entry whose last write is
        # older than the lease belongs to a holder that stopped, but another host's clock is
        # trusted only so far: we watch for at least 3/4 of the lease ourselves.
        window = max(0.75 * lease.lease, lease.lease - max(0.0, time.time() - lease.at))
        since = time.monotonic()
        current: AttemptLease | None = lease
        while current is not None and time.monotonic() - since < window:
            if not await self.hold(msg, asyncio.sleep(poll)):
                return  # stopping: this delivery is left to its ack wait
            latest = await leases.read(task.run_id, task.seq, task.attempt)
            if latest is not None and latest.revision != current.revision:
                since, window = time.monotonic(), latest.lease  # renewed: alive
            elif await self.attempt_closed(task):
                record.reported = True  # by the holder
                await msg.ack()
                metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
                return
            current = latest
        if await self.attempt_closed(task):
            record.reported = True
            await msg.ack()
            metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
            return
        failure = Failure(
            message=(
                f"attempt {task.attempt} of activity {task.name!r} was handed to another "
                f"worker after its worker stopped responding for {lease.lease:g}s (crashed or "
                "disconnected)"
            ),
            type="TimeoutError",
            kind=FailureKind.TIMEOUT,
            timeout_type="start_to_close",
        )
        record.report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        # if the holder's report is stored but not yet recorded, this one is ignored as late
        await self.reports.send(task.workflow_id, record.report)
        record.reported = True
        await msg.ack()
        metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "lost")
