"""Recording an action ahead of its fire time (ALLOW_ALL): the step before records it, the
timer's firing at the fire time only starts it, nothing starts before it, and a pause, an
update or the catch-up window withdraw or miss it as they would a spec time not yet taken."""

from __future__ import annotations

import pytest

from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_spec import Interval, ScheduleSpec, iso
from durablefuture.core.schedules import (
    STARTING,
    Observed,
    Overlap,
    Schedule,
    SchedulePolicy,
    ScheduleStartWorkflow,
    ScheduleState,
    StartAction,
    apply_pause,
    apply_trigger,
    apply_update,
    due_starts,
    new_state,
    step,
    upcoming,
)

T0 = 1_700_000_040.0  # a multiple of 60
LEAD = 30.0
POLL = 5.0


def make(
    overlap: Overlap = Overlap.ALLOW_ALL, every: float = 60, **policy: object
) -> ScheduleState:
    schedule = Schedule(
        action=ScheduleStartWorkflow("report", 1, id_prefix="rep", task_queue="q"),
        spec=ScheduleSpec(intervals=[Interval(every=every)]),
        policy=SchedulePolicy(overlap=overlap, **policy),  # type: ignore[arg-type]
    )
    return new_state("s1", schedule, T0, "create-1")


def starts(effects: object) -> list[str]:
    return [e.workflow_id for e in effects if isinstance(e, StartAction)]  # type: ignore[attr-defined]


def ahead_of(state: ScheduleState, now: float) -> list[str]:
    return [r.workflow_id for r in state.running if r.pending(now)]


def test_the_next_action_is_recorded_ahead_and_started_at_its_time_only() -> None:
    s = step(make(), T0 + 40, {}, POLL, LEAD)  # T0 + 60 is 20 s away: within the lead
    [r] = s.state.running
    assert r.workflow_id == f"rep-{iso(T0 + 60)}" and r.status == STARTING
    assert r.fire_at == T0 + 60 and r.taken_at == T0 + 40
    assert s.effects == () and s.wake_at == T0 + 60  # armed for the fire time
    assert s.state.processed_upto == T0 + 60 and s.state.actions == 1
    assert upcoming(s.state, 2, T0 + 40) == [(T0 + 60, T0 + 60), (T0 + 120, T0 + 120)]
    # any step before the fire time starts nothing and records nothing more
    for now in (T0 + 41, T0 + 59.999):
        again = step(s.state, now, {}, POLL, LEAD)
        assert starts(again.effects) == [] and again.state.running == s.state.running
        assert due_starts(s.state, now, T0 + 60, POLL) is None
    # the timer's firing: only the start, the record unchanged, the observing step a poll later
    fired = due_starts(s.state, T0 + 60.2, T0 + 60, POLL)
    assert fired is not None
    assert starts(fired.effects) == [r.workflow_id] and fired.state == s.state
    assert fired.wake_at == pytest.approx(T0 + 65.2) and fired.lateness == pytest.approx((0.2,))
    # that step observes the run and records the next action ahead in the same write
    done = {r.workflow_id: Observed("run-1", RunStatus.COMPLETED)}
    polled = step(s.state, T0 + 65.2, done, POLL, LEAD)
    assert [x.workflow_id for x in polled.state.recent] == [r.workflow_id]
    assert polled.state.running == () and polled.wake_at == T0 + 120 - LEAD
    later = step(polled.state, T0 + 90, {}, POLL, LEAD)
    assert ahead_of(later.state, T0 + 90) == [f"rep-{iso(T0 + 120)}"]
    assert later.state.actions == 2 and later.effects == ()


def test_only_allow_all_records_ahead() -> None:
    for overlap in (Overlap.SKIP, Overlap.BUFFER_ONE, Overlap.CANCEL_OTHER):
        s = step(make(overlap), T0 + 40, {}, POLL, LEAD)
        assert s.state.running == () and s.wake_at == T0 + 60
    s = step(make(pause_on_failure=True), T0 + 40, {}, POLL, LEAD)
    assert s.state.running == () and s.wake_at == T0 + 60
    s = step(make(), T0 + 40, {}, POLL, 0.0)  # no lead: as before
    assert s.state.running == () and s.wake_at == T0 + 60


def test_a_firing_that_is_not_for_a_recorded_action_is_a_whole_step() -> None:
    s = step(make(), T0 + 40, {}, POLL, LEAD).state
    assert due_starts(s, T0 + 61, None, POLL) is None  # not the timer's own firing
    assert due_starts(s, T0 + 61, T0 + 59, POLL) is None  # armed for something else
    assert due_starts(make(), T0 + 61, T0 + 60, POLL) is None  # nothing recorded ahead
    # a spec time too close for the step a poll later to record it ahead: a whole step now
    quick = step(make(every=5), T0 + 2, {}, POLL, LEAD).state
    assert ahead_of(quick, T0 + 2) == [f"rep-{iso(T0 + 5)}"]
    assert due_starts(quick, T0 + 5, T0 + 5, POLL) is None
    whole = step(quick, T0 + 5, {}, POLL, LEAD)
    assert starts(whole.effects) == [f"rep-{iso(T0 + 5)}"]
    assert ahead_of(whole.state, T0 + 5) == [f"rep-{iso(T0 + 10)}"]


