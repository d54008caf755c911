"""An in-memory, single-threaded run of the engine's pure core, for fast workflow unit tests.

``Simulation`` plays the server (``core.orchestration``, through the same effect interpreter as
``df-server``: see ``_sim_server``), the workers (``core.replay`` plus your activity functions,
run for real: see ``_sim_activities``) and the clock, which is simulated: it jumps to the next
timer, retry or timeout whenever nothing else can happen, so a 30-day sleep takes no time.
Nothing touches NATS; use it to unit-test workflow logic in milliseconds, and use
``LocalEnvironment`` (a real nats-server) for integration tests.

Every step is explicit, so a test can choose the order in which pending work happens
(``run(choose=...)``), deliver things twice, or drop the workers' cached generators to force
full replays; the property tests of the engine drive it that way.

Why the server's effects are shared and the rest is not: the meaning of each effect lives in
``core.interpretation`` and both runtimes call it. The server's transport (JetStream appends,
schedules, KV heartbeats) stays in ``server/``; importing it here would pull NATS into the
testing layer, which must run without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Collection, Coroutine, Sequence

from durablefuture.codec.sizes import event_size
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition, name_of
from durablefuture.core.effects import ActivityTask, RunStatus
from durablefuture.core.errors import (
    NonDeterminismError,
    NotRegisteredError,
    UpdateFailedError,
    WorkflowAlreadyStartedError,
    WorkflowError,
)
from durablefuture.core.events import UpdateCompleted
from durablefuture.core.failure import failure_from_exception
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.orchestration import APPLIED
from durablefuture.core.replay import Activation, WorkflowExecution
from durablefuture.outcome import outcome_of
from durablefuture.testing._sim_activities import AttemptRun, run_attempt
from durablefuture.testing._sim_server import SimRun, SimServer, SimulationUnsupportedError

__all__ = ["STARTED_REPORT_AFTER", "SimRun", "Simulation", "SimulationUnsupportedError"]

STARTED_REPORT_AFTER = 1.0
"""A worker reports an attempt as started once it has run this long (``WorkerOptions``'s
default), or at once if the activity has a schedule-to-start or heartbeat timeout."""


class Simulation(SimServer):
    """Run workflows entirely in memory against the real core (see module docstring).

    Args:
        workflows: the workflow functions it runs.
        activities: the activity functions; an attempt runs for real when the simulated worker
            takes its task (async ones on the simulated clock).
        start_time: the simulated clock's first reading (seconds since the epoch).
        cache: keep workflow generators between tasks (False: replay from history each time).
        task_queues: the activity task queues the simulated worker serves (None: all). Tasks on
            other queues stay pending, so their schedule-to-start timeouts can fire.
    """

    def __init__(
        self,
        workflows: Sequence[Callable[..., object]],
        activities: Sequence[Callable[..., object]] = (),
        *,
        namespace: str = "default",
        start_time: float = 1_700_000_000.0,
        cache: bool = True,
        task_queues: Collection[str] | None = None,
    ) -> None:
        super().__init__(namespace=namespace, start_time=start_time)
        self.workflows = {d.name: d for d in map(WorkflowDefinition.from_fn, workflows)}
        self.activities = {d.name: d for d in map(ActivityDefinition.from_fn, activities)}
        self.cache_enabled = cache
        self.task_queues = None if task_queues is None else frozenset(task_queues)
        self._cache: dict[str, WorkflowExecution] = {}
        self.activity_calls: list[tuple[str, int, int]] = []  # (name, seq, attempt)

    # ------------------------------------------------------------------ the client

    def _request(
        self,
        workflow: Callable[..., object] | str,
        args: Sequence[object],
        id: str,
        options: WorkflowOptions | None,
        signal: str | None = None,
        signal_args: Sequence[object] = (),
    ) -> str:
        opts = options or WorkflowOptions()
        request = inp.StartWorkflowRequest(
            workflow_id=id,
            workflow_type=name_of(workflow, "workflow"),
            task_queue=opts.task_queue,
            request_id=opts.request_id or f"req-{id}-{self._ids}",
            args=tuple(self.payloads.to_payload(a, "argument") for a in args),
            execution_timeout=opts.execution_timeout,
            id_reuse_policy=opts.id_reuse_policy,
            signal_name=signal,
            signal_args=tuple(self.payloads.to_payload(a, "signal argument") for a in signal_args),
            search_attributes=opts.search_attributes,
            memo={k: self.payloads.to_payload(v, f"memo {k!r}") for k, v in opts.memo.items()},
        )
        run_id, error = self._start_run(request)
        if error:
            raise WorkflowAlreadyStartedError(error, workflow_id=id, run_id=run_id)
        return run_id

    def start(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str = "wf-1",
        options: WorkflowOptions | None = None,
    ) -> str:
        """Start a workflow; returns its run id (raises like the client for a duplicate id)."""
        return self._request(workflow, args, id, options)

    def signal_with_start(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str,
        signal: str,
        signal_args: Sequence[object] = (),
        options: WorkflowOptions | None = None,
    ) -> str:
        """Signal the running workflow ``id``, or start it with the signal already buffered."""
        self._ids += 1
        return self._request(workflow, args, id, options, signal, signal_args)

    def signal(self, workflow_id: str, name: str, *args: object, request_id: str = "") -> None:
        run = self.runs[self.latest[workflow_id]]
        self._ids += 1
        self.deliver(
            inp.SignalWorkflow(
                run.state.run_id,
                name,
                request_id or f"sig{self._ids}",
                tuple(self.payloads.to_payload(a, "signal argument") for a in args),
            )
        )

    def cancel(self, workflow_id: str, reason: str = "") -> None:
        run = self.runs[self.latest[workflow_id]]
        self._ids += 1
        self.deliver(inp.RequestCancel(run.state.run_id, f"cxl{self._ids}", reason))

    def terminate(self, workflow_id: str, reason: str = "") -> None:
        run = self.runs[self.latest[workflow_id]]
        self._ids += 1
        self.deliver(inp.TerminateWorkflow(run.state.run_id, f"trm{self._ids}", reason))

    def query(
        self, workflow_id: str, name: str, *args: object, result_type: object = None
    ) -> object:
        """Answer query ``name`` from the latest run's state, as a worker does (by replay)."""
        run = self.runs[self.latest[workflow_id]]
        execution = self._new_execution(run.state.started.workflow_type)
        execution.feed(run.events)
        encoded = tuple(self.payloads.to_payload(a, f"query {name!r} argument") for a in args)
        value = execution.query(name, encoded)
        payload = self.payloads.to_payload(value, f"result of query {name!r}")
        return self.payloads.from_payload(payload, result_type)

    def update(self, workflow_id: str, name: str, *args: object, update_id: str = "") -> str:
        """Send update ``name`` to the latest run, as a client does: its validator runs first
        (``df.UpdateFailedError`` if it rejects: nothing is recorded), then it is accepted.
        Returns the update id; run workflow tasks, then read :meth:`update_result`."""
        run = self.runs[self.latest[workflow_id]]
        self._ids += 1
        update_id = update_id or f"upd{self._ids}"
        encoded = tuple(self.payloads.to_payload(a, f"update {name!r} argument") for a in args)
        if update_id not in run.state.updates:
            execution = self._new_execution(run.state.started.workflow_type)
            execution.feed(run.events)
            execution.validate_update(name, encoded)
        self.deliver(inp.AcceptUpdate(run.state.run_id, update_id, name, encoded))
        return update_id

    def update_result(self, workflow_id: str, update_id: str, result_type: object = None) -> object:
        """The result of update ``update_id``; ``df.UpdateFailedError`` if its handler raised.
        ``LookupError`` while it has not completed."""
        done = self.runs[self.latest[workflow_id]].state.updates.get(update_id)
        if not isinstance(done, UpdateCompleted):
            raise LookupError(f"update {update_id!r} of {workflow_id!r} has not completed")
        if done.failure is not None:
            raise UpdateFailedError(f"update {done.name!r} failed: {done.failure.describe()}")
        return self.payloads.from_payload(done.result, result_type)

    def run_of(self, workflow_id: str) -> SimRun:
        return self.runs[self.latest[workflow_id]]

    def result(self, workflow_id: str, *, follow: bool = True) -> object:
        """The result of the latest run (following continue-as-new), or raise its error."""
        run = self.runs[self.latest[workflow_id]]
        while follow and run.state.status == RunStatus.CONTINUED_AS_NEW:
            nxt = run.state.summary().new_run_id
            if nxt is None or nxt not in self.runs:
                break
            run = self.runs[nxt]
        return outcome_of(run.state.summary(), self.payloads)

    def status(self, workflow_id: str) -> str:
        return self.runs[self.latest[workflow_id]].state.status

    def is_closed(self, workflow_id: str) -> bool:
        return self.status(workflow_id) in RunStatus.CLOSED

    # ------------------------------------------------------------------ the workflow worker

    def run_workflow_task(self, index: int = 0) -> str:
        """Run one pending workflow task the way a worker does; returns the server outcome."""
        task = self.workflow_tasks.pop(index)
        run = self.runs[task.run_id]
        execution = self._cache.get(task.run_id) if self.cache_enabled else None
        history = run.events
        try:
            if execution is None or execution.last_event_id > len(history):
                execution = self._new_execution(task.workflow_type)
                activation = execution.feed(history)
            else:
                activation = execution.feed(history[execution.last_event_id :])
        except (NonDeterminismError, NotRegisteredError, WorkflowError) as exc:
            self._cache.pop(task.run_id, None)
            return self.deliver(
                inp.FailWorkflowTask(
                    task.run_id, len(history), failure_from_exception(exc), task.attempt
                )
            )
        while execution.pending_local_activities and not execution.finished:
            activation = self._run_local(execution)
        if self.cache_enabled and not activation.finished:
            self._cache[task.run_id] = execution
        else:
            self._cache.pop(task.run_id, None)
        if not activation.commands:
            return "nothing to record"
        outcome = self.deliver(
            inp.CompleteWorkflowTask(task.run_id, activation.based_on, activation.commands)
        )
        if outcome != APPLIED:
            self._cache.pop(task.run_id, None)  # our view diverged from history: replay next time
        return outcome

    def _run_local(self, execution: WorkflowExecution) -> Activation:
        """A local activity, run once inline (the Simulation does not retry it)."""
        seq, item = execution.pending_local_activities[0]
        fn = item.fn or self.activities[item.name].fn
        definition = ActivityDefinition.from_fn(fn)
        try:
            value = fn(*definition.structure_args(self.payloads, item.args))
            if isinstance(value, Coroutine):  # on a loop of its own, in a thread (real time)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    value = pool.submit(asyncio.run, value).result()
            payload = self.payloads.to_payload(value, f"local activity {item.name!r}")
        except Exception as exc:
            return execution.resolve_local(seq, None, failure_from_exception(exc), 1)
        return execution.resolve_local(seq, payload, None, 1)

    def _new_execution(self, workflow_type: str) -> WorkflowExecution:
        definition = self.workflows.get(workflow_type)
        if definition is None:
            raise NotRegisteredError(
                f"workflow {workflow_type!r} is not registered; registered: "
                f"{sorted(self.workflows)}"
            )
        codec = self.codec
        return WorkflowExecution(definition, self.payloads, size_of=lambda e: event_size(codec, e))

    def forget_caches(self) -> None:
        """Drop every cached generator (a worker crash): next tasks replay from history."""
        self._cache.clear()

    # ------------------------------------------------------------------ the activity worker

    def run_activity_task(self, index: int = 0, *, deliver: bool = True) -> inp.RunInput:
        """The simulated worker takes pending activity task ``index`` now and runs the attempt.

        As a worker does, it reports the attempt started (at once if the activity has a
        schedule-to-start or heartbeat timeout, else once it has run
        ``STARTED_REPORT_AFTER``), and the report is delivered when the attempt ends on the
        simulated clock: at once for an attempt that took no simulated time, else when its
        time comes (timers due earlier fire first). Returns the report. With
        ``deliver=False`` it only runs the attempt and returns its report, delivering nothing.
        """
        task = self.activity_tasks.pop(index)
        if not deliver:
            return self.execute_activity(task)
        started = self.now
        opts = task.options
        report_started = inp.ReportActivityStarted(
            task.run_id, task.seq, task.attempt, "simulation"
        )
        early = opts.schedule_to_start_timeout is not None or opts.heartbeat_timeout is not None
        if early:
            self.deliver(report_started)
        attempt = self._attempt(task, started)
        if attempt.took <= 0:
            self.deliver(attempt.report)
            return attempt.report
        if not early and attempt.took >= STARTED_REPORT_AFTER:
            self._arm(started + STARTED_REPORT_AFTER, task.run_id, "", report_started)
        self._beats[(task.run_id, task.seq, task.attempt)] = (started, attempt.beats)
        self._arm(started + attempt.took, task.run_id, "", attempt.report)
        return attempt.report

    def execute_activity(self, task: ActivityTask) -> inp.RunInput:
        """Run one attempt for real, as a worker does, and return its report (delivering
        nothing, whatever simulated time the attempt took). See ``_sim_activities``."""
        return self._attempt(task, self.now).report

    def _attempt(self, task: ActivityTask, started: float) -> AttemptRun:
        self.activity_calls.append((task.name, task.seq, task.attempt))
        definition = self.activities.get(task.name)
        return run_attempt(task, definition, self.payloads, started, known=list(self.activities))

    # ------------------------------------------------------------------ driving

    def pending(self) -> list[str]:
        """The steps that can happen next: ``wft:i``, ``act:i`` and ``timer`` (the clock moves
        to the next due timer, retry, timeout or activity report)."""
        queues = self.task_queues
        out = [f"wft:{i}" for i in range(len(self.workflow_tasks))]
        out += [
            f"act:{i}"
            for i, t in enumerate(self.activity_tasks)
            if queues is None or t.task_queue in queues
        ]
        if self._timers:
            out.append("timer")
        return out

    def run(
        self, choose: Callable[[list[str]], int] | None = None, *, max_steps: int = 100_000
    ) -> None:
        """Run until nothing is pending. ``choose`` picks the next step (default: FIFO)."""
        for _ in range(max_steps):
            options = self.pending()
            if not options:
                return
            pick = options[choose(options) if choose else 0]
            kind, _, idx = pick.partition(":")
            if kind == "wft":
                self.run_workflow_task(int(idx))
            elif kind == "act":
                self.run_activity_task(int(idx))
            else:
                self.fire_next_timer()
        raise RuntimeError(f"simulation did not settle within {max_steps} steps")
