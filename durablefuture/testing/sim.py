"""An in-memory, single-threaded run of the engine's pure core, for fast workflow unit tests.

``Simulation`` plays the server (``core.orchestration``), the workers (``core.replay`` plus your
activity functions, called inline) and the clock (simulated: timers fire instantly, in order).
Nothing touches NATS; use it to unit-test workflow logic in milliseconds, and use
``LocalEnvironment`` (a real nats-server) for integration tests.

Every step is explicit, so a test can choose the order in which pending work happens
(``run(choose=...)``), deliver things twice, or drop the workers' cached generators to force
full replays; the property tests of the engine drive it that way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import heapq
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from attrs import define, evolve, field

from durablefuture.activity_context import (
    ActivityContext,
    ActivityInfo,
    info_for,
    reset_activity_context,
    set_activity_context,
)
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition
from durablefuture.core.effects import (
    ActivityTask,
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    IndexRun,
    NotifyParent,
    RunStatus,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
    WorkflowTask,
)
from durablefuture.core.errors import (
    NonDeterminismError,
    NotRegisteredError,
    WorkflowError,
)
from durablefuture.core.failure import Failure, FailureKind, failure_from_exception
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    LatestRun,
    decide,
    decide_start,
    effects_for,
    start_events,
)
from durablefuture.core.replay import WorkflowExecution
from durablefuture.core.state import RunState
from durablefuture.core.types import JsonValue
from durablefuture.outcome import outcome_of

__all__ = ["SimRun", "Simulation"]


@define
class SimRun:
    """One run inside the simulation: its history batches and server-side state."""

    workflow_id: str
    state: RunState
    batches: list[tuple[str, list[ev.Event]]] = field(factory=list)

    @property
    def events(self) -> list[ev.Event]:
        return [e for _, batch in self.batches for e in batch]


class Simulation:
    """Run workflows entirely in memory against the real core (see module docstring)."""

    def __init__(
        self,
        workflows: Sequence[Callable[..., object]],
        activities: Sequence[Callable[..., object]] = (),
        *,
        namespace: str = "default",
        start_time: float = 1_700_000_000.0,
        cache: bool = True,
    ) -> None:
        self.codec = default_codec()
        self.payloads = self.codec.payloads
        self.workflows = {d.name: d for d in map(WorkflowDefinition.from_fn, workflows)}
        self.activities = {d.name: d for d in map(ActivityDefinition.from_fn, activities)}
        self.namespace = namespace
        self.now = start_time
        self.cache_enabled = cache
        self.runs: dict[str, SimRun] = {}
        self.latest: dict[str, str] = {}  # workflow id -> latest run id
        self.workflow_tasks: list[WorkflowTask] = []
        self.activity_tasks: list[ActivityTask] = []
        self._timers: list[tuple[float, int, str, str, object]] = []  # (at, n, run, key, payload)
        self._timer_n = 0
        self._cache: dict[str, WorkflowExecution] = {}
        self._ids = 0
        self.log: list[str] = []
        self.activity_calls: list[tuple[str, int, int]] = []  # (name, seq, attempt)

    # ------------------------------------------------------------------ ids / clients

    def _new_run_id(self) -> str:
        self._ids += 1
        return f"run{self._ids:04d}"

    def start(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str = "wf-1",
        options: WorkflowOptions | None = None,
    ) -> str:
        """Start a workflow; returns its run id (raises like the client for a duplicate id)."""
        from durablefuture.core.definitions import name_of

        opts = options or WorkflowOptions()
        request = inp.StartWorkflowRequest(
            workflow_id=id,
            workflow_type=name_of(workflow, "workflow"),
            task_queue=opts.task_queue,
            request_id=opts.request_id or f"req-{id}-{self._ids}",
            args=tuple(self.payloads.to_payload(a, "argument") for a in args),
            execution_timeout=opts.execution_timeout,
            id_reuse_policy=opts.id_reuse_policy,
        )
        run_id, error = self._start_run(request)
        if error:
            from durablefuture.core.errors import WorkflowAlreadyStartedError

            raise WorkflowAlreadyStartedError(error, workflow_id=id, run_id=run_id)
        return run_id

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

    # ------------------------------------------------------------------ the server

    def _start_run(self, request: inp.StartWorkflowRequest) -> tuple[str, str]:
        latest_id = self.latest.get(request.workflow_id)
        latest = None
        if latest_id is not None:
            st = self.runs[latest_id].state
            latest = LatestRun.of(st.started, st.status)
        decision = decide_start(request, latest)
        if decision.action == "existing":
            return decision.run_id, ""
        if decision.action == "reject":
            return decision.run_id, decision.message
        if decision.action == "signal":
            self.deliver(
                inp.SignalWorkflow(
                    decision.run_id,
                    request.signal_name or "",
                    f"{request.request_id}:signal",
                    request.signal_args,
                )
            )
            return decision.run_id, ""
        run_id = request.run_id or self._new_run_id()
        events = start_events(request, namespace=self.namespace, run_id=run_id, now=self.now)
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        state = RunState(started=first)
        state.apply(events, "start")
        run = SimRun(request.workflow_id, state, [("start", events)])
        self.runs[run_id] = run
        self.latest[request.workflow_id] = run_id
        self._effects(effects_for(state, events), run_id)
        return run_id, ""

    def deliver(self, message: inp.RunInput) -> str:
        """Hand an input to the server; returns the decision outcome."""
        run = self.runs[message.run_id]
        decision = decide(run.state, message, self.now, new_run_id=self._new_run_id())
        self.log.append(f"{type(message).__name__} {message.input_id}: {decision.outcome}")
        if decision.outcome == APPLIED and decision.events:
            run.state.apply(decision.events, message.input_id)
            run.batches.append((message.input_id, list(decision.events)))
            self._effects(effects_for(run.state, decision.events), message.run_id)
        elif decision.outcome == DUPLICATE and decision.recorded is not None:
            first, last = decision.recorded
            self._effects(effects_for(run.state, run.events[first - 1 : last]), message.run_id)
        self._effects(decision.effects, message.run_id)
        return decision.outcome

    def _effects(self, effects: Sequence[Effect], run_id: str) -> None:
        for e in effects:
            if isinstance(e, DispatchWorkflowTask):
                self.workflow_tasks.append(e.task)
            elif isinstance(e, DispatchActivityTask):
                if e.deliver_at is None or e.deliver_at <= self.now:
                    self.activity_tasks.append(e.task)
                else:
                    self._arm(e.deliver_at, e.task.run_id, "", e.task)
            elif isinstance(e, ArmTimer):
                self._arm(e.fire_at, run_id, e.key, None)
            elif isinstance(e, StartRun):
                _, error = self._start_run(e.request)  # keep run_id: later effects are ours
                parent = e.request.parent
                if error and parent is not None:
                    self.deliver(
                        inp.RecordChildStartFailed(
                            parent.run_id,
                            parent.seq,
                            Failure(error, type="WorkflowAlreadyStartedError"),
                        )
                    )
            elif isinstance(e, NotifyParent):
                if e.started:
                    self.deliver(
                        inp.RecordChildStarted(e.parent.run_id, e.parent.seq, e.child_run_id)
                    )
                else:
                    self.deliver(
                        inp.RecordChildClosed(
                            e.parent.run_id, e.parent.seq, e.child_run_id, e.result, e.failure
                        )
                    )
            elif isinstance(e, CancelChildRun | TerminateChildRun):
                rid = self.latest.get(e.workflow_id)
                if rid is None or not self.runs[rid].state.is_open:
                    continue
                if isinstance(e, CancelChildRun):
                    self.deliver(inp.RequestCancel(rid, e.request_id, e.reason))
                else:
                    self.deliver(inp.TerminateWorkflow(rid, e.request_id, e.reason))
            elif isinstance(e, CancelActivities | UpdateStatus | IndexRun):
                pass

    def _arm(self, at: float, run_id: str, key: str, payload: object) -> None:
        self._timer_n += 1
        heapq.heappush(self._timers, (at, self._timer_n, run_id, key, payload))

    # ------------------------------------------------------------------ the workers

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

    def _new_execution(self, workflow_type: str) -> WorkflowExecution:
        definition = self.workflows.get(workflow_type)
        if definition is None:
            raise NotRegisteredError(
                f"workflow {workflow_type!r} is not registered; registered: "
                f"{sorted(self.workflows)}"
            )
        return WorkflowExecution(
            definition,
            self.payloads,
            size_of=lambda e: len(orjson.dumps(self.codec.encode_event(e))),
        )

    def forget_caches(self) -> None:
        """Drop every cached generator (a worker crash): next tasks replay from history."""
        self._cache.clear()

    def run_activity_task(self, index: int = 0, *, deliver: bool = True) -> inp.RunInput:
        """Run one pending activity task; returns (and by default delivers) its report."""
        task = self.activity_tasks.pop(index)
        report = self.execute_activity(task)
        if deliver:
            self.deliver(report)
        return report

    def execute_activity(self, task: ActivityTask) -> inp.RunInput:
        """Run one attempt for real, as a worker does: ``df.activity_info()`` and
        ``df.heartbeat()`` work, async activities may await (on a loop of their own), and the
        attempt's start-to-close and heartbeat timeouts are enforced in real time."""
        self.activity_calls.append((task.name, task.seq, task.attempt))
        definition = self.activities.get(task.name)
        if definition is None:
            failure = Failure(
                f"activity {task.name!r} is not registered; registered: {sorted(self.activities)}",
                type="ActivityNotRegistered",
            )
            return inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        try:
            args = definition.structure_args(self.payloads, task.args)
        except Exception as exc:
            return inp.FailActivityTask(
                task.run_id, task.seq, task.attempt, failure_from_exception(exc)
            )
        attempt = _Attempt(self, task)
        outcome = attempt.run(definition.fn, args)
        details = attempt.encoded_details()
        if isinstance(outcome, inp.FailActivityTask):
            return evolve(outcome, heartbeat_details=details)
        if isinstance(outcome, BaseException):
            return inp.FailActivityTask(
                task.run_id, task.seq, task.attempt, failure_from_exception(outcome), details
            )
        try:
            result: JsonValue = self.payloads.to_payload(outcome, "activity result")
        except Exception as exc:
            f = failure_from_exception(exc)
            failure = Failure(f.message, type=f.type, non_retryable=True)
            return inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure, details)
        return inp.CompleteActivityTask(task.run_id, task.seq, task.attempt, result)

    # ------------------------------------------------------------------ queries and starts

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
        from durablefuture.core.definitions import name_of

        opts = options or WorkflowOptions()
        self._ids += 1
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
        )
        run_id, error = self._start_run(request)
        if error:
            from durablefuture.core.errors import WorkflowAlreadyStartedError

            raise WorkflowAlreadyStartedError(error, workflow_id=id, run_id=run_id)
        return run_id

    # ------------------------------------------------------------------ time

    def next_timer_at(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def fire_next_timer(self) -> None:
        """Advance the clock to the next timer and fire it."""
        at, _, run_id, key, payload = heapq.heappop(self._timers)
        self.now = max(self.now, at)
        if isinstance(payload, ActivityTask):
            self.activity_tasks.append(payload)
        else:
            self.deliver(inp.FireTimer(run_id, key))

    # ------------------------------------------------------------------ driving

    def pending(self) -> list[str]:
        out = [f"wft:{i}" for i in range(len(self.workflow_tasks))]
        out += [f"act:{i}" for i in range(len(self.activity_tasks))]
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

    def status(self, workflow_id: str) -> str:
        return self.runs[self.latest[workflow_id]].state.status

    def is_closed(self, workflow_id: str) -> bool:
        return self.status(workflow_id) in RunStatus.CLOSED


def _await(coro: Any) -> object:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # called from a running loop (an async test): run it on a loop of its own, in a thread
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sim-activity") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


class _Attempt:
    """One activity attempt, run inline. Its start-to-close and heartbeat timeouts are checked
    against real time when it returns: an attempt that ran too long, or went too long without
    a heartbeat, ends as the worker would have ended it (timed out), whatever it returned. An
    async activity runs on an event loop of its own (in a thread when the simulation itself is
    driven from a running loop)."""

    def __init__(self, sim: Simulation, task: ActivityTask) -> None:
        self.sim = sim
        self.task = task
        self.details: tuple[object, ...] = tuple(task.heartbeat_details)
        self.beat = time.monotonic()
        self.longest_silence = 0.0

    def _on_heartbeat(self, details: tuple[object, ...]) -> None:
        now = time.monotonic()
        self.longest_silence = max(self.longest_silence, now - self.beat)
        self.details = details
        self.beat = now

    def encoded_details(self) -> tuple[JsonValue, ...]:
        try:
            return tuple(self.sim.payloads.to_payload(d, "heartbeat detail") for d in self.details)
        except Exception:
            return tuple(repr(d) for d in self.details)

    def _info(self) -> ActivityInfo:
        return info_for(self.task, self.sim.now)

    def run(self, fn: Callable[..., object], args: Sequence[object]) -> object:
        """The value, the exception raised, or a FailActivityTask for a timeout."""
        context = ActivityContext(self._info(), self._on_heartbeat, lambda: False)
        token = set_activity_context(context)
        began = self.beat = time.monotonic()
        outcome: object
        try:
            outcome = fn(*args)
            if inspect.iscoroutine(outcome):
                outcome = _await(outcome)
        except Exception as exc:
            outcome = exc
        finally:
            reset_activity_context(token)
        ended = time.monotonic()
        silence = max(self.longest_silence, ended - self.beat)
        opts, t = self.task.options, self.task
        limit = opts.start_to_close_timeout
        if limit is not None and ended - began >= limit:
            return self._timeout(
                "start_to_close",
                f"attempt {t.attempt} of activity {t.name!r} did not finish within its "
                f"start_to_close_timeout of {limit:g}s",
            )
        beat = opts.heartbeat_timeout
        if beat is not None and silence >= beat:
            return self._timeout(
                "heartbeat",
                f"attempt {t.attempt} of activity {t.name!r} sent no heartbeat for "
                f"{beat:g}s (its heartbeat_timeout)",
            )
        return outcome

    def _timeout(self, kind: str, message: str) -> inp.FailActivityTask:
        failure = Failure(
            message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=kind
        )
        return inp.FailActivityTask(self.task.run_id, self.task.seq, self.task.attempt, failure)