def test_a_pause_withdraws_the_action_recorded_ahead() -> None:
    s = step(make(), T0 + 40, {}, POLL, LEAD).state
    paused = apply_pause(s, True, "maintenance", T0 + 50, "p-1")
    assert paused.running == () and paused.actions == 0
    assert paused.processed_upto == T0 + 50
    assert due_starts(paused, T0 + 60, T0 + 60, POLL) is None
    out = step(paused, T0 + 60, {}, POLL, LEAD)
    assert out.effects == () and out.state.running == () and out.wake_at is None
    # unpaused before its time: taken again (the same workflow id), at its time
    unpaused = apply_pause(paused, False, "", T0 + 55, "p-2")
    again = step(unpaused, T0 + 55, {}, POLL, LEAD)
    assert ahead_of(again.state, T0 + 55) == [f"rep-{iso(T0 + 60)}"] and again.effects == ()
    assert again.state.actions == 1


def test_an_update_drops_an_action_the_new_spec_does_not_have() -> None:
    s = step(make(), T0 + 40, {}, POLL, LEAD).state
    every_90 = Schedule(
        action=s.schedule.action,
        spec=ScheduleSpec(intervals=[Interval(every=60, offset=30)]),
        policy=s.schedule.policy,
    )
    updated = apply_update(s, every_90, T0 + 45, "u-1")
    assert updated.running == () and updated.actions == 0
    out = step(updated, T0 + 45, {}, POLL, LEAD)
    # T0 + 60 is no longer a spec time; the next one of the new spec is recorded if within lead
    nxt = upcoming(out.state, 1, T0 + 45)[0][1]
    assert nxt != T0 + 60 and f"rep-{iso(T0 + 60)}" not in ahead_of(out.state, T0 + 45)
    assert due_starts(out.state, T0 + 60, T0 + 60, POLL) is None
    # an update that keeps the time takes it again with the same workflow id
    same = step(apply_update(s, s.schedule, T0 + 45, "u-2"), T0 + 45, {}, POLL, LEAD).state
    assert ahead_of(same, T0 + 45) == [f"rep-{iso(T0 + 60)}"] and same.actions == 1


def test_an_action_recorded_ahead_is_taken_and_starts_late_after_downtime() -> None:
    s = step(make(catchup_window=60), T0 + 40, {}, POLL, LEAD).state
    late = T0 + 60 + 40  # df-server was down through the fire time
    ok = due_starts(s, late, T0 + 60, POLL)
    assert ok is not None and starts(ok.effects) == [f"rep-{iso(T0 + 60)}"]
    assert ok.lateness == (40.0,)
    # down past the catch-up window: the recorded action still starts (it was taken before);
    # the spec times after it that are too old are missed, the due one is taken
    out = step(s, T0 + 60 * 3 + 1, {}, POLL, LEAD)
    assert starts(out.effects) == [f"rep-{iso(T0 + 60)}", f"rep-{iso(T0 + 180)}"]
    assert out.state.missed == 1 and out.state.actions == 2


def test_a_trigger_is_not_held_back_by_an_action_recorded_ahead() -> None:
    s = step(make(), T0 + 40, {}, POLL, LEAD).state
    t = apply_trigger(s, Overlap.SKIP, T0 + 41, "t-1", {}, POLL, LEAD)
    assert starts(t.effects) == [f"rep-{iso(T0 + 41)}"]  # the pending one is not running
    assert ahead_of(t.state, T0 + 41) == [f"rep-{iso(T0 + 60)}"]


def test_nothing_ever_starts_before_its_fire_time() -> None:
    state = make(every=20)
    started: dict[str, float] = {}
    now = T0
    for _ in range(400):  # 400 steps at uneven times, each observing the runs as closed
        observed = {
            r.workflow_id: Observed("run", RunStatus.COMPLETED)
            for r in state.running
            if r.workflow_id in started
        }
        out = step(state, now, observed, POLL, LEAD)
        fired = due_starts(out.state, now + 0.5, out.wake_at, POLL) if out.wake_at else None
        for s, at in ((out, now), (fired, now + 0.5)):
            if s is None:
                continue
            for e in s.effects:
                assert isinstance(e, StartAction)
                assert e.nominal <= at  # never before its time
                started.setdefault(e.workflow_id, at)
        state = out.state
        now += 1.7
    expected = {f"rep-{iso(t)}" for t in range(int(T0) + 20, int(now), 20)}
    assert set(started) >= expected - {f"rep-{iso(int(now) // 20 * 20)}"}
