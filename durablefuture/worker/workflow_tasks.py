"""Workflow tasks: decide a run's next commands and report them.

The run's generator is resumed from the worker's cache of live generators when the cache
holds it and the task's events fit on what it has seen, else rebuilt from history by the
pure replayer. The new commands go back to the server as a report (in parts if they are
many), and the task is acked only after that report is stored. The server's receipt of a
report feeds the recorded events to the cached generator, which may send the next part
(``receipts``).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor

from attrs import evolve

from durablefuture import metrics, tracing
from durablefuture.client import Client
from durablefuture.codec.sizes import event_size
from durablefuture.codec.wire import WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition
from durablefuture.core.effects import WorkflowTask
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    MessageRejectedError,
    NonDeterminismError,
    NotRegisteredError,
    TransportError,
    WorkflowError,
)
from durablefuture.core.failure import failure_from_exception
from durablefuture.core.replay import Activation, WorkflowExecution
from durablefuture.transport.consumer import delivery_count
from durablefuture.transport.messages import Msg
from durablefuture.worker.cache import CachedRun, RunCache
from durablefuture.worker.local_activities import run_local_activity
from durablefuture.worker.receipts import Receipts
from durablefuture.worker.reports import Reports, cut

__all__ = ["WorkflowTasks"]

_TASK_MESSAGE: contextvars.ContextVar[Msg | None] = contextvars.ContextVar(
    "durablefuture_workflow_task_message", default=None
)
"""The message of the workflow task being run (kept alive while local activities run)."""

log = logging.getLogger("durablefuture.worker")


_BEFORE_DECISIONS = (ev.WorkflowStarted, ev.SignalReceived, ev.UpdateAccepted, ev.CancelRequested)


def _first_task(m: WorkflowTaskMessage) -> bool:
    """The run's first workflow task: its whole history is in the task, and none of it
    follows from a decision of the workflow code."""
    return (
        m.task.attempt == 1
        and bool(m.events)
        and m.events[0].event_id == 1
        and all(isinstance(e, _BEFORE_DECISIONS) for e in m.events)
    )


class WorkflowTasks:
    """Runs the workflow tasks of one worker (its registered workflows, its run cache)."""

    def __init__(
        self,
        client: Client,
        workflows: Mapping[str, WorkflowDefinition],
        *,
        identity: str,
        task_queue: str,
        cache: RunCache,
        reports: Reports,
        stats: dict[str, int],
        dead_letter: Callable[[Msg, str], Awaitable[None]],
        activities: Mapping[str, ActivityDefinition] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.activities = activities or {}
        """For a local activity given by name."""
        self.executor = executor
        self.client = client
        self.codec = client.codec
        self.workflows = workflows
        self.identity = identity
        self.task_queue = task_queue
        self.cache = cache
        self.reports = reports
        self.stats = stats
        self.dead_letter = dead_letter
        self.receipts = Receipts(cache, self.codec, reports, identity)
        """What the server recorded of this worker's reports, fed to the cached generators."""
        self._last_read: dict[str, tuple[str, ...]] = {}
        """Per run being handled: the input ids of the history batches read for it."""
        self.history_warning = WorkflowExecution.history_warning
        """The namespace's history warning (events, bytes), read when the worker starts."""

    async def handle(self, msg: Msg) -> None:
        try:
            m = self.codec.decode_workflow_task(msg.data)
        except DecodeError as exc:
            await self.dead_letter(msg, str(exc))
            return
        if self.codec.refers(msg.data):  # payloads stored by reference
            m = evolve(m, events=tuple(await self.codec.resolve_events(m.events)))
        self.stats["workflow_tasks"] += 1
        task = m.task
        began = time.perf_counter()
        started = m.events[0] if m.events and isinstance(m.events[0], ev.WorkflowStarted) else None
        cached = self.cache.get(task.run_id)
        parent = (
            started.headers
            if started is not None
            else cached.execution.started.headers
            if cached is not None and cached.execution.started is not None
            else None
        )
        self.receipts.supersede(task.run_id)  # a tentative generator is not waited for
        async with self.cache.lock(task.run_id):
            if self._redundant(m):
                report = None
                why = "redundant"
            else:
                why = "nothing to report"
                with tracing.span(
                    f"RunWorkflow:{task.workflow_type}",
                    parent,
                    {"workflow_id": task.workflow_id, "run_id": task.run_id},
                ):
                    token = _TASK_MESSAGE.set(msg)
                    try:
                        report = await self._run_workflow_task(m)
                    finally:
                        _TASK_MESSAGE.reset(token)
                if report is not None:
                    report = await self._send_workflow_report(m, report, msg)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "workflow task %s run %s trigger %d (delivery %d): %s",
                task.workflow_id,
                task.run_id,
                task.trigger,
                delivery_count(msg),
                why if report is None else f"reported {report.input_id}",
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
        await msg.ack()
        outcome = (
            "idle"
            if report is None
            else "failed"
            if isinstance(report, inp.FailWorkflowTask)
            else "commands"
        )
        metrics.WORKFLOW_TASKS.inc(self.task_queue, outcome)
        metrics.WORKFLOW_TASK_SECONDS.observe(time.perf_counter() - began, self.task_queue)

    async def _send_workflow_report(
        self, m: WorkflowTaskMessage, report: inp.RunInput, msg: Msg
    ) -> inp.RunInput:
        """Send a workflow task's report; returns what was sent. A report NATS would refuse
        (too large) becomes a FailWorkflowTask that says which command, how big, the limit
        and what to do, so the run shows why instead of retrying a report that cannot land."""
        task = m.task
        try:
            await self.reports.send(task.workflow_id, report, receipt=True, keep=msg, task=m)
            return report
        except MessageRejectedError as exc:
            self.cache.pop(task.run_id)  # its generator assumed the report went out
            if isinstance(report, inp.CompleteWorkflowTask):
                failure = self.reports.too_large(report, exc)
                failed = inp.FailWorkflowTask(
                    task.run_id, report.based_on, failure, task.attempt, self.identity
                )
            elif isinstance(report, inp.FailWorkflowTask):
                failed = evolve(report, failure=cut(report.failure))
            else:
                raise
            log.error(
                "workflow task for %s run %s: %s",
                task.workflow_id,
                task.run_id,
                failed.failure.message,
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
            await self.reports.send(task.workflow_id, failed, keep=msg, task=m)
            return failed
        except TransportError:
            # a df-server may have recorded it without finishing its effects: the task comes
            # back, and is replayed and reported again (recorded once), not taken as done
            self.cache.pop(task.run_id)
            raise

    def event_size(self, event: ev.Event) -> int:
        return event_size(self.codec, event)

    def _redundant(self, m: WorkflowTaskMessage) -> bool:
        """A workflow task with nothing new for the cached run (the run is closed, or its
        generator already saw the triggering event and has nothing unsent): ack it at once."""
        task = m.task
        if self.cache.is_closed(task.run_id):
            return True
        cached = self.cache.get(task.run_id)
        if cached is None or cached.diverged or cached.provisional or task.attempt > 1:
            return False
        execution = cached.execution
        if execution.closed:
            return True
        if task.trigger > execution.last_event_id:
            return False
        if execution.finished and not execution.closed:
            return cached.awaiting_server()  # our terminal decision is on its way
        return not execution.has_pending_commands or cached.awaiting_server()

    async def _run_locals(
        self, execution: WorkflowExecution, activation: Activation, msg: Msg | None
    ) -> Activation:
        """Run the local activities the code waits on, handing each outcome back to it."""
        while execution.pending_local_activities and not execution.finished:
            seq, item = execution.pending_local_activities[0]
            key = f"{execution.last_event_id}:{seq}"
            result, failure, attempts = await run_local_activity(
                item,
                self.activities,
                self.codec.payloads,
                executor=self.executor,
                keep_alive=None if msg is None else msg.in_progress,
                key=key,
            )
            activation = execution.resolve_local(seq, result, failure, attempts)
        return activation

    async def _run_workflow_task(self, m: WorkflowTaskMessage) -> inp.RunInput | None:
        task = m.task
        self._last_read.pop(task.run_id, None)  # what an earlier handling left behind
        cached = self.cache.pop(task.run_id)
        execution: WorkflowExecution | None = None
        activation = None
        try:
            if cached is not None:
                execution = cached.execution
                new = self._new_events(cached, m.events)
                if new is None:
                    new = await self._tail(task, cached, m.history_seq)
                if new is not None:
                    try:
                        activation = execution.feed(new)
                        self.stats["cache_hits"] += 1
                        metrics.worker_cache_lookup("hit")
                    except NonDeterminismError:
                        activation = None  # our cached view diverged: replay from history
            if activation is None:
                if cached is None and _first_task(m):
                    # no worker can hold a run nobody has decided on yet: not a lookup
                    metrics.worker_cache_lookup("new")
                else:
                    self.stats["cache_misses"] += 1
                    metrics.worker_cache_lookup("miss")
                execution = None
                execution, activation = await self._replay(task, m)
            if execution is not None and execution.pending_local_activities:
                activation = await self._run_locals(execution, activation, _TASK_MESSAGE.get())
        except (NonDeterminismError, NotRegisteredError, WorkflowError, CorruptHistoryError) as exc:
            self._last_read.pop(task.run_id, None)
            log.error(
                "workflow task for %s run %s failed: %s",
                task.workflow_id,
                task.run_id,
                exc,
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
            # a replay that failed has no execution: the task was based on its trigger event
            # (0 would look stale once the run has commands, and the failure would be dropped)
            based_on = execution.last_event_id if execution is not None else task.trigger
            return inp.FailWorkflowTask(
                task.run_id,
                based_on,
                failure_from_exception(exc),
                task.attempt,
                self.identity,
            )
        if execution is not None and execution.closed:
            self.cache.remember_closed(task.run_id)
        elif execution is not None:
            entry = cached if cached is not None and cached.execution is execution else None
            if entry is None:
                entry = CachedRun(execution, m.history_seq)
            else:
                entry.last_seq = max(entry.last_seq, m.history_seq)
            self.cache.keep(task.run_id, entry)
        last_read = self._last_read.pop(task.run_id, ())
        if not activation.commands:
            redos = self._redos(task, last_read)
            if not redos:
                return None
            await self._send_redos(m, redos[:-1])
            return redos[-1]
        entry = self.cache.get(task.run_id)
        if entry is not None and entry.awaiting_server():
            return None  # our last report is still on its way; its receipt continues from there
        if entry is not None and entry.provisional:
            # The generator has seen an activity result that history does not hold yet (this
            # worker reported it together with what the code decided on it). A report based on
            # it would be rejected; the result's report carries these decisions, and if the
            # server records the result differently a workflow task follows.
            return None
        # the first parts of this task's decision are recorded (the task came back: their
        # effects may never have been done): reported again first, then what follows
        await self._send_redos(m, self._redos(task, last_read))
        commands, more = self.reports.bounded(activation.commands)
        if entry is not None:
            entry.sent(commands)
        return inp.CompleteWorkflowTask(
            task.run_id, activation.based_on, commands, self.identity, more=more
        )

    def _new_events(self, cached: CachedRun, delta: Sequence[ev.Event]) -> list[ev.Event] | None:
        """The part of ``delta`` the cached run has not seen; None on a gap or a mismatch."""
        have = cached.execution.last_event_id
        if not delta:
            return None
        first = delta[0].event_id
        if first > have + 1 or cached.unverifiable(first):
            return None  # read the whole history (and check what we assumed)
        seen = delta[: max(0, have - first + 1)]
        if not cached.confirm(seen):
            return None
        return list(delta[len(seen) :])

    async def _tail(
        self, task: WorkflowTask, cached: CachedRun, through: int
    ) -> list[ev.Event] | None:
        # ``through``: the task was dispatched once history reached it, so the read must too
        batches = await self.client.history.read(
            task.workflow_id, task.run_id, through=through or None
        )
        events = [e for b in batches for e in b.events]
        have = cached.execution.last_event_id
        if len(events) < have or not cached.confirm(events[:have]):
            return None
        if batches:
            cached.last_seq = batches[-1].stream_seq
            self._last_read[task.run_id] = tuple(b.input_id for b in batches)
        return events[have:]

    def _redos(self, task: WorkflowTask, batches: Sequence[str]) -> list[inp.CompleteWorkflowTask]:
        """Reports naming the decisions history already holds for this task, oldest first
        (``batches``: the input ids of the run's history batches, oldest first).

        A df-server may have appended a decision asked of it and then failed at its effects
        (activity tasks, a timer, a status) while the worker that asked was lost before
        storing the report. The task comes back; its replay finds the decision (every batch
        based on the task's trigger or later: a large one is recorded in parts) wherever it
        is, as inputs it did not wait for (a parallel branch's result, a signal) may be
        recorded on top of it. Reported again, each is a duplicate whose effects df-server
        derives again; nothing is appended."""
        out: list[inp.CompleteWorkflowTask] = []
        for i, input_id in enumerate(batches):
            kind, _, based_on = input_id.partition(":")
            if kind == "wtc" and based_on.isdigit() and int(based_on) >= task.trigger:
                self.stats["reports_redone"] = self.stats.get("reports_redone", 0) + 1
                log.info(
                    "workflow task of run %s (trigger %d): decision %s, %d batches before the "
                    "end of history, reported again so its effects are derived again",
                    *(task.run_id, task.trigger, input_id, len(batches) - 1 - i),
                    extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
                )
                out.append(inp.CompleteWorkflowTask(task.run_id, int(based_on), (), self.identity))
        return out

    async def _send_redos(
        self, m: WorkflowTaskMessage, redos: Sequence[inp.CompleteWorkflowTask]
    ) -> None:
        msg = _TASK_MESSAGE.get()
        if msg is not None:
            for redo in redos:
                await self._send_workflow_report(m, redo, msg)

    async def _replay(
        self, task: WorkflowTask, m: WorkflowTaskMessage, tentative: bool = False
    ) -> tuple[WorkflowExecution, Activation]:
        definition = self.workflows.get(task.workflow_type)
        if definition is None:
            raise NotRegisteredError(
                f"workflow type {task.workflow_type!r} is not registered on worker "
                f"{self.identity} (task queue {self.task_queue!r}); registered workflows: "
                f"{sorted(self.workflows)}. Add it to Worker(workflows=[...]) or start it on a "
                "task queue whose workers have it"
            )
        if m.events and m.events[0].event_id == 1:
            events = list(m.events)
        else:
            # read at least as far as the history was when the task was dispatched (a replica
            # that is behind may answer the read): replaying without the trigger event would
            # decide nothing, and the task would be acknowledged with the run left waiting
            batches = await self.client.history.read(
                task.workflow_id, task.run_id, through=m.history_seq or None
            )
            events = [e for b in batches for e in b.events]
            if batches:
                self._last_read[task.run_id] = tuple(b.input_id for b in batches)
        self.stats["replays"] += 1
        began = time.perf_counter()
        execution = WorkflowExecution(definition, self.codec.payloads, size_of=self.event_size)
        execution.history_warning = self.history_warning
        execution.tentative = tentative  # (an eager start's offer: no side effect is run)
        activation = execution.feed(events)
        metrics.REPLAY_SECONDS.observe(time.perf_counter() - began, self.task_queue)
        return execution, activation
