"""Schedules as a pure state machine: (state, now, what was observed, a request) -> new state,
effects and the next time to wake up.

A schedule's state is one record (``ScheduleState``) that df-server rewrites after each step with
optimistic concurrency. Rules this module keeps (the runtime in ``server/schedules.py`` relies on
them):

- ``processed_upto`` only moves forward; a nominal time at or before it is never acted on again
  by the schedule's own spec (a retried step finds it already handled).
- An action is *recorded first* (in ``running``, status ``starting``), then started: the start
  effect is derived again from the state on every step until the run is observed, and the
  start itself is idempotent (workflow id ``<id_prefix>-<scheduled time>``, a request id from
  the same facts, id reuse policy REJECT_DUPLICATE). So an action is never lost and never
  started twice.
- Overlap policies (as Temporal documents them) see only this schedule's own running actions.
- Catch-up: due times older than ``catchup_window`` are counted and recorded as missed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta

from attrs import evolve, field, frozen

from durablefuture.core.definitions import name_of
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.schedule_spec import ScheduleSpec, iso, scheduled_times
from durablefuture.core.types import check_name, check_workflow_id

__all__ = [
    "ActionRecord",
    "Buffered",
    "CancelAction",
    "JournalEntry",
    "Observed",
    "Overlap",
    "Schedule",
    "ScheduleEffect",
    "SchedulePolicy",
    "ScheduleStartWorkflow",
    "ScheduleState",
    "StartAction",
    "Step",
    "Stop",
    "TerminateAction",
    "apply_backfill",
    "apply_pause",
    "apply_trigger",
    "apply_update",
    "new_state",
    "step",
]

STARTING = "starting"
"""Status of an action that is recorded but whose run has not been observed yet."""

RECENT = 20
JOURNAL = 50
MAX_STEPS = 2_000
"""Due times handled in one step at most (the rest in the next step, right away)."""
MAX_BACKFILL = 10_000


class Overlap(enum.Enum):
    """What to do when an action is due while an earlier action of the schedule still runs."""

    SKIP = "skip"
    """Do not start it (the default)."""
    BUFFER_ONE = "buffer_one"
    """Start it when the running one closes; at most one waits, later ones are skipped."""
    BUFFER_ALL = "buffer_all"
    """Start every due action, one after the other, each when the previous one closes."""
    CANCEL_OTHER = "cancel_other"
    """Request cancellation of the running one; start the new one once it has closed."""
    TERMINATE_OTHER = "terminate_other"
    """Terminate the running one and start the new one at once."""
    ALLOW_ALL = "allow_all"
    """Start it regardless; any number may run at once."""


def _td(value: timedelta | float | int) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


@frozen
class SchedulePolicy:
    overlap: Overlap = Overlap.SKIP
    catchup_window: timedelta = field(default=timedelta(days=365), converter=_td)
    """After downtime, due actions older than this are recorded as missed instead of run."""
    pause_on_failure: bool = False
    """Pause the schedule when an action's run fails, times out, is cancelled or terminated."""

    def __attrs_post_init__(self) -> None:
        if self.catchup_window < timedelta(seconds=1):
            raise InvalidArgumentError("SchedulePolicy.catchup_window must be at least 1 s")


def _args(value: Iterable[object]) -> tuple[object, ...]:
    return tuple(value)


@frozen(init=False)
class ScheduleStartWorkflow:
    """The action: start ``workflow`` with ``args``; its id is ``<id_prefix>-<scheduled time>``.

    ``ScheduleStartWorkflow(report, "daily", id_prefix="report", task_queue="reports")``.
    ``id_prefix`` defaults to the schedule id.
    """

    workflow_type: str
    args: tuple[object, ...] = field(converter=_args)
    id_prefix: str | None
    task_queue: str
    execution_timeout: float | None

    def __init__(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id_prefix: str | None = None,
        task_queue: str | None = None,
        options: WorkflowOptions | None = None,
        execution_timeout: float | None = None,
    ) -> None:
        wf = name_of(workflow, "workflow")
        queue = task_queue or (options.task_queue if options else "default")
        timeout = execution_timeout
        if timeout is None and options is not None:
            timeout = options.execution_timeout
        if id_prefix is not None:
            check_workflow_id(id_prefix, "id_prefix")
        self.__attrs_init__(wf, args, id_prefix, check_name(queue), timeout)

    @classmethod
    def of(
        cls,
        workflow_type: str,
        args: Sequence[object],
        id_prefix: str | None,
        task_queue: str,
        execution_timeout: float | None,
    ) -> ScheduleStartWorkflow:
        return cls(
            workflow_type,
            *args,
            id_prefix=id_prefix,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
        )


