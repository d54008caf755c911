"""Updates under hypothesis-chosen interleavings of updates, signals, results and timers.

(i)  Replaying any prefix of the recorded history re-issues exactly the recorded commands
     (update completions included) and every command decided within the prefix.
(ii) A worker that never caches (every workflow task replays from scratch) records the same
     history and the same update results as one that does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import CompleteWorkflow, FailWorkflow
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.replay import WorkflowExecution
from durablefuture.core.vocabulary import matches
from durablefuture.testing import Simulation

SETTINGS = settings(
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@df.defn(name="echo")
def echo(v: int) -> int:
    return v


@df.defn(name="tally")
def tally(rounds: int) -> Generator[Any, Any, Any]:
    total = [0]
    stops: list[int] = []

    def add(v: int) -> int:
        if v == 7:
            raise ValueError("seven is refused by the handler")
        total[0] += v
        return total[0]

    def positive(v: int) -> None:
        if v <= 0:
            raise ValueError("only positive values")

    out: list[Any] = []
    df.workflow.set_signal_handler("stop", stops.append)
    for r in range(rounds):
        got = yield df.activity(echo, r)
        if r == 1:  # updates accepted before this point wait for the handler
            df.workflow.set_update_handler("add", add, validator=positive)
        ok = yield df.wait_condition(lambda r=r: len(stops) > r or total[0] > 20, timeout=5.0)
        out.append([got, ok, total[0]])
    return out


def drive(sim: Simulation, choices: list[int] | None, data: st.DataObject | None) -> list[int]:
    made: list[int] = []
    sent = 0
    for _ in range(400):
        options = sim.pending()
        inputs_left = sent < 8 and not sim.is_closed("t")
        if not options and not inputs_left:
            break
        n = len(options) + (3 if inputs_left else 0)
        if choices is not None:
            i = choices[len(made)]
        else:
            assert data is not None
            i = data.draw(st.integers(0, n - 1))
        made.append(i)
        if i >= len(options):
            sent += 1
            extra = i - len(options)
            if extra == 0:
                sim.signal("t", "stop", sent)
            else:  # an update: 7 fails in the handler, 0 is rejected by the validator
                value = [sent, 7, 0][(sent + extra) % 3]
                with contextlib.suppress(df.UpdateFailedError):  # rejected: nothing recorded
                    sim.update("t", "add", value, update_id=f"u{sent}")
            continue
        kind, _, idx = options[i].partition(":")
        if kind == "wft":
            sim.run_workflow_task(int(idx))
        elif kind == "act":
            sim.run_activity_task(int(idx))
        else:
            sim.fire_next_timer()
    return made


def new_sim(*, cache: bool = True) -> Simulation:
    sim = Simulation([tally], [echo], cache=cache, start_time=1000.0)
    sim.start("tally", 3, id="t")
    return sim


def outcomes(sim: Simulation) -> dict[str, object]:
    found: dict[str, object] = {}
    for e in sim.run_of("t").events:
        if isinstance(e, ev.UpdateAccepted):
            try:
                found[e.update_id] = sim.update_result("t", e.update_id)
            except (df.UpdateFailedError, LookupError) as exc:
                found[e.update_id] = type(exc).__name__
    return found


@SETTINGS
@given(data=st.data())
def test_replaying_any_prefix_with_updates_makes_the_same_decisions(data: st.DataObject) -> None:
    sim = new_sim()
    drive(sim, None, data)
    history = sim.run_of("t").events
    by_seq = {e.seq: e for e in history if isinstance(e, ev.COMMAND_EVENTS)}
    definition = WorkflowDefinition.from_fn(tally)
    for k in range(1, len(history) + 1):
        act = WorkflowExecution(definition, sim.payloads).feed(history[:k])
        yielded = set()
        for cmd in act.commands:
            if isinstance(cmd, CompleteWorkflow | FailWorkflow):
                continue
            yielded.add(cmd.seq)
            recorded = by_seq.get(cmd.seq)
            if recorded is not None:
                assert recorded.event_id > k
                assert matches(recorded, cmd), (k, cmd, recorded)
        for event in history[k:]:
            if isinstance(event, ev.COMMAND_EVENTS) and event.based_on <= k:
                assert event.seq in yielded, f"prefix {k}: #{event.seq} decided by then"
    # every accepted update completes exactly once while the run goes on
    accepted = [e.update_id for e in history if isinstance(e, ev.UpdateAccepted)]
    completed = [e.update_id for e in history if isinstance(e, ev.UpdateCompleted)]
    assert len(set(accepted)) == len(accepted) and len(set(completed)) == len(completed)
    assert set(completed) <= set(accepted)
    note_event(f"updates completed: {min(len(completed), 3)}+")
    if sim.is_closed("t"):
        full = WorkflowExecution(definition, sim.payloads).feed(history)
        assert full.finished and full.commands == ()


@SETTINGS
@given(data=st.data())
def test_a_worker_without_cache_records_the_same_updates(data: st.DataObject) -> None:
    original = new_sim()
    choices = drive(original, None, data)
    again = new_sim(cache=False)
    drive(again, choices, None)
    assert again.run_of("t").events == original.run_of("t").events
    assert outcomes(again) == outcomes(original)


def test_the_handler_failure_and_validator_rejection_are_both_reached() -> None:
    # the strategy above covers both paths: check them once, deterministically
    sim = new_sim()
    sim.run_workflow_task()
    sim.run_activity_task()
    sim.run_workflow_task()
    with pytest.raises(df.UpdateFailedError, match="no update handler 'add'"):
        sim.update("t", "add", 1)
    sim.signal("t", "stop", 1)
    sim.run_workflow_task()
    sim.run_activity_task()
    sim.run_workflow_task()  # the handler is registered now
    with pytest.raises(df.UpdateFailedError, match="only positive"):
        sim.update("t", "add", 0)
    bad = sim.update("t", "add", 7)
    sim.run_workflow_task()
    with pytest.raises(df.UpdateFailedError, match="seven is refused"):
        sim.update_result("t", bad)
