"""``df.wait_condition`` and ``df.workflow.set_signal_handler`` in the pure core."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer, Simulation


def echo(v: int) -> int:
    return v


def approvals(needed: int) -> Generator[Any, Any, Any]:
    got: list[str] = []
    df.workflow.set_signal_handler("approve", got.append)
    ok = yield df.wait_condition(lambda: len(got) >= needed, timeout=timedelta(days=2))
    return {"ok": ok, "got": got}


def kinds(sim: Simulation, wid: str) -> list[str]:
    return [type(e).__name__ for e in sim.run_of(wid).events]


def test_condition_met_by_signals_returns_true() -> None:
    sim = Simulation([approvals], [])
    sim.start(approvals, 2, id="a")
    sim.run_workflow_task()
    sim.signal("a", "approve", "ann")
    sim.run_workflow_task()
    assert not sim.is_closed("a")  # one approval is not enough
    sim.signal("a", "approve", "bob")
    sim.run_workflow_task()
    assert sim.result("a") == {"ok": True, "got": ["ann", "bob"]}
    sim.run()
    assert kinds(sim, "a") == [
        "WorkflowStarted",
        "ConditionWaitStarted",
        "SignalReceived",
        "SignalReceived",
        "CancellationRequested",  # its timeout timer is not needed any more: it never fires
        "WorkflowCompleted",
    ]
    (wait,) = [e for e in sim.run_of("a").events if isinstance(e, ev.ConditionWaitStarted)]
    assert wait.timeout == 2 * 86400 and wait.deadline == wait.at + 2 * 86400
    (cancel,) = [e for e in sim.run_of("a").events if isinstance(e, ev.CancellationRequested)]
    assert cancel.target == wait.seq
    Replayer([approvals]).replay(sim.run_of("a").events)


def test_condition_not_met_in_time_returns_false() -> None:
    sim = Simulation([approvals], [])
    sim.start(approvals, 2, id="a")
    sim.run_workflow_task()
    sim.signal("a", "approve", "ann")
    sim.run()
    assert sim.result("a") == {"ok": False, "got": ["ann"]}
    assert kinds(sim, "a")[-2:] == ["TimerFired", "WorkflowCompleted"]
    Replayer([approvals]).replay(sim.run_of("a").events)


def test_signals_before_the_handler_is_registered_are_handed_to_it_in_order() -> None:
    def late(needed: int) -> Generator[Any, Any, Any]:
        yield df.activity(echo, 1)
        got: list[str] = []
        df.workflow.set_signal_handler("approve", got.append)
        ok = yield df.wait_condition(lambda: len(got) >= needed, timeout=10)
        return {"ok": ok, "got": got}

    sim = Simulation([late], [echo])
    sim.start(late, 2, id="a")
    sim.run_workflow_task()
    sim.signal("a", "approve", "ann")
    sim.signal("a", "approve", "bob")
    sim.run()
    assert sim.result("a") == {"ok": True, "got": ["ann", "bob"]}
    # the condition held when yielded: nothing was recorded for it
    assert "ConditionWaitStarted" not in kinds(sim, "a")
    Replayer([late]).replay(sim.run_of("a").events)


def test_a_condition_without_timeout_waits_for_ever() -> None:
    def wf() -> Generator[Any, Any, Any]:
        box: list[int] = []
        df.workflow.set_signal_handler("put", box.append)
        assert (yield df.wait_condition(lambda: bool(box))) is True
        return box[0]

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run()
    assert not sim.is_closed("w")
    (wait,) = [e for e in sim.run_of("w").events if isinstance(e, ev.ConditionWaitStarted)]
    assert wait.timeout is None and wait.deadline is None
    sim.signal("w", "put", 7)
    sim.run()
    assert sim.result("w") == 7


def test_a_condition_is_checked_after_every_delivered_result() -> None:
    # the second approval arrives in the same workflow task as an activity result: the
    # condition holds after the signal, so the any_of takes the condition and the code moves on
    def wf() -> Generator[Any, Any, Any]:
        got: list[str] = []
        df.workflow.set_signal_handler("approve", got.append)
        index, value = yield df.any_of(
            df.wait_condition(lambda: len(got) >= 1), df.activity(echo, 5)
        )
        return [index, value, got]

    sim = Simulation([wf], [echo])
    sim.start(wf, id="w")
    sim.run_workflow_task()
    sim.signal("w", "approve", "ann")
    sim.run()
    assert sim.result("w") == [0, True, ["ann"]]
    Replayer([wf]).replay(sim.run_of("w").events)


def test_a_predicate_that_raises_raises_at_the_yield() -> None:
    def wf() -> Generator[Any, Any, Any]:
        box: list[int] = []
        df.workflow.set_signal_handler("put", box.append)
        try:
            yield df.wait_condition(lambda: 1 / box[0] > 0 if box else False)
        except ZeroDivisionError:
            return "caught"
        return "no"

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run()
    sim.signal("w", "put", 0)
    sim.run()
    assert sim.result("w") == "caught"
    Replayer([wf]).replay(sim.run_of("w").events)


def test_a_signal_handler_that_raises_fails_the_run() -> None:
    def boom(_: object) -> None:
        raise ValueError("bad approval")

    def wf() -> Generator[Any, Any, Any]:
        df.workflow.set_signal_handler("approve", boom)
        yield df.wait_condition(lambda: False)

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run()
    sim.signal("w", "approve", 1)
    sim.run()
    with pytest.raises(df.WorkflowFailedError, match="bad approval"):
        sim.result("w")


def test_a_waiting_wait_signal_takes_the_signal_before_the_handler() -> None:
    def wf() -> Generator[Any, Any, Any]:
        handled: list[str] = []
        df.workflow.set_signal_handler("s", handled.append)
        first = yield df.wait_signal("s")
        ok = yield df.wait_condition(lambda: len(handled) == 1, timeout=10)
        return [first, handled, ok]

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run_workflow_task()
    sim.signal("w", "s", "a")
    sim.run_workflow_task()
    sim.signal("w", "s", "b")
    sim.run()
    assert sim.result("w") == ["a", ["b"], True]


def test_wait_condition_validates_its_arguments() -> None:
    with pytest.raises(df.InvalidArgumentError, match="takes a function"):
        df.wait_condition(True)  # type: ignore[arg-type]
    with pytest.raises(df.InvalidArgumentError):
        df.wait_condition(lambda: True, timeout=-1)


def test_the_timeline_shows_a_condition_wait_from_its_vocabulary_entry() -> None:
    from durablefuture.ui.timeline import build_timeline

    sim = Simulation([approvals], [])
    sim.start(approvals, 2, id="a")
    sim.run()
    events = sim.run_of("a").events
    rows = build_timeline(events, now=events[-1].at)["rows"]
    assert isinstance(rows, list)
    (row,) = rows
    assert isinstance(row, dict)
    assert row["kind"] == "command"
    assert row["name"] == "wait_condition timeout=172800s"
    assert row["status"] == "timed_out"
    assert row["end"] == events[-2].at


def test_runs_started_without_the_flag_keep_the_timer_of_a_met_condition() -> None:
    from tests.core.helpers import History, execution

    h = History("approvals", 1)  # recorded by an engine without "condition_timers"
    h.add(ev.ConditionWaitStarted, based_on=1, seq=1, timeout=10.0, deadline=h.now + 10)
    h.add(ev.SignalReceived, name="approve", args=("ann",))
    activation = execution(approvals).feed(h.events)
    assert [type(c).__name__ for c in activation.commands] == ["CompleteWorkflow"]