@frozen
class Schedule:
    """What a schedule does (``action``), when (``spec``) and how (``policy``)."""

    action: ScheduleStartWorkflow
    spec: ScheduleSpec
    policy: SchedulePolicy = field(factory=SchedulePolicy)
    paused: bool = False
    note: str = ""


@frozen
class ActionRecord:
    """One action the schedule took."""

    nominal: float
    """Its scheduled time (the time in its workflow id)."""
    taken_at: float
    workflow_id: str
    source: str = "spec"
    """``spec``, ``trigger`` or ``backfill``."""
    run_id: str = ""
    status: str = STARTING
    """``starting`` until its run is seen, then a RunStatus value."""


@frozen
class Buffered:
    nominal: float
    overlap: Overlap
    source: str = "spec"


@frozen
class JournalEntry:
    """A fact in the schedule's history: created, updated, paused, unpaused, skipped, missed,
    buffered, triggered, backfilled, cancel_requested, terminated."""

    at: float
    kind: str
    nominal: float | None = None
    detail: str = ""


@frozen
class Stop:
    workflow_id: str
    terminate: bool


@frozen
class ScheduleState:
    schedule_id: str
    schedule: Schedule
    created_at: float
    updated_at: float
    processed_upto: float
    """Nominal times up to here have been handled (taken, skipped, buffered or missed)."""
    running: tuple[ActionRecord, ...] = ()
    buffered: tuple[Buffered, ...] = ()
    recent: tuple[ActionRecord, ...] = ()
    """The latest closed actions, newest last."""
    journal: tuple[JournalEntry, ...] = ()
    actions: int = 0
    skipped: int = 0
    missed: int = 0
    stopping: tuple[Stop, ...] = ()
    """Runs this schedule asked to cancel or terminate (until they close)."""
    requests: tuple[str, ...] = ()
    """Ids of the latest control requests applied (a redelivered request is not applied twice)."""

    @property
    def paused(self) -> bool:
        return self.schedule.paused

    def action_id(self, nominal: float) -> str:
        prefix = self.schedule.action.id_prefix or self.schedule_id
        return f"{prefix}-{iso(nominal)}"

    def request_id(self, nominal: float) -> str:
        return f"sch:{self.schedule_id}:{iso(nominal)}"


# ------------------------------------------------------------------ effects


@frozen
class StartAction:
    workflow_id: str
    request_id: str
    nominal: float


@frozen
class CancelAction:
    workflow_id: str
    run_id: str
    request_id: str


@frozen
class TerminateAction:
    workflow_id: str
    run_id: str
    request_id: str


ScheduleEffect = StartAction | CancelAction | TerminateAction


@frozen
class Observed:
    """What the runtime saw of an action's workflow id: its latest run (``run_id`` empty: no
    run yet) and that run's status."""

    run_id: str = ""
    status: str = ""


@frozen
class Step:
    state: ScheduleState
    effects: tuple[ScheduleEffect, ...]
    wake_at: float | None
    """When to step again (None: never, unless something asks)."""
    taken: int = 0
    skipped: int = 0
    missed: int = 0
    lateness: tuple[float, ...] = ()
    """Seconds between each spec action's fire time and ``now``."""


# ------------------------------------------------------------------ building blocks


