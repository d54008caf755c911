"""An update, a pause or an unpause applies as of the time it was stored, not the time it was
handled: the fire times in between are taken by the old definition up to that time and by the
new one after it, or recorded as missed (the catch-up window counted from the handling); a
request id stays known for as long as its input can be redelivered."""

from __future__ import annotations

from datetime import timedelta

from durablefuture.core.schedule_asof import as_of, step_as_of
from durablefuture.core.schedule_model import MAX_REQUESTS, MAX_STEPS, RECENT
from durablefuture.core.schedule_spec import Interval, ScheduleSpec, iso
from durablefuture.core.schedules import (
    Overlap,
    Schedule,
    SchedulePolicy,
    ScheduleStartWorkflow,
    ScheduleState,
    StartAction,
    apply_pause,
    apply_trigger,
    apply_update,
    new_state,
    step,
)

T0 = 1_700_000_040.0  # a multiple of 60


def definition(every: int = 60, window: float = 365 * 86400, paused: bool = False) -> Schedule:
    return Schedule(
        action=ScheduleStartWorkflow("report", 1, id_prefix="rep", task_queue="q"),
        spec=ScheduleSpec(intervals=[Interval(every=every)]),
        policy=SchedulePolicy(overlap=Overlap.ALLOW_ALL, catchup_window=timedelta(seconds=window)),
        paused=paused,
    )


def make(every: int = 60, window: float = 365 * 86400, paused: bool = False) -> ScheduleState:
    return new_state("s1", definition(every, window, paused), T0, "create-1")


def starts(effects: object) -> list[str]:
    return [e.workflow_id for e in effects if isinstance(e, StartAction)]  # type: ignore[attr-defined]


def ids(*offsets: float) -> list[str]:
    return [f"rep-{iso(T0 + o)}" for o in offsets]


def test_as_of_is_the_stored_time_capped_at_now_and_never_before_processed() -> None:
    st = make()  # processed up to T0
    assert as_of(T0 + 30, st, T0 + 100) == T0 + 30
    assert as_of(T0 + 500, st, T0 + 100) == T0 + 100  # another clock ahead: now at most
    assert as_of(T0 - 30, st, T0 + 100) == T0  # times the record handled are not reopened
    assert as_of(None, st, T0 + 100) == T0 + 100  # unknown: as of now
    ahead = step(st, T0 + 30, {}, 5.0, 60.0).state  # T0+60 recorded ahead: processed to it
    assert as_of(T0 + 20, ahead, T0 + 40) == T0 + 40


def test_an_update_stored_before_due_times_takes_them_under_the_new_definition() -> None:
    every_120 = definition(every=120)

    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_update(s, every_120, T0 + 250, "u-1", at)

    out = step_as_of(make(), change, T0 + 90, T0 + 250, {})
    # T0+60 fell due before the update was asked for (old definition); T0+120 and T0+240
    # after it (new definition); T0+180 is the old definition's, after the update: not taken
    assert starts(out.effects) == ids(60, 120, 240)
    assert out.taken == 3 and out.missed == 0 and out.skipped == 0
    assert out.state.schedule == every_120
    assert out.state.processed_upto == T0 + 240
    updated = [j for j in out.state.journal if j.kind == "updated"]
    assert [j.at for j in updated] == [T0 + 90]  # when it took effect
    assert "u-1" in out.state.requests


def test_the_same_update_handled_as_of_now_would_drop_those_times() -> None:
    """What the as-of application fixes: applied at the handling time, nothing is started
    and nothing is recorded for T0+60 and T0+120."""
    st = apply_update(make(), definition(), T0 + 150, "u-1")
    out = step(st, T0 + 150, {})
    assert starts(out.effects) == [] and out.missed == 0 and out.skipped == 0


def test_a_pause_stored_after_a_due_time_still_takes_it() -> None:
    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_pause(s, True, "stop", T0 + 200, "p-1", at)

    out = step_as_of(make(), change, T0 + 70, T0 + 200, {})
    assert starts(out.effects) == ids(60)  # due before the pause was asked for
    assert out.state.paused and out.state.processed_upto == T0 + 200
    assert [j.at for j in out.state.journal if j.kind == "paused"] == [T0 + 70]
    later = step(out.state, T0 + 400, {})
    assert later.taken == 0  # nothing while paused


def test_an_unpause_stored_before_due_times_takes_them() -> None:
    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_pause(s, False, "go", T0 + 150, "p-2", at)

    out = step_as_of(make(paused=True), change, T0 + 30, T0 + 150, {})
    assert starts(out.effects) == ids(60, 120)
    assert not out.state.paused


