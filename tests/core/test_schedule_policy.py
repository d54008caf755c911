"""The pure schedule state machine: due actions, catch-up and missed, overlap policies, pause,
trigger, backfill, update; retried steps never take an action twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_spec import Interval, ScheduleSpec, iso
from durablefuture.core.schedules import (
    STARTING,
    CancelAction,
    Observed,
    Overlap,
    Schedule,
    SchedulePolicy,
    ScheduleStartWorkflow,
    ScheduleState,
    StartAction,
    TerminateAction,
    apply_backfill,
    apply_pause,
    apply_trigger,
    apply_update,
    new_state,
    step,
    upcoming,
)

T0 = 1_700_000_040.0  # a multiple of 60


def make(overlap: Overlap = Overlap.SKIP, **policy: object) -> ScheduleState:
    schedule = Schedule(
        action=ScheduleStartWorkflow("report", 1, id_prefix="rep", task_queue="q"),
        spec=ScheduleSpec(intervals=[Interval(every=60)]),
        policy=SchedulePolicy(overlap=overlap, **policy),  # type: ignore[arg-type]
    )
    return new_state("s1", schedule, T0, "create-1")


def running(state: ScheduleState) -> dict[str, Observed]:
    return {
        r.workflow_id: Observed(f"run-{i}", RunStatus.RUNNING) for i, r in enumerate(state.running)
    }


def closed(state: ScheduleState, status: str = RunStatus.COMPLETED) -> dict[str, Observed]:
    return {r.workflow_id: Observed(f"run-{i}", status) for i, r in enumerate(state.running)}


def starts(effects: object) -> list[str]:
    return [e.workflow_id for e in effects if isinstance(e, StartAction)]  # type: ignore[attr-defined]


def test_nothing_is_due_before_the_first_time() -> None:
    s = step(make(), T0 + 30, {})
    assert s.effects == () and s.taken == 0
    assert s.wake_at == T0 + 60


def test_a_due_action_is_recorded_then_started_with_a_stable_id() -> None:
    s = step(make(), T0 + 60.2, {})
    wid = f"rep-{iso(T0 + 60)}"
    assert starts(s.effects) == [wid]
    assert s.state.running[0].status == STARTING
    assert s.effects[0].request_id == f"sch:s1:{iso(T0 + 60)}"  # type: ignore[union-attr]
    assert s.wake_at is not None and s.wake_at <= T0 + 60.2 + 5  # watching the start
    # the same step again (a retried tick) starts nothing new; the start effect is re-derived
    again = step(s.state, T0 + 60.4, {})
    assert again.taken == 0 and starts(again.effects) == [wid]
    # once the run is seen, the start is no longer re-sent
    seen = step(s.state, T0 + 61, running(s.state))
    assert starts(seen.effects) == [] and seen.state.running[0].run_id == "run-0"


def test_catchup_window_runs_recent_and_records_older_as_missed() -> None:
    st = make(Overlap.ALLOW_ALL, catchup_window=timedelta(minutes=3))
    s = step(st, T0 + 600.5, {})  # down for 10 minutes
    assert s.missed == 7 and s.taken == 3
    assert [r.nominal for r in s.state.running] == [T0 + 480, T0 + 540, T0 + 600]
    assert s.state.missed == 7
    assert [j.kind for j in s.state.journal].count("missed") == 7
    assert s.state.processed_upto == T0 + 600


def test_skip() -> None:
    s = step(make(Overlap.SKIP), T0 + 60, {})
    s2 = step(s.state, T0 + 120, running(s.state))
    assert s2.taken == 0 and s2.skipped == 1
    s3 = step(s2.state, T0 + 180, closed(s2.state))
    assert s3.taken == 1 and s3.state.recent[-1].status == RunStatus.COMPLETED


def test_buffer_one_keeps_one_and_starts_it_when_the_run_closes() -> None:
    s = step(make(Overlap.BUFFER_ONE), T0 + 60, {})
    s = step(s.state, T0 + 180, running(s.state))  # T+120 buffered, T+180 skipped
    assert s.skipped == 1 and [b.nominal for b in s.state.buffered] == [T0 + 120]
    assert s.wake_at is not None and s.wake_at <= T0 + 185  # polls while something waits
    s = step(s.state, T0 + 190, closed(s.state))
    assert starts(s.effects) == [f"rep-{iso(T0 + 120)}"] and s.state.buffered == ()


def test_buffer_all_starts_them_one_after_the_other() -> None:
    s = step(make(Overlap.BUFFER_ALL), T0 + 60, {})
    s = step(s.state, T0 + 240, running(s.state))
    assert [b.nominal for b in s.state.buffered] == [T0 + 120, T0 + 180, T0 + 240]
    order = []
    for i in range(3):
        s = step(s.state, T0 + 250 + i, closed(s.state))
        order += starts(s.effects)
    assert order == [f"rep-{iso(T0 + 60 * k)}" for k in (2, 3, 4)]


def test_allow_all() -> None:
    s = step(make(Overlap.ALLOW_ALL), T0 + 60, {})
    s = step(s.state, T0 + 120, running(s.state))
    assert s.taken == 1 and len(s.state.running) == 2


def test_cancel_other_cancels_then_starts_after_close() -> None:
    s = step(make(Overlap.CANCEL_OTHER), T0 + 60, {})
    s = step(s.state, T0 + 120, running(s.state))
    assert [type(e) for e in s.effects] == [CancelAction] and s.taken == 0
    assert s.effects[0].run_id == "run-0"  # type: ignore[union-attr]
    s = step(s.state, T0 + 125, closed(s.state, RunStatus.CANCELLED))
    assert starts(s.effects) == [f"rep-{iso(T0 + 120)}"]


def test_terminate_other_terminates_and_starts_at_once() -> None:
    s = step(make(Overlap.TERMINATE_OTHER), T0 + 60, {})
    s = step(s.state, T0 + 120, running(s.state))
    kinds = sorted(type(e).__name__ for e in s.effects)
    assert kinds == ["StartAction", "TerminateAction"]
    assert isinstance(next(e for e in s.effects if isinstance(e, TerminateAction)), TerminateAction)


def test_pause_on_failure() -> None:
    s = step(make(pause_on_failure=True), T0 + 60, {})
    s = step(s.state, T0 + 70, closed(s.state, RunStatus.FAILED))
    assert s.state.paused and "failed" in s.state.schedule.note
    s = step(s.state, T0 + 600, {})
    assert s.taken == 0 and s.wake_at is None


def test_pause_unpause_does_not_catch_up_the_paused_time() -> None:
    st = apply_pause(make(), True, "maintenance", T0 + 10, "p1")
    assert step(st, T0 + 300, {}).taken == 0
    st = apply_pause(step(st, T0 + 300, {}).state, False, "", T0 + 301, "p2")
    s = step(st, T0 + 360, {})
    assert [r.nominal for r in s.state.running] == [T0 + 360]
    assert upcoming(st, 3, T0 + 301) == [
        (T0 + 360, T0 + 360),
        (T0 + 420, T0 + 420),
        (T0 + 480, T0 + 480),
    ]


def test_trigger_runs_now_even_while_paused() -> None:
    st = apply_pause(make(), True, "", T0, "p1")
    s = apply_trigger(st, None, T0 + 5.5, "t1", {})
    assert starts(s.effects) == [f"rep-{iso(T0 + 5.5)}"]
    assert "t1" in s.state.requests


def test_backfill_takes_each_time_once() -> None:
    s = apply_backfill(make(), T0 - 300, T0 - 60, Overlap.ALLOW_ALL, T0 + 1, "b1", {})
    assert len(starts(s.effects)) == 5
    again = apply_backfill(s.state, T0 - 300, T0 - 60, Overlap.ALLOW_ALL, T0 + 2, "b2", {})
    assert again.taken == 0


def test_update_applies_from_now_on() -> None:
    st = make()
    new = Schedule(action=st.schedule.action, spec=ScheduleSpec(intervals=[Interval(every=3600)]))
    st = apply_update(st, new, T0 + 100, "u1")
    assert step(st, T0 + 200, {}).taken == 0
    assert upcoming(st, 1, T0 + 100)[0][0] == T0 - (T0 % 3600) + 3600


def test_many_due_times_are_processed_in_bounded_steps() -> None:
    st = make(Overlap.SKIP)
    s = step(st, T0 + 60 * 5000, {})
    assert s.wake_at == T0 + 60 * 5000  # more is due: step again at once
    s2 = step(s.state, T0 + 60 * 5000, running(s.state))
    s3 = step(s2.state, T0 + 60 * 5000, running(s2.state))
    assert s3.state.processed_upto == T0 + 60 * 5000
    assert s3.state.actions + s3.state.skipped + s3.state.missed == 5000


@pytest.mark.parametrize("overlap", list(Overlap))
def test_no_action_is_taken_twice_whatever_the_policy(overlap: Overlap) -> None:
    st = make(overlap)
    seen: list[str] = []
    for k in range(1, 40):
        now = T0 + 30 * k
        obs = closed(st) if k % 3 == 0 else running(st)
        s = step(st, now, obs)
        s = step(s.state, now, obs)  # a retried step
        seen += [r.workflow_id for r in s.state.running if r.workflow_id not in seen]
        st = s.state
    assert len(seen) == len(set(seen))
