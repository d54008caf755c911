"""Workflow updates in the pure core (replay and decisions) and the Simulation."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.testing import Replayer, Simulation


def echo(v: int) -> int:
    return v


def cart() -> Generator[Any, Any, Any]:
    items: list[str] = []
    checked_out: list[bool] = []

    def add(item: str) -> int:
        if item == "boom":
            raise ValueError("cannot add boom")
        items.append(item)
        return len(items)

    def no_empty(item: str) -> None:
        if not item:
            raise ValueError("an item needs a name")

    df.workflow.set_update_handler("add", add, validator=no_empty)
    df.workflow.set_signal_handler("checkout", lambda: checked_out.append(True))
    yield df.wait_condition(lambda: bool(checked_out))
    return items


def kinds(sim: Simulation, wid: str) -> list[str]:
    return [type(e).__name__ for e in sim.run_of(wid).events]


def test_update_returns_the_handler_result_and_is_recorded() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    u1 = sim.update("c", "add", "apple")
    u2 = sim.update("c", "add", "pear")
    sim.run_workflow_task()
    assert sim.update_result("c", u1) == 1
    assert sim.update_result("c", u2) == 2
    sim.signal("c", "checkout")
    sim.run()
    assert sim.result("c") == ["apple", "pear"]
    assert kinds(sim, "c") == [
        "WorkflowStarted",
        "ConditionWaitStarted",
        "UpdateAccepted",
        "UpdateAccepted",
        "UpdateCompleted",
        "UpdateCompleted",
        "SignalReceived",
        "WorkflowCompleted",
    ]
    Replayer([cart]).replay(sim.run_of("c").events)


def test_validator_rejection_records_nothing() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    before = list(sim.run_of("c").events)
    with pytest.raises(df.UpdateFailedError, match=r"rejected by its validator.*needs a name"):
        sim.update("c", "add", "")
    with pytest.raises(df.UpdateFailedError, match=r"no update handler 'nope'.*'add'"):
        sim.update("c", "nope")
    assert sim.run_of("c").events == before


def test_handler_exception_fails_the_update_not_the_run() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    bad = sim.update("c", "add", "boom")
    sim.run_workflow_task()
    with pytest.raises(df.UpdateFailedError, match="cannot add boom"):
        sim.update_result("c", bad)
    fig = sim.update("c", "add", "fig")
    sim.run_workflow_task()
    assert sim.update_result("c", fig) == 1
    sim.signal("c", "checkout")
    sim.run()
    assert sim.result("c") == ["fig"]
    Replayer([cart]).replay(sim.run_of("c").events)


def test_same_update_id_is_accepted_once() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    sim.update("c", "add", "apple", update_id="same")
    sim.run_workflow_task()
    sim.update("c", "add", "apple", update_id="same")  # a retry: no second execution
    sim.run_workflow_task()
    assert sim.update_result("c", "same") == 1
    assert kinds(sim, "c").count("UpdateAccepted") == 1
    assert kinds(sim, "c").count("UpdateCompleted") == 1


def test_updates_before_the_handler_is_registered_wait_for_it() -> None:
    def late() -> Generator[Any, Any, Any]:
        yield df.activity(echo, 1)
        seen: list[int] = []
        df.workflow.set_update_handler("put", lambda v: seen.append(v) or len(seen))
        yield df.wait_condition(lambda: len(seen) >= 2)
        return seen

    sim = Simulation([late], [echo])
    sim.start(late, id="l")
    sim.run_workflow_task()
    # no handler yet: the validation path rejects ...
    with pytest.raises(df.UpdateFailedError, match="no update handler"):
        sim.update("l", "put", 1)
    # ... but accepted ones (validated by a worker with newer code) wait, in history order
    run_id = sim.run_of("l").state.run_id
    sim.deliver(inp.AcceptUpdate(run_id, "u1", "put", (10,)))
    sim.deliver(inp.AcceptUpdate(run_id, "u2", "put", (20,)))
    sim.run()
    assert sim.result("l") == [10, 20]
    assert (sim.update_result("l", "u1"), sim.update_result("l", "u2")) == (1, 2)
    Replayer([late]).replay(sim.run_of("l").events)


def test_replay_with_a_different_update_result_is_non_deterministic() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    uid = sim.update("c", "add", "apple")
    sim.run_workflow_task()
    events = sim.run_of("c").events
    done = next(e for e in events if isinstance(e, ev.UpdateCompleted))
    assert done.update_id == uid and done.result == 1
    changed = [
        e.__class__(**{**_fields(e), "result": 7}) if e is done else e  # recorded another result
        for e in events
    ]
    with pytest.raises(df.NonDeterminismError, match="update 'add'"):
        Replayer([cart]).replay(changed)


def _fields(e: ev.Event) -> dict[str, Any]:
    import attrs

    return attrs.asdict(e, recurse=False)


def test_generator_handlers_are_refused_at_registration() -> None:
    def gen_handler() -> Generator[Any, Any, Any]:
        yield df.sleep(1)

    def wf() -> Generator[Any, Any, Any]:
        df.workflow.set_update_handler("g", gen_handler)
        yield df.sleep(1)

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run_workflow_task()
    assert sim.status("w") == "failed"
    closed = sim.run_of("w").events[-1]
    assert isinstance(closed, ev.WorkflowFailed)
    assert "update handlers must be plain functions for now" in closed.failure.message


def test_validation_records_nothing_and_a_finished_run_takes_no_update() -> None:
    sim = Simulation([cart], [])
    sim.start(cart, id="c")
    sim.run_workflow_task()
    execution = sim._new_execution("cart")
    execution.feed(sim.run_of("c").events)
    execution.validate_update("add", ("x",))
    assert not execution.has_pending_commands
    sim.signal("c", "checkout")
    sim.run()
    with pytest.raises(df.UpdateFailedError, match="has finished"):
        sim.update("c", "add", "late")