def test_an_unpause_takes_nothing_from_before_it_was_asked_for() -> None:
    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_pause(s, False, "go", T0 + 150, "p-2", at)

    out = step_as_of(make(paused=True), change, T0 + 100, T0 + 150, {})
    assert starts(out.effects) == ids(120)  # T0+60 was in the pause
    assert out.missed == 0 and out.skipped == 0


def test_the_catchup_window_is_counted_from_the_handling_on_both_sides() -> None:
    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_update(s, definition(window=180), T0 + 400, "u-1", at)

    st = make(window=180)
    out = step_as_of(st, change, T0 + 130, T0 + 400, {})
    assert starts(out.effects) == ids(240, 300, 360)
    missed = [(j.nominal, j.detail) for j in out.state.journal if j.kind == "missed"]
    assert [n for n, _ in missed] == [T0 + 60, T0 + 120, T0 + 180]
    assert all("past the catch-up window" in why for _, why in missed)
    assert out.missed == 3 and out.taken == 3


def test_more_due_times_than_one_step_takes_apply_the_change_at_the_last_one_handled() -> None:
    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_pause(s, True, "stop", T0 + 3000, "p-1", at)

    out = step_as_of(make(every=1), change, T0 + 3000, T0 + 3000, {})
    assert out.taken == MAX_STEPS
    assert out.state.paused and out.state.processed_upto == T0 + 3000
    assert [j.at for j in out.state.journal if j.kind == "paused"] == [T0 + MAX_STEPS]


def test_an_action_recorded_ahead_and_due_at_the_handling_is_kept() -> None:
    """Its timer may have started it already: a pause asked for before its fire time, handled
    after it, does not withdraw it."""
    ahead = step(make(), T0 + 30, {}, 5.0, 60.0).state  # T0+60 recorded ahead
    assert [r.fire_at for r in ahead.running] == [T0 + 60]

    def change(s: ScheduleState, at: float) -> ScheduleState:
        return apply_pause(s, True, "stop", T0 + 65, "p-1", at)

    out = step_as_of(ahead, change, T0 + 40, T0 + 65, {}, 5.0, 60.0)
    assert starts(out.effects) == ids(60)
    assert out.state.actions == 1


def test_a_request_id_is_kept_beyond_recent_while_it_can_come_back() -> None:
    st = make()
    st = apply_trigger(st, None, T0 + 1, "trigger-1", {}, keep=400).state
    for i in range(RECENT + 5):
        st = apply_update(st, definition(), T0 + 2 + i, f"u-{i}", keep=400)
    assert "trigger-1" in st.requests  # applied 26 s ago, kept for 400
    assert len(st.requests) == len(st.requests_at)
    st = apply_update(st, definition(), T0 + 500, "late", keep=400)
    assert "trigger-1" not in st.requests  # past the horizon: the last RECENT only
    assert len(st.requests) == RECENT


def test_request_ids_kept_are_bounded() -> None:
    st = make()
    for i in range(MAX_REQUESTS + 50):
        st = apply_pause(st, bool(i % 2), "", T0 + 1 + i * 0.01, f"p-{i}", keep=1e6)
    assert len(st.requests) == MAX_REQUESTS == len(st.requests_at)
    assert st.requests[-1] == f"p-{MAX_REQUESTS + 49}"


def test_a_record_without_times_counts_its_ids_as_old() -> None:
    from attrs import evolve

    st = evolve(make(), requests=tuple(f"r-{i}" for i in range(RECENT)), requests_at=())
    st = apply_update(st, definition(), T0 + 10, "new", keep=1e6)
    assert st.requests == (*(f"r-{i}" for i in range(1, RECENT)), "new")
    assert st.requests_at[-1] == T0 + 10


def test_a_record_stored_before_request_times_existed_decodes() -> None:
    import orjson

    from durablefuture.codec.schedules import ScheduleCodec
    from durablefuture.codec.wire import Codec

    codec = ScheduleCodec(Codec())
    st = apply_update(make(), definition(), T0 + 10, "u-1", keep=400)
    data = codec.encode_state(st)
    assert codec.decode_state(data) == st
    obj = orjson.loads(data)
    del obj["state"]["requests_at"]
    old = codec.decode_state(orjson.dumps(obj))
    assert old.requests == ("create-1", "u-1") and old.requests_at == ()
    again = apply_update(old, definition(), T0 + 20, "u-2", keep=400)
    assert again.requests == ("create-1", "u-1", "u-2")  # the last RECENT are kept
    assert again.requests_at == (0.0, 0.0, T0 + 20)
