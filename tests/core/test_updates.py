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
    # nor a workflow task: the code has decided on everything recorded (the retry's batch,
    # derived again, implies only what the run needs now)
    assert sim.workflow_tasks == []
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


def test_a_generator_handler_yields_commands_and_returns_the_result() -> None:
    def priced() -> Generator[Any, Any, Any]:
        lines: list[int] = []
        stop: list[bool] = []

        def add(v: int) -> Generator[Any, Any, Any]:
            price = yield df.activity(echo, v * 10)
            yield df.sleep(5)
            lines.append(price)
            return sum(lines)

        df.workflow.set_update_handler("add", add)
        df.workflow.set_signal_handler("stop", lambda: stop.append(True))
        yield df.wait_condition(lambda: bool(stop))
        return lines

    sim = Simulation([priced], [echo])
    sim.start(priced, id="p")
    sim.run_workflow_task()
    first = sim.update("p", "add", 1)
    second = sim.update("p", "add", 2)
    sim.run()
    assert (sim.update_result("p", first), sim.update_result("p", second)) == (10, 30)
    sim.signal("p", "stop")
    sim.run()
    assert sim.result("p") == [10, 20]
    history = sim.run_of("p").events
    assert kinds(sim, "p").count("ActivityScheduled") == 2
    assert kinds(sim, "p").count("TimerStarted") == 2
    Replayer([priced]).replay(history)
    again = Simulation([priced], [echo], cache=False)
    again.start(priced, id="p")
    again.run_workflow_task()
    again.update("p", "add", 1)
    again.update("p", "add", 2)
    again.run()
    again.signal("p", "stop")
    again.run()
    assert again.run_of("p").events == history


def test_async_handlers_and_generator_validators_are_refused_at_registration() -> None:
    async def async_handler() -> None:
        return None

    def gen_validator() -> Generator[Any, Any, Any]:
        yield df.sleep(1)

    def wf(which: str) -> Generator[Any, Any, Any]:
        if which == "handler":
            df.workflow.set_update_handler("a", async_handler)
        else:
            df.workflow.set_update_handler("g", lambda: None, validator=gen_validator)
        yield df.sleep(1)

    for which, expected in (
        ("handler", "must be a plain or generator function"),
        ("validator", "must be a plain function"),
    ):
        sim = Simulation([wf], [])
        sim.start(wf, which, id=which)
        sim.run_workflow_task()
        closed = sim.run_of(which).events[-1]
        assert isinstance(closed, ev.WorkflowFailed)
        assert expected in closed.failure.message


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


def test_a_generator_handler_cannot_continue_the_run_as_new() -> None:
    def wf() -> Generator[Any, Any, Any]:
        stop: list[bool] = []

        def bump(catch: bool) -> Generator[Any, Any, Any]:
            try:
                yield df.continue_as_new()
            except df.DurableFutureError as exc:
                if not catch:
                    raise
                met = yield df.wait_condition(lambda: True)  # met at once: the handler runs on
                return f"refused ({exc}), met={met}"
            return "continued"

        df.workflow.set_update_handler("bump", bump)
        df.workflow.set_signal_handler("stop", lambda: stop.append(True))
        yield df.wait_condition(lambda: bool(stop))
        return "done"

    sim = Simulation([wf], [])
    sim.start(wf, id="w")
    sim.run_workflow_task()
    caught = sim.update("w", "bump", True)
    sim.run_workflow_task()
    assert sim.update_result("w", caught) == (
        "refused (an update handler cannot continue the run as new: let the workflow code "
        "do it), met=True"
    )
    raised = sim.update("w", "bump", False)
    sim.run_workflow_task()
    with pytest.raises(df.UpdateFailedError, match="cannot continue the run as new"):
        sim.update_result("w", raised)
    sim.signal("w", "stop")
    sim.run()
    assert sim.result("w") == "done"
    assert "WorkflowContinuedAsNew" not in kinds(sim, "w")
    Replayer([wf]).replay(sim.run_of("w").events)
