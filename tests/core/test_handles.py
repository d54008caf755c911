"""Handles (``df.start``) and cancellation (``df.cancel``, ``any_of(cancel_losers=...)``) in
the pure core."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import RequestCancellation, ScheduleActivity, StartTimer
from durablefuture.testing import Replayer, Simulation
from durablefuture.ui.timeline import build_timeline
from tests.core.helpers import OPTS, History, execution

WAIT = df.ActivityOptions(cancellation_type=df.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)


def double(x: int) -> int:
    return 2 * x


def kinds(sim: Simulation, wid: str) -> list[str]:
    return [type(e).__name__ for e in sim.run_of(wid).events]


def run(wf: Any, *args: Any, acts: list[Any] | None = None) -> Simulation:
    sim = Simulation([wf], acts if acts is not None else [double])
    sim.start(wf, *args, id="w")
    sim.run()
    Replayer([wf]).replay(sim.run_of("w").events)
    return sim


def test_start_returns_a_handle_at_once_and_yielding_it_waits() -> None:
    def wf() -> Generator[Any, Any, Any]:
        a = yield df.start(df.activity(double, 2))
        b = yield df.start(df.activity(double, 3))
        seen = [a.kind, a.seq, b.seq, a.done]
        return [seen, (yield b), (yield a), (yield df.all_of(a, b)), a.done]

    sim = run(wf)
    assert sim.result("w") == [["activity", 1, 2, False], 6, 4, [4, 6], True]
    assert kinds(sim, "w").count("ActivityScheduled") == 2


def test_a_cancelled_timer_never_fires_and_its_handle_raises() -> None:
    def wf() -> Generator[Any, Any, Any]:
        t = yield df.start(df.sleep(100))
        yield df.cancel(t)
        yield df.cancel(t)  # twice: nothing more is recorded
        yield df.sleep(200)
        try:
            yield t
        except df.CancelledError as err:
            return [str(err), t.done]
        return "fired"

    sim = run(wf)
    assert sim.result("w") == ["timer #1 was cancelled", True]
    events = sim.run_of("w").events
    assert [e.seq for e in events if isinstance(e, ev.TimerFired)] == [3]
    (cancel,) = [e for e in events if isinstance(e, ev.CancellationRequested)]
    assert (cancel.seq, cancel.target) == (2, 1)
    rows = build_timeline(events, now=events[-1].at)
    timer = next(r for r in rows["rows"] if r["seq"] == 1)  # type: ignore[index, union-attr]
    assert timer["status"] == "cancelled" and timer["end"] == cancel.at  # type: ignore[index]
    assert any(m["kind"] == "cancel" for m in rows["markers"])  # type: ignore[index, union-attr]


def test_cancelling_an_activity_resolves_its_handle_by_its_cancellation_type() -> None:
    def wf(wait: bool) -> Generator[Any, Any, Any]:
        task = yield df.start(df.activity(double, 5, options=WAIT if wait else None))
        yield df.cancel(task)
        after_cancel = task.done
        try:
            value = yield task
        except df.ActivityError as err:
            return [after_cancel, "error", type(err.__cause__).__name__]
        return [after_cancel, "value", value]

    # TRY_CANCEL: the handle raises at once; the simulation's activity still ran
    assert run(wf, False).result("w") == [True, "error", "CancelledError"]
    # WAIT_CANCELLATION_COMPLETED: the handle waits for the activity's own end
    assert run(wf, True).result("w") == [False, "value", 10]


def test_cancelling_finished_work_records_nothing() -> None:
    def wf() -> Generator[Any, Any, Any]:
        task = yield df.start(df.activity(double, 1))
        value = yield task
        yield df.cancel(task)
        return value

    sim = run(wf)
    assert sim.result("w") == 2
    assert "CancellationRequested" not in kinds(sim, "w")


def test_any_of_cancels_the_losers_it_started_but_not_handles() -> None:
    def wf(cancel_losers: bool) -> Generator[Any, Any, Any]:
        kept = yield df.start(df.sleep(50))
        index, _ = yield df.any_of(
            df.sleep(1),
            df.all_of(df.activity(double, 1, options=WAIT), df.sleep(30)),
            kept,
            cancel_losers=cancel_losers,
        )
        yield kept  # the handle was left running: it still fires
        return index

    sim = Simulation([wf], [double])
    sim.start(wf, True, id="w")
    sim.run_workflow_task()
    sim.fire_next_timer()  # sleep(1) wins while the activity has not run yet
    sim.run()
    Replayer([wf]).replay(sim.run_of("w").events)
    assert sim.result("w") == 0
    events = sim.run_of("w").events
    targets = [e.target for e in events if isinstance(e, ev.CancellationRequested)]
    assert targets == [3, 4]  # the activity and the sleep(30); not the handle's timer (#1)
    assert 1 in [e.seq for e in events if isinstance(e, ev.TimerFired)]
    no_cancel = run(wf, False)
    assert "CancellationRequested" not in kinds(no_cancel, "w")


def test_runs_started_before_any_of_cancelled_its_losers_replay_without_it() -> None:
    # a history recorded by an older engine: no "cancel_losers" flag in WorkflowStarted
    def wf() -> Generator[Any, Any, Any]:
        index, _ = yield df.any_of(df.activity("slow"), df.sleep(30))
        return [index, (yield df.activity("next"))]

    h = History("wf")
    assert h.events[0].flags == ()  # type: ignore[attr-defined]
    h.add(ev.ActivityScheduled, based_on=1, seq=1, name="slow", args=(), options=OPTS)
    h.add(ev.TimerStarted, based_on=1, seq=2, duration=30, fire_at=h.now + 30)
    h.add(ev.TimerFired, seq=2)
    commands = execution(wf).feed(h.events).commands
    assert [type(c) for c in commands] == [ScheduleActivity]
    flagged = History("wf", flags=ev.RUN_FLAGS)
    flagged.events[1:] = [e for e in h.events[1:]]
    commands = execution(wf).feed(flagged.events).commands
    assert commands[0] == RequestCancellation(3, 1)
    assert isinstance(commands[1], ScheduleActivity)


def test_start_and_cancel_validate_their_arguments() -> None:
    with pytest.raises(df.InvalidArgumentError, match=r"df\.start takes"):
        df.start(df.wait_signal("x"))  # type: ignore[arg-type]
    with pytest.raises(df.InvalidArgumentError, match=r"df\.cancel takes a handle"):
        df.cancel(df.sleep(1))  # type: ignore[arg-type]
    with pytest.raises(df.InvalidArgumentError, match="cancellation_type"):
        df.ActivityOptions(cancellation_type="later")


def test_a_handle_of_another_run_is_refused() -> None:
    stolen: list[df.Handle] = []

    def first() -> Generator[Any, Any, Any]:
        stolen.append((yield df.start(df.sleep(1))))
        return 1

    def second() -> Generator[Any, Any, Any]:
        yield df.cancel(stolen[0])

    run(first)
    sim = Simulation([second], [])
    sim.start(second, id="w")
    sim.run()
    with pytest.raises(df.WorkflowFailedError, match="a handle this run did not start"):
        sim.result("w")


def test_the_new_commands_are_recorded_as_their_events() -> None:
    def wf() -> Generator[Any, Any, Any]:
        t = yield df.start(df.sleep(5))
        yield df.cancel(t)
        return None

    act = execution(wf).feed(History("wf", flags=ev.RUN_FLAGS).events)
    assert act.commands[0] == StartTimer(1, 5, act.commands[0].start)  # type: ignore[union-attr]
    assert act.commands[1] == RequestCancellation(2, 1)
