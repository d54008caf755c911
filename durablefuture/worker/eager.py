"""Eager activities: the first attempts of the activities this worker's decisions schedule,
run here with no stored activity task (df-server's side: ``server/grants.py``).

A worker that runs both the workflows and the activities of its task queue offers, with each
report asked with its receipt, as many attempts as it has free activity slots (``Df-Eager``).
df-server grants some of the activity attempts the report's decisions schedule, lists them on
a check list, and names them in its answer. The worker runs each granted attempt as a
delivery of its task (``ActivityTasks.take``: run, report, fused with the next decisions),
with a stand-in message where a delivery has one to acknowledge, and with no attempt lease:
no stored task exists, so nobody else is given it. An attempt still running after
``WorkerOptions.eager_claim_after`` claims its lease (its check then finds it alive).

A task is built from the run's WorkflowStarted, taken from the cached generator when the
report goes out (a run not cached then is offered nothing), so a grant answered after the run
left the cache (a full cache keeps another run meanwhile) is still run. A granted attempt this
worker does not run (it is stopping, or dies), or starts and loses before it reports or claims
the lease, is recorded timed out when its check list fires, and retried per its policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from durablefuture.core import events as ev
from durablefuture.core.effects import ActivityTask, first_attempt_tasks
from durablefuture.transport.messages import no_delivery
from durablefuture.transport.report_requests import MAX_GRANTED
from durablefuture.worker.activities import ActivityTasks
from durablefuture.worker.receipts import Receipts
from durablefuture.worker.reports import Reports

__all__ = ["AFTER_GRANT_HOOK", "EagerActivities"]

log = logging.getLogger("durablefuture.worker")

AFTER_GRANT_HOOK = "DF_TEST_AFTER_GRANT"
"""Test hook (environment): ``skip`` leaves granted attempts unrun, ``die`` kills the worker
process (SIGKILL) as soon as an answer grants it one."""

_Key = tuple[str, int, int]


class EagerActivities:
    """Offers free activity slots with reports, and runs the attempts granted."""

    def __init__(
        self, activity_tasks: ActivityTasks, slots: int, tasks: set[asyncio.Task[None]]
    ) -> None:
        self.activity_tasks = activity_tasks
        self.slots = slots
        # delivered and granted attempts share the slots (the consumer's credits alone would
        # let deliveries run beside the granted attempts)
        activity_tasks.slots = asyncio.Semaphore(slots)
        self.tasks = tasks
        """Where each granted attempt's asyncio task is kept (a drain waits for them)."""
        self.stopping = asyncio.Event()
        self.granted: set[_Key] = set()
        """Granted attempts taken and not finished."""
        self.started = 0
        """Granted attempts taken (for tests and measurements)."""

    def attach(self, reports: Reports, receipts: Receipts, stopping: asyncio.Event) -> None:
        """Offer slots with ``reports``; run what the answers ``receipts`` applies grant."""
        self.stopping = stopping
        cache = receipts.cache

        def offer(run_id: str) -> int:
            # a grant is run from the run's WorkflowStarted, taken now from its cached
            # generator (the answer may come after the run left the cache): a run this
            # worker does not cache (a cache of 0) is offered nothing
            cached = cache.get(run_id)
            started = cached.execution.started if cached is not None else None
            n = self.offer() if started is not None else 0
            receipts.offering(run_id, started if n > 0 else None)
            return n

        reports.eager = offer
        receipts.run_granted = self.run

    def offer(self) -> int:
        """How many attempts to offer now (0: none)."""
        if self.stopping.is_set():
            return 0
        return max(0, min(MAX_GRANTED, self.slots - self.activity_tasks.busy))

    def run(
        self, started: ev.WorkflowStarted | None, events: Sequence[ev.Event], seqs: Sequence[int]
    ) -> None:
        """Start the attempts of ``seqs`` (granted: ``events`` schedule them); never raises."""
        if not seqs:
            return
        hook = os.environ.get(AFTER_GRANT_HOOK, "")
        if hook == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if hook == "skip" or started is None or self.stopping.is_set():
            return  # their check list records them timed out (retried per their policy)
        for task in first_attempt_tasks(started, events, set(seqs)):
            key = (task.run_id, task.seq, task.attempt)
            if key in self.granted:
                continue
            # one not registered here fails as a delivered task of it would (no waiting for
            # its check list: ``ActivityTasks`` reports ActivityNotRegisteredError)
            self.granted.add(key)
            self.started += 1
            job = asyncio.create_task(self._take(task, key))
            self.tasks.add(job)
            job.add_done_callback(self.tasks.discard)

    async def _take(self, task: ActivityTask, key: _Key) -> None:
        try:
            await self.activity_tasks.take(task, no_delivery(), granted=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # its check list records it timed out
            log.warning(
                "a granted attempt of activity %s (#%d of run %s) failed here: %s",
                task.name,
                task.seq,
                task.run_id,
                exc,
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
        finally:
            self.granted.discard(key)