class _Draft:
    """A mutable working copy of a state for one step (the result is frozen again)."""

    def __init__(self, state: ScheduleState, now: float) -> None:
        self.s = state
        self.now = now
        self.running = list(state.running)
        self.buffered = list(state.buffered)
        self.recent = list(state.recent)
        self.journal = list(state.journal)
        self.stopping = list(state.stopping)
        self.taken = self.skipped_n = self.missed_n = 0
        self.lateness: list[float] = []
        self.paused = state.schedule.paused
        self.note = state.schedule.note

    def log(self, kind: str, nominal: float | None = None, detail: str = "") -> None:
        self.journal.append(JournalEntry(self.now, kind, nominal, detail))

    def start(self, nominal: float, source: str) -> None:
        wid = self.s.action_id(nominal)
        if any(r.workflow_id == wid for r in (*self.running, *self.recent)):
            # already taken (a backfill over taken times, a trigger at a spec instant)
            self.log("skipped", nominal, f"{wid} was already taken")
            return
        self.running.append(ActionRecord(nominal, self.now, wid, source))
        self.taken += 1

    def stop_running(self, overlap: Overlap) -> None:
        stopping = {s.workflow_id for s in self.stopping}
        for r in self.running:
            if r.workflow_id not in stopping:
                self.stopping.append(Stop(r.workflow_id, overlap is Overlap.TERMINATE_OTHER))
                kind = "cancel_requested" if overlap is Overlap.CANCEL_OTHER else "terminated"
                self.log(kind, r.nominal, r.workflow_id)

    def action(self, nominal: float, overlap: Overlap, source: str) -> None:
        """An action is due: take it, buffer it or skip it, as ``overlap`` says."""
        busy = bool(self.running)
        if overlap is Overlap.ALLOW_ALL or (not busy and not self.buffered):
            self.start(nominal, source)
        elif overlap is Overlap.SKIP:
            self.skip(nominal, "an earlier action is still running (overlap SKIP)")
        elif overlap is Overlap.BUFFER_ONE:
            if self.buffered:
                self.skip(nominal, "one action is already buffered (overlap BUFFER_ONE)")
            else:
                self.buffered.append(Buffered(nominal, overlap, source))
                self.log("buffered", nominal)
        elif overlap is Overlap.BUFFER_ALL:
            self.buffered.append(Buffered(nominal, overlap, source))
            self.log("buffered", nominal)
        elif overlap is Overlap.CANCEL_OTHER:
            for b in self.buffered:
                self.skip(b.nominal, "replaced by a later action (overlap CANCEL_OTHER)")
            self.buffered = [Buffered(nominal, overlap, source)]
            self.stop_running(overlap)
        else:  # TERMINATE_OTHER
            self.stop_running(overlap)
            for b in self.buffered:
                self.skip(b.nominal, "replaced by a later action (overlap TERMINATE_OTHER)")
            self.buffered = []
            self.start(nominal, source)

    def skip(self, nominal: float, why: str) -> None:
        self.skipped_n += 1
        self.log("skipped", nominal, why)

    def observe(self, observed: Mapping[str, Observed]) -> None:
        still: list[ActionRecord] = []
        for r in self.running:
            o = observed.get(r.workflow_id)
            if o is None or not o.run_id:
                still.append(r)
                continue
            r = evolve(r, run_id=o.run_id, status=o.status or RunStatus.RUNNING)
            if r.status == RunStatus.RUNNING:
                still.append(r)
                continue
            self.recent.append(r)
            was_stopped = any(s.workflow_id == r.workflow_id for s in self.stopping)
            self.stopping = [s for s in self.stopping if s.workflow_id != r.workflow_id]
            if (
                self.s.schedule.policy.pause_on_failure
                and r.status in RunStatus.FAILED_LIKE
                and not was_stopped
                and not self.paused
            ):
                self.paused = True
                self.note = f"paused: action {r.workflow_id} {r.status}"
                self.log("paused", r.nominal, self.note)
        self.running = still

    def drain_buffer(self) -> None:
        while self.buffered and not self.running:
            b = self.buffered.pop(0)
            self.start(b.nominal, b.source)

    def finish(self, poll: float) -> Step:
        s = self.s
        schedule = evolve(s.schedule, paused=self.paused, note=self.note)
        state = evolve(
            s,
            schedule=schedule,
            running=tuple(self.running),
            buffered=tuple(self.buffered),
            recent=tuple(self.recent[-RECENT:]),
            journal=tuple(self.journal[-JOURNAL:]),
            stopping=tuple(self.stopping),
            actions=s.actions + self.taken,
            skipped=s.skipped + self.skipped_n,
            missed=s.missed + self.missed_n,
        )
        effects: list[ScheduleEffect] = []
        stops = {s.workflow_id: s.terminate for s in state.stopping}
        for r in state.running:
            if r.status == STARTING:
                effects.append(StartAction(r.workflow_id, state.request_id(r.nominal), r.nominal))
            terminate = stops.get(r.workflow_id)
            if terminate is not None:
                rid = f"{state.request_id(r.nominal)}:stop"
                kind = TerminateAction if terminate else CancelAction
                effects.append(kind(r.workflow_id, r.run_id, rid))
        wake = next_wake(state, self.now, poll)
        return Step(
            state,
            tuple(effects),
            wake,
            self.taken,
            self.skipped_n,
            self.missed_n,
            tuple(self.lateness),
        )


def next_wake(state: ScheduleState, now: float, poll: float) -> float | None:
    """The next fire time of the spec, or sooner (``now + poll``) while something waits on a
    running action (a buffered action, a stop request, pause-on-failure, an unseen start)."""
    wake: float | None = None
    if not state.paused:
        nxt = next(
            scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None
        )
        if nxt is not None:
            wake = nxt[1]
    watching = state.buffered or state.stopping or any(r.status == STARTING for r in state.running)
    if state.running and state.schedule.policy.pause_on_failure:
        watching = True
    if watching:
        wake = now + poll if wake is None else min(wake, now + poll)
    return wake


# ------------------------------------------------------------------ transitions


def new_state(schedule_id: str, schedule: Schedule, now: float, request_id: str) -> ScheduleState:
    """A new schedule: nothing before ``now`` is due."""
    check_workflow_id(schedule_id, "schedule id")
    return ScheduleState(
        schedule_id=schedule_id,
        schedule=schedule,
        created_at=now,
        updated_at=now,
        processed_upto=now,
        journal=(JournalEntry(now, "created", None, schedule.note),),
        requests=(request_id,),
    )


