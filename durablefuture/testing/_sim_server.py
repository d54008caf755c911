"""The server half of the Simulation: runs, decisions, effects and the simulated clock.

It plays ``df-server`` in memory: each input goes through the core's ``decide`` and is folded
into the run's state, and each effect is carried out through the interpreter the real server
uses (``core.interpretation``), with a handler that acts in memory: tasks go to the pending
lists, timers to one heap ordered by simulated time. The heap also holds what is due later on
that clock: activity tasks waiting for their retry backoff, and the reports of activity attempts
that take simulated time (see ``_sim_activities``).

What the simulation cannot carry out raises :class:`SimulationUnsupportedError`, naming it and
pointing at ``LocalEnvironment`` (the real daemons). Cancellation requests to running activities
(``CancelActivities``) have nothing to act on here (activities run to their end when started),
and a run's status is read from its state (``UpdateStatus`` only drops a closed run's timers).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from attrs import define, evolve, field

from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import (
    ActivityTask,
    ArmTimer,
    CancelActivities,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    IndexRun,
    RunStatus,
    StartRun,
    UpdateStatus,
    WorkflowTask,
)
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.failure import Failure
from durablefuture.core.interpretation import RunMessage, interpret
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    LatestRun,
    decide,
    decide_start,
    effects_again,
    effects_for,
    start_events,
)
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey, TimerKind
from durablefuture.testing._sim_activities import Beat

__all__ = ["SimRun", "SimServer", "SimulationUnsupportedError"]


class SimulationUnsupportedError(DurableFutureError, NotImplementedError):
    """The workflow asked for something the in-memory Simulation does not carry out.

    The message names it; run such a test with ``df.testing.LocalEnvironment`` (the real
    server and workers on an embedded nats-server), which supports everything.
    """


@define
class SimRun:
    """One run inside the simulation: its history batches and server-side state."""

    workflow_id: str
    state: RunState
    batches: list[tuple[str, list[ev.Event]]] = field(factory=list)

    @property
    def events(self) -> list[ev.Event]:
        return [e for _, batch in self.batches for e in batch]


_Due = ActivityTask | inp.RunInput | None
"""What a heap entry does when due: dispatch a task, deliver an input, or fire the timer."""


class SimServer:
    """Runs, the server's decisions and their effects, and the simulated clock."""

    def __init__(self, *, namespace: str, start_time: float) -> None:
        self.codec = default_codec()
        self.payloads = self.codec.payloads
        self.namespace = namespace
        self.now = start_time
        self.runs: dict[str, SimRun] = {}
        self.latest: dict[str, str] = {}  # workflow id -> latest run id
        self.workflow_tasks: list[WorkflowTask] = []
        self.activity_tasks: list[ActivityTask] = []
        self._timers: list[tuple[float, int, str, str, _Due]] = []  # (at, n, run, key, due)
        self._timer_n = 0
        self._ids = 0
        self._beats: dict[tuple[str, int, int], tuple[float, list[Beat]]] = {}
        self.log: list[str] = []

    def _new_run_id(self) -> str:
        self._ids += 1
        return f"run{self._ids:04d}"

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
            self._effects(effects_again(run.state, run.events, first, last), message.run_id)
        self._effects(decision.effects, message.run_id)
        return decision.outcome

    def _effects(self, effects: Sequence[Effect], run_id: str) -> None:
        handler = _InMemory(self, run_id)
        for e in effects:
            interpret(e, handler)

    def _arm(self, at: float, run_id: str, key: str, due: _Due) -> None:
        self._timer_n += 1
        heapq.heappush(self._timers, (at, self._timer_n, run_id, key, due))

    # ------------------------------------------------------------------ time

    def next_timer_at(self) -> float | None:
        """When the next timer (or report, or delayed task) is due, in simulated time."""
        return self._timers[0][0] if self._timers else None

    def fire_next_timer(self) -> None:
        """Advance the clock to the next timer and fire it (or deliver what is due then)."""
        at, _, run_id, key, due = heapq.heappop(self._timers)
        self.now = max(self.now, at)
        if isinstance(due, ActivityTask):
            self.activity_tasks.append(due)
        elif due is not None:
            self.deliver(due)
            if isinstance(due, inp.CompleteActivityTask | inp.FailActivityTask):
                self._beats.pop((due.run_id, due.seq, due.attempt), None)
        else:
            self.deliver(self._with_heartbeat(inp.FireTimer(run_id, key)))

    def _with_heartbeat(self, fire: inp.FireTimer) -> inp.FireTimer:
        """A heartbeat timer carries the attempt's last heartbeat so far (as the server adds
        it from the heartbeat bucket)."""
        key = TimerKey.parse(fire.key)
        if key is None or key.kind is not TimerKind.HEARTBEAT:
            return fire
        started, beats = self._beats.get((fire.run_id, key.seq, key.attempt), (0.0, []))
        sent = [(started + offset, details) for offset, details in beats]
        sent = [b for b in sent if b[0] <= self.now]
        if not sent:
            return fire
        at, details = sent[-1]
        return evolve(fire, heartbeat_at=at, heartbeat_details=details)


class _InMemory:
    """The Simulation's handler of effects (``core.interpretation.EffectHandler[None]``)."""

    def __init__(self, server: SimServer, run_id: str) -> None:
        self.server = server
        self.run_id = run_id

    def dispatch_workflow_task(self, effect: DispatchWorkflowTask) -> None:
        self.server.workflow_tasks.append(effect.task)

    def dispatch_activity_task(self, effect: DispatchActivityTask) -> None:
        s = self.server
        if effect.deliver_at is None or effect.deliver_at <= s.now:
            s.activity_tasks.append(effect.task)
        else:
            s._arm(effect.deliver_at, effect.task.run_id, "", effect.task)

    def arm_timer(self, effect: ArmTimer) -> None:
        self.server._arm(effect.fire_at, self.run_id, effect.key, None)

    def start_run(self, effect: StartRun) -> None:
        s = self.server
        _, error = s._start_run(effect.request)
        parent = effect.request.parent
        if error and parent is not None:
            failure = Failure(error, type="WorkflowAlreadyStartedError")
            s.deliver(inp.RecordChildStartFailed(parent.run_id, parent.seq, failure))

    def send_to_run(self, message: RunMessage) -> None:
        s = self.server
        workflow_id, msg, _ = message
        run_id = msg.run_id or s.latest.get(workflow_id)
        if run_id is None or run_id not in s.runs or not s.runs[run_id].state.is_open:
            return  # as the server answers: that run is not running (nothing to do)
        s.deliver(evolve(msg, run_id=run_id))

    def cancel_activities(self, effect: CancelActivities) -> None:
        """Nothing to tell: an attempt here has run to its end when it started."""

    def update_status(self, effect: UpdateStatus) -> None:
        """Nothing to write (``Simulation.status`` reads the run's state); a closed run's
        timers are dropped, as the server drops its local ones (they would be ignored)."""
        if effect.summary.status in RunStatus.CLOSED:
            s = self.server
            kept = [t for t in s._timers if t[2] != effect.summary.run_id]
            if len(kept) != len(s._timers):
                heapq.heapify(kept)
                s._timers = kept

    def index_run(self, effect: IndexRun) -> None:
        """Nothing to write: the run's search attributes are in its state."""

    def unsupported(self, effect: object) -> None:
        raise SimulationUnsupportedError(
            f"the Simulation cannot carry out {type(effect).__name__} (asked for by run "
            f"{self.run_id!r}): {effect!r}; run this test with df.testing.LocalEnvironment, "
            "which uses the real server and workers"
        )
