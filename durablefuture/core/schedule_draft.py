"""One step of a schedule at work: a mutable copy of its state that takes, buffers, skips and
stops actions as the overlap policy says, then freezes into a ``Step`` with the effects the
state implies and the next time to wake up.

An action may be recorded *ahead* of its time (``ActionRecord.fire_at`` in the future, see
``ahead``): it is then pending, neither running nor started; its start effect appears only once
``now`` has reached its fire time.

An action whose workflow id has no run any more is closed: one seen running (a ``run_id``)
closed and was removed (retention, a delete) before the schedule looked again: ``removed``; one
never seen is ``lost`` once its start cannot still be under way (the caller says so with an
observation ``GONE``, see ``start_lost``), instead of being started again."""

from __future__ import annotations

from collections.abc import Mapping

from attrs import evolve

from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_model import (
    JOURNAL,
    MAX_STEPS,
    RECENT,
    STARTING,
    ActionRecord,
    Buffered,
    CancelAction,
    JournalEntry,
    Observed,
    Overlap,
    ScheduleEffect,
    ScheduleState,
    StartAction,
    Step,
    Stop,
    TerminateAction,
)
from durablefuture.core.schedule_spec import scheduled_times

__all__ = [
    "GONE",
    "LOST",
    "REMOVED",
    "Draft",
    "ahead",
    "next_wake",
    "pending_times",
    "start_lost",
]

REMOVED = "removed"
"""Status of an action seen running whose run then closed and was removed before the schedule
saw it close (its outcome is unknown)."""
LOST = "lost"
"""Status of an action never seen running whose workflow id has no run long after its start:
its run closed and was removed unseen, or its start never happened."""
GONE = "gone"
"""An observation's status: the workflow id has no run, and none can still be starting."""


def start_lost(record: ActionRecord, now: float, lost_after: float) -> bool:
    """``record`` (an action not seen running) was due to start more than ``lost_after``
    seconds before ``now``: with no run of its workflow id now, no start of it is still under
    way. ``lost_after`` is at least the namespace's retention (a run cannot have closed and
    been removed sooner after its start) and what a start may take (its input's redelivery)."""
    if record.status != STARTING or record.run_id or record.pending(now):
        return False
    return now - _began(record) > lost_after


def _began(record: ActionRecord) -> float:
    """When ``record``'s start was due: when it was taken, or its fire time if recorded ahead."""
    return max(record.taken_at, record.fire_at or record.taken_at)


def ahead(state: ScheduleState, lead: float) -> float:
    """How far ahead of its fire time the schedule's next action may be recorded: ``lead``
    under ALLOW_ALL (whether it starts depends on nothing that can change before its time),
    else 0 (the overlap decision needs the runs as they are at the fire time)."""
    policy = state.schedule.policy
    if state.paused or policy.overlap is not Overlap.ALLOW_ALL or policy.pause_on_failure:
        return 0.0
    return max(0.0, lead)


def pending_times(state: ScheduleState, now: float) -> list[tuple[float, float]]:
    """(nominal, fire_at) of the actions recorded ahead and not due at ``now``, soonest first."""
    return sorted(
        (r.nominal, r.fire_at) for r in state.running if r.fire_at is not None and r.pending(now)
    )


