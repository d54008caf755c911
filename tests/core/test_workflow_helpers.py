"""df.workflow helpers: patched()/deprecate_patch(), now(), random(), uuid4()."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import durablefuture as df
from durablefuture.core.commands import CompleteWorkflow, RecordMarker, ScheduleActivity
from durablefuture.core.options import ActivityOptions
from tests.core.helpers import T0, Driver, History, primitive, replay

DEFAULT_OPTS = ActivityOptions().resolved("q")


# ------------------------------------------------------------------ patching


def old_code() -> Generator[Any, Any, Any]:
    a = yield df.activity("step1")
    b = yield df.activity("old_step2", a)
    return b


def new_code() -> Generator[Any, Any, Any]:
    a = yield df.activity("step1")
    if df.workflow.patched("use-new-step2"):
        b = yield df.activity("new_step2", a)
    else:
        b = yield df.activity("old_step2", a)
    return b


def deprecated_code() -> Generator[Any, Any, Any]:
    a = yield df.activity("step1")
    df.workflow.deprecate_patch("use-new-step2")
    b = yield df.activity("new_step2", a)
    return b


def test_a_new_run_takes_the_new_branch_and_records_a_marker() -> None:
    d = Driver(new_code)
    d.step()
    d.h.completed(1, "A")
    act = d.step()
    assert act.commands == (
        RecordMarker(2, "use-new-step2"),
        ScheduleActivity(3, "new_step2", ("A",), DEFAULT_OPTS),
    )
    d.h.completed(3, "B")
    assert d.step().commands == (CompleteWorkflow("B"),)
    # replaying the new run: the marker is found, the new branch taken again
    assert d.full_replay().commands == ()


def test_an_old_run_replays_the_old_branch() -> None:
    d = Driver(old_code)
    d.step()
    d.h.completed(1, "A")
    d.step()
    d.h.completed(2, "B")
    d.step()
    act = replay(new_code, d.h.events)  # completed old run, new code: no error
    assert act.commands == () and act.finished


def test_an_old_run_still_in_flight_continues_on_the_old_branch() -> None:
    h = History("old_code")
    h.activity(1, "step1")
    h.completed(1, "A")
    h.activity(2, "old_step2", "A")  # recorded by the old code, not yet finished
    act = replay(new_code, h.events)
    assert act.commands == ()
    h.completed(2, "B")
    assert replay(new_code, h.events).commands == (CompleteWorkflow("B"),)


def test_an_old_run_reaching_the_patch_point_for_the_first_time_takes_the_new_branch() -> None:
    h = History("old_code")
    h.activity(1, "step1")
    h.completed(1, "A")  # the old code never decided past here: this is the frontier
    act = replay(new_code, h.events)
    assert act.commands == (
        RecordMarker(2, "use-new-step2"),
        ScheduleActivity(3, "new_step2", ("A",), DEFAULT_OPTS),
    )


def test_patched_is_stable_within_a_run_and_records_one_marker() -> None:
    def twice() -> Generator[Any, Any, Any]:
        first = df.workflow.patched("p")
        yield df.sleep(1)
        second = df.workflow.patched("p")
        return [first, second]

    d = Driver(twice)
    assert primitive(d.step().commands)[0] == RecordMarker(1, "p")
    d.h.fired(2)
    assert d.step().commands == (CompleteWorkflow([True, True]),)
    assert d.full_replay().commands == ()


def test_deprecate_patch_accepts_runs_with_the_marker() -> None:
    d = Driver(new_code)
    d.step()
    d.h.completed(1, "A")
    d.step()  # marker at seq 2, new_step2 at seq 3
    act = replay(deprecated_code, d.h.events)
    assert act.commands == ()
    d.h.completed(3, "B")
    assert replay(deprecated_code, d.h.events).commands == (CompleteWorkflow("B"),)


def test_deprecate_patch_records_nothing_for_new_runs() -> None:
    d = Driver(deprecated_code)
    d.step()
    d.h.completed(1, "A")
    assert d.step().commands == (ScheduleActivity(2, "new_step2", ("A",), DEFAULT_OPTS),)
    d.h.completed(2, "B")
    assert d.step().commands == (CompleteWorkflow("B"),)
    assert d.full_replay().commands == ()


def test_removing_patched_without_deprecating_is_a_mismatch() -> None:
    import pytest

    def removed() -> Generator[Any, Any, Any]:
        a = yield df.activity("step1")
        b = yield df.activity("new_step2", a)
        return b

    d = Driver(new_code)
    d.step()
    d.h.completed(1, "A")
    d.step()
    with pytest.raises(df.NonDeterminismError) as info:
        replay(removed, d.h.events)
    assert info.value.recorded == "patched 'use-new-step2'"


# ------------------------------------------------------------------ now / random / uuid4


def observer() -> Generator[Any, Any, Any]:
    seen = [df.workflow.now().isoformat(), df.workflow.random(), str(df.workflow.uuid4())]
    yield df.activity("observe", *seen)
    seen2 = [df.workflow.now().isoformat(), df.workflow.random(), str(df.workflow.uuid4())]
    yield df.activity("observe", *seen2)
    return None


def run_observer(run_id: str, completed_at: float) -> Driver:
    d = Driver(observer, run_id=run_id)
    d.step()
    d.h.tick(completed_at - d.h.now)
    d.h.completed(1)
    d.step()
    return d


def test_now_is_the_time_of_the_event_being_processed() -> None:
    d = run_observer("r-1", T0 + 42.5)
    first, second = (e for e in d.h.events if type(e).__name__ == "ActivityScheduled")
    assert first.args[0] == datetime.fromtimestamp(T0, tz=UTC).isoformat()  # type: ignore[attr-defined]
    assert second.args[0] == datetime.fromtimestamp(T0 + 42.5, tz=UTC).isoformat()  # type: ignore[attr-defined]


def test_random_and_uuid4_are_deterministic_per_run_and_differ_between_runs() -> None:
    a = run_observer("r-1", T0 + 1)
    b = run_observer("r-1", T0 + 1)
    c = run_observer("r-2", T0 + 1)

    def values(d: Driver) -> list[Any]:
        return [e.args for e in d.h.events if type(e).__name__ == "ActivityScheduled"]  # type: ignore[attr-defined]

    assert values(a) == values(b)
    assert values(a) != values(c)
    (_, r1, u1), (_, r2, u2) = values(a)
    assert 0.0 <= r1 < 1.0 and r1 != r2
    assert uuid.UUID(u1).version == 4 and u1 != u2
    # a replay of the recorded history sees the same values (args are compared)
    assert a.full_replay().commands == ()


def test_is_replaying_is_true_only_for_decisions_already_in_history() -> None:
    flags: list[bool] = []

    def wf() -> Generator[Any, Any, Any]:
        flags.append(df.workflow.is_replaying())
        yield df.sleep(1)
        flags.append(df.workflow.is_replaying())
        yield df.sleep(1)

    d = Driver(wf)
    d.step()
    d.h.fired(1)
    d.step()
    assert flags == [False, False]
    flags.clear()
    d.full_replay()
    assert flags == [True, True]
    flags.clear()
    d.h.fired(2)
    d.full_replay()
    assert flags == [True, True]
