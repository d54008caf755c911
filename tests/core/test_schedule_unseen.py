"""The pure schedule state machine when an action's workflow id has no run any more: a run seen
running that closed and was removed unseen is "removed" (and no longer blocks the overlap
policy); an action never seen running is started again while its start may still be under
way, and recorded "lost" (never started again) once it cannot be."""

from __future__ import annotations

import pytest
from attrs import evolve

from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_draft import GONE, LOST, REMOVED, start_lost
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
    apply_trigger,
    new_state,
    step,
)

T0 = 1_700_000_040.0  # a multiple of 60


def make(overlap: Overlap = Overlap.SKIP, **policy: object) -> ScheduleState:
    schedule = Schedule(
        action=ScheduleStartWorkflow("report", 1, id_prefix="rep", task_queue="q"),
        spec=ScheduleSpec(intervals=[Interval(every=60)]),
        policy=SchedulePolicy(overlap=overlap, **policy),  # type: ignore[arg-type]
    )
    return new_state("s1", schedule, T0, "create-1")


def seen(state: ScheduleState) -> dict[str, Observed]:
    return {
        r.workflow_id: Observed(f"run-{i}", RunStatus.RUNNING) for i, r in enumerate(state.running)
    }


def no_run(state: ScheduleState, status: str = "") -> dict[str, Observed]:
    return {r.workflow_id: Observed(status=status) for r in state.running}


def starts(effects: object) -> list[str]:
    return [e.workflow_id for e in effects if isinstance(e, StartAction)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlap", [Overlap.SKIP, Overlap.BUFFER_ONE, Overlap.BUFFER_ALL])
def test_a_running_action_whose_run_was_removed_unseen_is_closed_as_removed(
    overlap: Overlap,
) -> None:
    s = step(make(overlap), T0 + 60, {})
    s = step(s.state, T0 + 61, seen(s.state))
    wid = f"rep-{iso(T0 + 60)}"
    assert s.state.running[0].run_id == "run-0"
    # its run closed and was removed before the schedule looked again: no run of it any more
    s = step(s.state, T0 + 120, no_run(s.state))
    assert [(r.workflow_id, r.status, r.run_id) for r in s.state.recent] == [
        (wid, REMOVED, "run-0")
    ]
    assert starts(s.effects) == [f"rep-{iso(T0 + 120)}"]  # not skipped, not buffered
    assert s.state.skipped == 0 and s.state.buffered == ()
    assert [(j.kind, j.nominal) for j in s.state.journal if j.kind == REMOVED] == [
        (REMOVED, T0 + 60)
    ]
    entry = next(j for j in s.state.journal if j.kind == REMOVED)
    assert "run-0 closed and was removed before the schedule saw it close" in entry.detail


def test_a_removed_action_clears_its_stop_request_and_lets_the_next_start() -> None:
    s = step(make(Overlap.CANCEL_OTHER), T0 + 60, {})
    s = step(s.state, T0 + 120, seen(s.state))
    assert [type(e) for e in s.effects] == [CancelAction] and s.state.stopping
    s = step(s.state, T0 + 125, no_run(s.state))
    assert s.state.stopping == ()
    assert starts(s.effects) == [f"rep-{iso(T0 + 120)}"]
    assert s.state.recent[-1].status == REMOVED


def test_a_removed_action_does_not_pause_on_failure() -> None:
    s = step(make(pause_on_failure=True), T0 + 60, {})
    s = step(s.state, T0 + 61, seen(s.state))
    s = step(s.state, T0 + 120, no_run(s.state))
    assert not s.state.paused and s.state.recent[-1].status == REMOVED
    assert starts(s.effects) == [f"rep-{iso(T0 + 120)}"]


def test_an_unseen_start_with_no_run_yet_is_started_again() -> None:
    s = step(make(), T0 + 60, {})
    wid = f"rep-{iso(T0 + 60)}"
    again = step(s.state, T0 + 65, no_run(s.state))  # its start may still be under way
    assert starts(again.effects) == [wid] and again.state.running[0].status == STARTING
    assert again.state.recent == ()


def test_an_unseen_start_that_cannot_be_under_way_is_lost_not_started_again() -> None:
    s = step(make(), T0 + 60, {})
    wid = f"rep-{iso(T0 + 60)}"
    lost = step(s.state, T0 + 120, no_run(s.state, GONE))
    assert [(r.workflow_id, r.status) for r in lost.state.recent] == [(wid, LOST)]
    assert starts(lost.effects) == [f"rep-{iso(T0 + 120)}"]  # the next time, not the lost one
    entry = next(j for j in lost.state.journal if j.kind == LOST)
    assert entry.nominal == T0 + 60 and "60s after its start" in entry.detail
    # a later step never starts it again
    later = step(lost.state, T0 + 121, {})
    assert wid not in starts(later.effects)
    assert wid not in [r.workflow_id for r in later.state.running]


def test_an_unseen_start_keeps_a_durable_poll() -> None:
    s = step(make(), T0 + 60, {})
    assert s.wake_at == T0 + 60 + 5  # before the next fire time (T0 + 120)


def test_start_lost_counts_from_the_start_and_only_for_unseen_actions() -> None:
    s = step(make(), T0 + 60, {})
    r = s.state.running[0]
    assert not start_lost(r, T0 + 60 + 30, 30.0)
    assert start_lost(r, T0 + 60 + 31, 30.0)
    assert not start_lost(evolve(r, run_id="run-0", status=RunStatus.RUNNING), T0 + 1e6, 1.0)


def test_an_action_recorded_ahead_is_lost_only_counting_from_its_fire_time() -> None:
    s = step(make(Overlap.ALLOW_ALL), T0 + 50, {}, lead=60.0)
    r = s.state.running[0]
    assert r.fire_at == T0 + 60 and r.taken_at == T0 + 50
    assert not start_lost(r, T0 + 55, 1.0)  # pending: nothing to start yet
    assert not start_lost(r, T0 + 60 + 10, 10.0)
    assert start_lost(r, T0 + 60 + 11, 10.0)


def test_a_trigger_closes_a_removed_action_first() -> None:
    s = step(make(), T0 + 60, {})
    s = step(s.state, T0 + 61, seen(s.state))
    t = apply_trigger(s.state, None, T0 + 90, "t1", no_run(s.state))
    assert t.state.recent[-1].status == REMOVED
    assert starts(t.effects) == [f"rep-{iso(T0 + 90)}"]  # SKIP: nothing runs any more
