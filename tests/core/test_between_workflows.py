"""Signalling and cancelling other workflows from workflow code, in the pure core."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer, Simulation


def waiter() -> Generator[Any, Any, Any]:
    value = yield df.wait_signal("go")
    return value * 2


def parent(n: int) -> Generator[Any, Any, Any]:
    children = []
    for i in range(n):
        children.append((yield df.start(df.child_workflow(waiter, id=f"kid-{i}"))))
    for i, child in enumerate(children):
        yield child.signal("go", i + 1)
    return (yield df.all_of(*children))


def pinger(target: str) -> Generator[Any, Any, Any]:
    yield df.signal_workflow(target, "go", 21)
    yield df.signal_workflow("nobody-runs-this", "go", 1)  # dropped: no such workflow
    return "sent"


def canceller(target: str) -> Generator[Any, Any, Any]:
    yield df.cancel_workflow(target, "no longer needed")
    return "asked"


def test_a_parent_signals_the_children_it_started() -> None:
    sim = Simulation([parent, waiter], [])
    sim.start(parent, 3, id="p")
    sim.run()
    assert sim.result("p") == [2, 4, 6]
    events = sim.run_of("p").events
    sent = [e for e in events if isinstance(e, ev.ExternalWorkflowSignalled)]
    assert [(e.workflow_id, e.name, e.args) for e in sent] == [
        ("kid-0", "go", (1,)),
        ("kid-1", "go", (2,)),
        ("kid-2", "go", (3,)),
    ]
    kid = sim.run_of("kid-1").events
    (received,) = [e for e in kid if isinstance(e, ev.SignalReceived)]
    assert received.request_id == f"{sim.run_of('p').state.run_id}:{sent[1].seq}:signal"
    Replayer([parent, waiter]).replay(events)


def test_signal_and_cancel_another_workflow_by_id() -> None:
    sim = Simulation([pinger, canceller, waiter], [])
    sim.start(waiter, id="target")
    sim.start(pinger, "target", id="pinger")
    sim.run()
    assert sim.result("pinger") == "sent"
    assert sim.result("target") == 42
    sim.start(waiter, id="victim")
    sim.start(canceller, "victim", id="canceller")
    sim.run()
    assert sim.result("canceller") == "asked"
    assert sim.status("victim") == "cancelled"
    (asked,) = [e for e in sim.run_of("victim").events if isinstance(e, ev.CancelRequested)]
    assert asked.reason == "no longer needed"
    Replayer([pinger, canceller]).replay(sim.run_of("pinger").events)
    Replayer([pinger, canceller]).replay(sim.run_of("canceller").events)


def test_a_changed_target_is_a_divergence() -> None:
    sim = Simulation([pinger, waiter], [])
    sim.start(waiter, id="target")
    sim.start(pinger, "target", id="pinger")
    sim.run()
    history = list(sim.run_of("pinger").events)
    started = history[0]
    assert isinstance(started, ev.WorkflowStarted)
    from attrs import evolve

    history[0] = evolve(started, args=("elsewhere",))
    with pytest.raises(df.NonDeterminismError, match="signal_workflow 'target'"):
        Replayer([pinger]).replay(history)


def test_arguments_are_checked_where_the_call_is_made() -> None:
    with pytest.raises(df.InvalidArgumentError):
        df.signal_workflow("", "go")
    with pytest.raises(df.PayloadError):
        df.signal_workflow("w", "go", object())
    with pytest.raises(df.InvalidArgumentError):
        df.cancel_workflow("w", reason=3)  # type: ignore[arg-type]

    def activity_handle() -> Generator[Any, Any, Any]:
        task = yield df.start(df.sleep(1))
        yield task.signal("go")

    sim = Simulation([activity_handle], [])
    sim.start(activity_handle, id="w")
    sim.run()
    with pytest.raises(df.WorkflowFailedError, match="only a child workflow's handle"):
        sim.result("w")


def test_the_timeline_draws_instant_commands_as_points() -> None:
    from durablefuture.ui.timeline import build_timeline

    sim = Simulation([parent, waiter], [])
    sim.start(parent, 1, id="p")
    sim.run()
    events = sim.run_of("p").events
    timeline = build_timeline(events, now=events[-1].at)
    markers = timeline["markers"]
    assert isinstance(markers, list)
    labels = [m["label"] for m in markers if isinstance(m, dict) and m["kind"] == "command"]
    assert labels == ["signal_workflow 'kid-0' 'go'"]
    rows = timeline["rows"]
    assert isinstance(rows, list)
    assert [r["kind"] for r in rows if isinstance(r, dict)] == ["child"]


def test_a_signal_to_a_child_that_has_not_started_waits_for_its_start() -> None:
    from durablefuture.core.effects import CancelChildRun, DeliverInput
    from durablefuture.core.orchestration import effects_for
    from durablefuture.core.state import RunState
    from tests.core.helpers import History

    h = History("wf")
    h.add(
        ev.ChildWorkflowScheduled,
        based_on=1,
        seq=1,
        workflow_type="waiter",
        workflow_id="kid",
        task_queue="q",
    )
    signalled = h.add(
        ev.ExternalWorkflowSignalled, based_on=2, seq=2, workflow_id="kid", name="go", args=(1,)
    )
    cancelled = h.add(ev.CancellationRequested, based_on=3, seq=3, target=1)
    state = RunState.from_history(h.events)
    assert not [e for e in effects_for(state, [signalled]) if isinstance(e, DeliverInput)]
    assert not [e for e in effects_for(state, [cancelled]) if isinstance(e, CancelChildRun)]
    started = h.add(ev.ChildWorkflowStarted, seq=1, run_id="kid-run")
    state.apply([started])
    effects = effects_for(state, [started])
    (deliver,) = [e for e in effects if isinstance(e, DeliverInput)]
    assert deliver.workflow_id == "kid" and deliver.input.run_id == "kid-run"
    assert deliver.input.request_id == "run-1:2:signal"
    (cancel,) = [e for e in effects if isinstance(e, CancelChildRun)]
    assert (cancel.run_id, cancel.request_id) == ("kid-run", "run-1:3:cancel")
