"""Activity tasks: each delivery of an activity task becomes at most one run of its attempt.

A delivery of an attempt this process already has (had) waits for that attempt's outcome; one
whose attempt another worker holds is handed over (:mod:`durablefuture.worker.handover`); one
that arrives too late is reported as not run. Otherwise the attempt runs
(:mod:`durablefuture.worker.attempt`) and its outcome is stored before the task is acked. A
result for a run whose generator this worker caches carries the workflow's next decisions too
(fused), which saves the server a workflow task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor

from attrs import evolve

from durablefuture import metrics, tracing
from durablefuture.client import Client
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition
from durablefuture.core.effects import ActivityTask
from durablefuture.core.errors import DecodeError, MessageRejectedError
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.liveness import RunningAttempt
from durablefuture.transport.activity_bucket import ActivityBucket
from durablefuture.transport.guard import max_payload
from durablefuture.transport.headers import FIRST_BATCH_HEADER
from durablefuture.transport.messages import Msg
from durablefuture.worker.attempt import Attempt
from durablefuture.worker.cache import RunCache
from durablefuture.worker.first_batch import first_batch_checked
from durablefuture.worker.handover import AttemptRecord, Handover
from durablefuture.worker.options import MAX_KNOWN_ATTEMPTS, WorkerOptions
from durablefuture.worker.reports import Reports, cut

__all__ = ["ActivityTasks"]

log = logging.getLogger("durablefuture.worker")


class ActivityTasks:
    """Runs the activity tasks of one worker (its registered activities, its thread pool)."""

    def __init__(
        self,
        client: Client,
        activities: Mapping[str, ActivityDefinition],
        *,
        identity: str,
        task_queue: str,
        options: WorkerOptions,
        cache: RunCache,
        reports: Reports,
        handover: Handover,
        executor: Executor,
        running: dict[tuple[str, int, int], RunningAttempt],
        stats: dict[str, int],
        dead_letter: Callable[[Msg, str], Awaitable[None]],
    ) -> None:
        self.client = client
        self.codec = client.codec
        self.activities = activities
        self.identity = identity
        self.task_queue = task_queue
        self.options = options
        self.cache = cache
        self.reports = reports
        self.handover = handover
        self.executor = executor
        self.running = running
        """The attempts running now, for the worker's liveness record."""
        self.stats = stats
        self.dead_letter = dead_letter
        self.bucket: ActivityBucket | None = None
        """The activity bucket (heartbeats, cancel requests), once the worker is bound."""
        self.attempts: OrderedDict[tuple[str, int, int], AttemptRecord] = OrderedDict()
        self.slots: asyncio.Semaphore | None = None
        """Attempts running at once, at most (None: the consumer's credits limit them; set
        when attempts granted to this worker run as well: ``eager.py``)."""
        self.busy = 0
        """Attempts taken and not done (running, or waiting for a slot)."""

    async def handle(self, msg: Msg) -> None:
        try:
            task = self.codec.decode_activity_task(msg.data)
        except DecodeError as exc:
            await self.dead_letter(msg, str(exc))
            return
        if self.codec.refers(msg.data):  # payloads stored by reference
            task = await self.codec.resolve(task, ActivityTask)
        await self.take(task, msg)

    async def take(self, task: ActivityTask, msg: Msg, granted: bool = False) -> None:
        """Run a delivery of ``task`` (``msg``: its message, or a stand-in for an attempt
        ``granted`` to this worker with no stored task: ``worker/eager.py``, run with no
        lease until ``eager_claim_after``)."""
        self.stats["activity_tasks"] += 1
        if (msg.headers or {}).get(FIRST_BATCH_HEADER) and not await first_batch_checked(
            self.cache, self.client.history, task, msg, self.dead_letter
        ):
            return  # its run was never created: dead-lettered, not run
        key = (task.run_id, task.seq, task.attempt)
        if key in self.attempts:
            self.handover.log_again(task, "this worker")
        while (known := self.attempts.get(key)) is not None:
            # This process has (had) the attempt: this is another delivery of its task (nats-server
            # restarted and handed it out again, or an ack never arrived). Never start it twice:
            # wait for the first delivery's outcome, make sure it is stored, then ack.
            if not known.done.is_set():
                if not await self.handover.hold(msg, known.done.wait()):
                    return  # stopping: this delivery is left to its ack wait
                continue
            if known.report is not None and not known.reported:
                await self._store_outcome(task, msg, known.report)
                known.reported = True
            await msg.ack()
            metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
            return
        record = AttemptRecord()
        self.attempts[key] = record
        while len(self.attempts) > MAX_KNOWN_ATTEMPTS:
            oldest, first = next(iter(self.attempts.items()))
            if not first.done.is_set():
                break
            del self.attempts[oldest]
        self.busy += 1
        try:
            if await self._slot(msg):
                try:
                    await self._attempt_task(task, msg, record, granted)
                finally:
                    if self.slots is not None:
                        self.slots.release()
        finally:
            self.busy -= 1
            if record.report is None and not record.reported and self.attempts.get(key) is record:
                del self.attempts[key]  # no outcome: the next delivery starts over
            record.done.set()

    async def _slot(self, msg: Msg) -> bool:
        """Wait for a free slot, keeping ``msg`` in progress; False if the worker stops first
        (the delivery is left to its ack wait, an attempt granted to its check list)."""
        if self.slots is None:
            return True
        if not self.slots.locked():
            await self.slots.acquire()
            return True
        return await self.handover.hold(msg, self.slots.acquire())

    async def _attempt_task(
        self, task: ActivityTask, msg: Msg, record: AttemptRecord, granted: bool
    ) -> None:
        # a granted attempt has no stored task: nobody else is given it (its check list
        # records it timed out if this worker dies before it reports or claims the lease)
        holder = None if granted else await self.handover.claim(task)
        if holder is not None:
            if await self.handover.attempt_closed(task):  # it finished: its outcome is recorded
                self.handover.log_again(task, f"worker {holder.holder}")
                record.reported = True
                await msg.ack()
                metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
                return
            if holder.holder != self.identity:
                self.handover.log_again(task, f"worker {holder.holder}")
                await self.handover.follow(task, msg, record, holder)
                return
            # our own claim, whose acknowledgement was lost (NATS went away): this process
            # knows every attempt it runs (``attempts``), and it runs no such attempt
        stale = await self._not_to_run(task)
        if stale is not None:
            # the report closes the activity if the server has not already done so
            record.report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, stale)
            await self.reports.send(task.workflow_id, record.report, keep=msg)
            record.reported = True
            await msg.ack()
            return
        metrics.SCHEDULE_TO_START_SECONDS.observe(
            max(0.0, self.options.clock.now() - task.attempt_scheduled_at), self.task_queue
        )
        began = time.perf_counter()
        key = (task.run_id, task.seq, task.attempt)
        self.running[key] = RunningAttempt(
            task.workflow_id,
            task.run_id,
            task.seq,
            task.name,
            task.attempt,
            self.options.clock.now(),
        )
        try:
            with tracing.span(
                f"RunActivity:{task.name}",
                task.headers,
                {"workflow_id": task.workflow_id, "activity_id": task.seq, "attempt": task.attempt},
            ):
                report = await self._run_activity(task, msg, granted)
        finally:
            self.running.pop(key, None)
        try:
            if isinstance(report, inp.CompleteActivityTask) and task.run_id in self.cache:
                async with self.cache.lock(task.run_id):
                    report = self._fuse(report)
                    record.report = report
                    await self._store_outcome(task, msg, report, receipt=True)
            else:
                record.report = report
                await self._store_outcome(task, msg, report)
        except MessageRejectedError as exc:
            report = await self._activity_report_rejected(task, report, exc, msg)
            record.report = report
        record.reported = True
        await msg.ack()
        metrics.ACTIVITY_RUN_SECONDS.observe(
            time.perf_counter() - began, self.task_queue, task.name
        )
        if isinstance(report, inp.CompleteActivityTask):
            outcome = "completed"
        elif isinstance(report, inp.FailActivityTask) and report.failure.timeout_type:
            outcome = "timed_out"
        else:
            outcome = "failed"
        metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, outcome)

    async def _activity_report_rejected(
        self, task: ActivityTask, report: inp.RunInput, exc: MessageRejectedError, msg: Msg
    ) -> inp.RunInput:
        """An attempt's report NATS would refuse (too large): report what can be sent instead
        (the result without the fused decisions, else a failure saying why), never loop.

        A result too large is a non-retryable failure: another attempt would run the activity
        (and its side effects) again only to produce as large a result.
        """
        if isinstance(report, inp.CompleteActivityTask) and report.commands:
            self.cache.pop(task.run_id)  # its generator assumed this completion
            report = evolve(report, commands=(), event_id=0, completed_at=None, more=False)
            try:
                await self.reports.send(task.workflow_id, report, keep=msg)
                return report
            except MessageRejectedError as again:
                exc = again
        if isinstance(report, inp.CompleteActivityTask):
            limit = exc.limit or max_payload(self.client.nc)
            failure = Failure(
                message=(
                    f"the result of activity {task.name!r} (attempt {task.attempt}) cannot be "
                    f"reported: it makes a report of {exc.size or 0:,} bytes, and the NATS "
                    f"server accepts at most {limit:,} bytes per message (max_payload). Return "
                    "a reference to large data (store it elsewhere, e.g. in a JetStream object "
                    "store, and return its key), or raise max_payload in the nats-server "
                    "config; not retried, as another attempt would return as much"
                ),
                type="MessageRejectedError",
                non_retryable=True,
            )
            report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        elif isinstance(report, inp.FailActivityTask):
            report = evolve(report, failure=cut(report.failure), heartbeat_details=())
        else:
            raise exc
        log.error(
            "activity %s #%s of run %s: %s",
            task.name,
            task.seq,
            task.run_id,
            report.failure.message,
            extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
        )
        await self.reports.send(task.workflow_id, report, keep=msg)
        return report

    async def _store_outcome(
        self, task: ActivityTask, msg: Msg, report: inp.RunInput, receipt: bool = False
    ) -> None:
        """Store an attempt's outcome, retrying while NATS is away (the result is never
        computed again). Meanwhile the task stays ours and the lease is renewed: other workers
        given a copy of the task wait for this outcome instead of calling the attempt lost."""

        async def renew() -> None:
            await self.handover.renew(task)

        await self.reports.store(
            task.workflow_id,
            report,
            msg,
            what=f"the outcome of attempt {task.attempt} of activity {task.seq}",
            extra={"run_id": task.run_id, "activity_id": task.seq},
            receipt=receipt,
            on_retry=renew,
        )

    async def _not_to_run(self, task: ActivityTask) -> Failure | None:
        """Why an attempt that reached this worker must not start (None: run it).

        A task stays in its queue until a worker takes it, possibly long after the server gave
        up on it; running it then would be an orphaned attempt nobody waits for.
        """
        s2s = task.options.schedule_to_start_timeout
        if s2s is not None and self.options.clock.now() > task.attempt_scheduled_at + s2s:
            return Failure(
                message=(
                    f"attempt {task.attempt} of activity {task.name!r} reached a worker after "
                    f"its schedule_to_start_timeout of {s2s:g}s; not run"
                ),
                type="TimeoutError",
                kind=FailureKind.TIMEOUT,
                timeout_type="schedule_to_start",
            )
        if task.attempt > 1 and self.bucket is not None:
            # a retry that fell due after its run closed or was asked to cancel
            try:
                if not await self.bucket.cancel_requested(task.run_id, task.seq):
                    return None
            except Exception:  # cannot tell: run it
                return None
            return Failure(
                message=(
                    f"attempt {task.attempt} of activity {task.name!r} was not run: the "
                    "workflow no longer wants its result"
                ),
                type="CancelledError",
                kind=FailureKind.CANCELLED,
            )
        return None

    def _fuse(self, report: inp.CompleteActivityTask) -> inp.CompleteActivityTask:
        """Let the cached generator see this result now and report what it decides with it.

        Saves the server a round trip through a workflow task. The server records the result
        and the decisions together only if its history is where this worker saw it.
        """
        cached = self.cache.get(report.run_id)
        if cached is None or cached.execution.finished or cached.diverged:
            return report
        if cached.execution.has_pending_commands:
            # earlier decisions are not confirmed yet: let a workflow task carry on from history
            return report
        execution = cached.execution
        event_id = execution.last_event_id + 1
        at = self.options.clock.now()
        assumed = ev.ActivityCompleted(
            event_id=event_id,
            at=at,
            seq=report.seq,
            attempt=report.attempt,
            result=report.result,
        )
        try:
            activation = execution.feed([assumed])
        except Exception as exc:  # the cached view is off: replay on the next workflow task
            log.debug("not fusing the result of activity %s: %s", report.seq, exc)
            self.cache.pop(report.run_id)
            return report
        if execution.pending_local_activities:
            # a local activity runs in a workflow task (with the task's message kept alive):
            # drop this view, the workflow task that follows the result replays from history
            self.cache.pop(report.run_id)
            return report
        cached.provisional[event_id] = assumed
        commands, more = self.reports.bounded(activation.commands)
        if commands:
            cached.sent(commands)
        return evolve(report, commands=commands, event_id=event_id, completed_at=at, more=more)

    async def _run_activity(self, task: ActivityTask, msg: Msg, granted: bool) -> inp.RunInput:
        definition = self.activities.get(task.name)
        if definition is None:
            failure = Failure(
                message=(
                    f"activity {task.name!r} is not registered on worker {self.identity} "
                    f"(task queue {self.task_queue!r}); registered activities: "
                    f"{sorted(self.activities)}"
                ),
                type="ActivityNotRegisteredError",
            )
            return inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        return await Attempt(
            task,
            definition,
            msg,
            payloads=self.codec.payloads,
            seal=self.codec.pack_payloads,
            reports=self.reports,
            handover=self.handover,
            bucket=self.bucket,
            executor=self.executor,
            identity=self.identity,
            options=self.options,
            claim_after=self.options.eager_claim_after if granted else None,
        ).run()