def step(
    state: ScheduleState,
    now: float,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
) -> Step:
    """Take every action that is due at ``now`` (and start buffered ones that may start)."""
    d = _Draft(state, now)
    d.observe(observed)
    upto = state.processed_upto
    if d.paused:
        upto = max(upto, now)
    else:
        window = state.schedule.policy.catchup_window.total_seconds()
        overlap = state.schedule.policy.overlap
        n = 0
        for nominal, fire_at in scheduled_times(state.schedule.spec, state.schedule_id, upto):
            if fire_at > now or n >= MAX_STEPS:
                break
            n += 1
            upto = nominal
            if now - fire_at > window:
                d.missed_n += 1
                d.log("missed", nominal, f"{now - fire_at:.0f}s late, past the catch-up window")
                continue
            d.lateness.append(now - fire_at)
            d.action(nominal, overlap, "spec")
    d.drain_buffer()
    d.s = evolve(state, processed_upto=upto)
    out = d.finish(poll)
    if not d.paused and _due_now(out.state, now):  # more than MAX_STEPS were due
        out = evolve(out, wake_at=now)
    return out


def _due_now(state: ScheduleState, now: float) -> bool:
    nxt = next(scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None)
    return nxt is not None and nxt[1] <= now


def _remember(state: ScheduleState, request_id: str) -> tuple[str, ...]:
    return (*state.requests, request_id)[-RECENT:]


def apply_update(
    state: ScheduleState, schedule: Schedule, now: float, request_id: str
) -> ScheduleState:
    """Replace the schedule's definition; its spec applies from ``now`` on (no catch-up of
    times the new spec would have had in the past)."""
    return evolve(
        state,
        schedule=schedule,
        updated_at=now,
        processed_upto=max(state.processed_upto, now),
        journal=(*state.journal, JournalEntry(now, "updated", None, schedule.note))[-JOURNAL:],
        requests=_remember(state, request_id),
    )


def apply_pause(
    state: ScheduleState, paused: bool, note: str, now: float, request_id: str
) -> ScheduleState:
    """Pause or unpause. While paused no spec action is taken, and none is caught up later."""
    schedule = evolve(state.schedule, paused=paused, note=note)
    kind = "paused" if paused else "unpaused"
    return evolve(
        state,
        schedule=schedule,
        updated_at=now,
        processed_upto=max(state.processed_upto, now),
        journal=(*state.journal, JournalEntry(now, kind, None, note))[-JOURNAL:],
        requests=_remember(state, request_id),
    )


def apply_trigger(
    state: ScheduleState,
    overlap: Overlap | None,
    now: float,
    request_id: str,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
) -> Step:
    """Take one action now (its scheduled time is ``now``), even while paused."""
    d = _Draft(state, now)
    d.observe(observed)
    d.log("triggered", now)
    d.action(now, overlap or state.schedule.policy.overlap, "trigger")
    d.drain_buffer()
    d.s = evolve(state, requests=_remember(state, request_id))
    return d.finish(poll)


def backfill_times(state: ScheduleState, start: float, end: float) -> list[float]:
    times: list[float] = []
    for nominal, _fire in scheduled_times(state.schedule.spec, state.schedule_id, start - 1e-6):
        if nominal > end:
            break
        times.append(nominal)
        if len(times) > MAX_BACKFILL:
            raise InvalidArgumentError(
                f"a backfill may cover at most {MAX_BACKFILL} actions; split the range"
            )
    return times


def apply_backfill(
    state: ScheduleState,
    start: float,
    end: float,
    overlap: Overlap | None,
    now: float,
    request_id: str,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
) -> Step:
    """Take the actions the spec has in [start, end] now, as ``overlap`` says (ignoring the
    catch-up window and pause; times already taken are not started again)."""
    times = backfill_times(state, start, end)
    d = _Draft(state, now)
    d.observe(observed)
    d.log("backfilled", start, f"{iso(start)}..{iso(end)}: {len(times)} actions")
    for nominal in times:
        d.action(nominal, overlap or state.schedule.policy.overlap, "backfill")
    d.drain_buffer()
    d.s = evolve(state, requests=_remember(state, request_id))
    return d.finish(poll)


def upcoming(state: ScheduleState, count: int, after: float) -> list[tuple[float, float]]:
    """The next ``count`` (nominal, fire_at) pairs after ``after`` (none while paused)."""
    out: list[tuple[float, float]] = []
    if state.paused:
        return out
    for pair in scheduled_times(
        state.schedule.spec, state.schedule_id, max(after, state.processed_upto)
    ):
        out.append(pair)
        if len(out) >= count:
            break
    return out