class Draft:
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

    def start(self, nominal: float, source: str, fire_at: float | None = None) -> None:
        wid = self.s.action_id(nominal)
        if any(r.workflow_id == wid for r in (*self.running, *self.recent)):
            # already taken (a backfill over taken times, a trigger at a spec instant)
            self.log("skipped", nominal, f"{wid} was already taken")
            return
        self.running.append(ActionRecord(nominal, self.now, wid, source, fire_at=fire_at))
        self.taken += 1

    def has_pending(self) -> bool:
        return any(r.pending(self.now) for r in self.running)

    def withdraw(self) -> int:
        """Drop the actions recorded ahead that are not due yet (a pause, an update)."""
        kept = [r for r in self.running if not r.pending(self.now)]
        n = len(self.running) - len(kept)
        self.running = kept
        self.taken -= n
        return n

    def take_due(
        self, upto: float, overlap: Overlap, lead: float, until: float | None = None
    ) -> float:
        """Act on every spec time due at ``now`` after ``upto``, and record the next one ahead
        if it fires within ``lead`` and none is pending; the new ``processed_upto``.

        ``until`` (at most ``now``): act only on the times that fire at or before it (lateness
        and the catch-up window still judged at ``now``), none recorded ahead; the new
        ``processed_upto`` is then ``until`` once all of those were taken."""
        window = self.s.schedule.policy.catchup_window.total_seconds()
        now = self.now
        n = 0
        for nominal, fire_at in scheduled_times(self.s.schedule.spec, self.s.schedule_id, upto):
            if until is not None and fire_at > until:
                return max(upto, until)
            if n >= MAX_STEPS:
                return upto
            if fire_at > now:
                if fire_at <= now + lead and not self.has_pending():
                    upto = nominal
                    self.start(nominal, "spec", fire_at)
                break
            n += 1
            upto = nominal
            if now - fire_at > window:
                self.missed_n += 1
                self.log("missed", nominal, f"{now - fire_at:.0f}s late, past the catch-up window")
                continue
            self.lateness.append(now - fire_at)
            self.action(nominal, overlap, "spec")
        return upto if until is None else max(upto, until)

    def stop_running(self, overlap: Overlap) -> None:
        stopping = {s.workflow_id for s in self.stopping}
        for r in self.running:
            if r.workflow_id not in stopping and not r.pending(self.now):
                self.stopping.append(Stop(r.workflow_id, overlap is Overlap.TERMINATE_OTHER))
                kind = "cancel_requested" if overlap is Overlap.CANCEL_OTHER else "terminated"
                self.log(kind, r.nominal, r.workflow_id)

    def action(self, nominal: float, overlap: Overlap, source: str) -> None:
        """An action is due: take it, buffer it or skip it, as ``overlap`` says."""
        busy = any(not r.pending(self.now) for r in self.running)
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
            if o is None or (not o.run_id and not r.run_id and o.status != GONE):
                still.append(r)  # not looked at, or its start may still be under way
                continue
            if not o.run_id:
                self.gone(r)
                continue
            r = evolve(r, run_id=o.run_id, status=o.status or RunStatus.RUNNING)
            if r.status == RunStatus.RUNNING:
                still.append(r)
                continue
            self.recent.append(r)
            was_stopped = self.unstop(r.workflow_id)
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

    def unstop(self, workflow_id: str) -> bool:
        """Forget the stop request for ``workflow_id`` (its run closed); whether there was one."""
        was = any(s.workflow_id == workflow_id for s in self.stopping)
        self.stopping = [s for s in self.stopping if s.workflow_id != workflow_id]
        return was

    def gone(self, r: ActionRecord) -> None:
        """``r``'s workflow id has no run: closed, outcome unknown (never started again, and
        never a reason to pause: nothing says it failed)."""
        self.unstop(r.workflow_id)
        if r.run_id:
            why = f"run {r.run_id} closed and was removed before the schedule saw it close"
            self.recent.append(evolve(r, status=REMOVED))
            self.log(REMOVED, r.nominal, f"{r.workflow_id}: {why}")
            return
        why = (
            f"no run {self.now - _began(r):.0f}s after its start: "
            "it closed and was removed (retention) before the schedule saw it, or it never started"
        )
        self.recent.append(evolve(r, status=LOST))
        self.log(LOST, r.nominal, f"{r.workflow_id}: {why}")

    def drain_buffer(self) -> None:
        while self.buffered and not self.running:
            b = self.buffered.pop(0)
            self.start(b.nominal, b.source)

    def finish(self, poll: float, lead: float = 0.0) -> Step:
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
            if r.status == STARTING and not r.pending(self.now):
                effects.append(StartAction(r.workflow_id, state.request_id(r.nominal), r.nominal))
            terminate = stops.get(r.workflow_id)
            if terminate is not None:
                rid = f"{state.request_id(r.nominal)}:stop"
                kind = TerminateAction if terminate else CancelAction
                effects.append(kind(r.workflow_id, r.run_id, rid))
        wake = next_wake(state, self.now, poll, lead=lead)
        return Step(
            state,
            tuple(effects),
            wake,
            self.taken,
            self.skipped_n,
            self.missed_n,
            tuple(self.lateness),
        )


def next_wake(
    state: ScheduleState,
    now: float,
    poll: float,
    lead: float = 0.0,
) -> float | None:
    """The fire time of the action recorded ahead, else the next fire time of the spec (less
    ``lead``: the step that records it ahead), or sooner (``now + poll``) while something waits
    on a running action (a buffered action, a stop request, pause-on-failure, an unseen start:
    the durable wake-up that sees its run, or finds it lost)."""
    wake: float | None = None
    pend = pending_times(state, now)
    if pend:
        wake = pend[0][1]
    elif not state.paused:
        nxt = next(
            scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None
        )
        if nxt is not None:
            wake = max(now, nxt[1] - ahead(state, lead)) if lead else nxt[1]
    unseen = any(r.status == STARTING and not r.pending(now) for r in state.running)
    watching = state.buffered or state.stopping or unseen
    if state.running and state.schedule.policy.pause_on_failure:
        watching = True
    if watching:
        wake = now + poll if wake is None else min(wake, now + poll)
    return wake
