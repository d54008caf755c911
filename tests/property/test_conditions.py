"""``df.wait_condition`` under hypothesis-chosen interleavings of signals, results and timers.

(i)  Replaying any prefix of the recorded history re-issues exactly the recorded commands and
     every command decided within the prefix (the same decisions, at the same points).
(ii) A worker that never caches (every workflow task replays from scratch) records the same
     history and result as one that does.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from hypothesis import HealthCheck, given, settings
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
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@df.defn(name="echo")
def echo(v: int) -> int:
    return v


@df.defn(name="gate")
def gate(plan: list[dict[str, Any]]) -> Generator[Any, Any, Any]:
    got: list[int] = []
    df.workflow.set_signal_handler("approve", got.append)
    out: list[Any] = []
    for step in plan:
        need = step["need"]
        if "act" in step:
            index, value = yield df.any_of(
                df.wait_condition(lambda n=need: len(got) >= n), df.activity(echo, step["act"])
            )
            out.append(["any", index, value, len(got)])
        else:
            ok = yield df.wait_condition(lambda n=need: len(got) >= n, timeout=step["timeout"])
            out.append(["wait", ok, len(got)])
    return out


steps = st.one_of(
    st.fixed_dictionaries(
        {"need": st.integers(0, 4), "timeout": st.one_of(st.none(), st.sampled_from([1.0, 5.0]))}
    ).map(lambda d: d if d["timeout"] is not None or d["need"] <= 3 else {**d, "timeout": 1.0}),
    st.fixed_dictionaries({"need": st.integers(0, 4), "act": st.integers(0, 9)}),
)
plans = st.lists(steps, min_size=1, max_size=5)


def drive(sim: Simulation, choices: list[int] | None, data: st.DataObject | None) -> list[int]:
    """Run to the end; each step either sends a signal or runs one piece of pending work.
    With ``choices`` the steps are replayed; otherwise hypothesis draws them."""
    made: list[int] = []
    sent = 0
    for _ in range(500):
        options = sim.pending()
        signals_left = sent < 6 and not sim.is_closed("g")
        if not options and not signals_left:
            break
        n = len(options) + (1 if signals_left else 0)
        if choices is not None:
            i = choices[len(made)]
        else:
            assert data is not None
            i = data.draw(st.integers(0, n - 1))
        made.append(i)
        if i == len(options):
            sent += 1
            sim.signal("g", "approve", sent)
            continue
        kind, _, idx = options[i].partition(":")
        if kind == "wft":
            sim.run_workflow_task(int(idx))
        elif kind == "act":
            sim.run_activity_task(int(idx))
        else:
            sim.fire_next_timer()
    return made


def new_sim(plan: list[dict[str, Any]], *, cache: bool = True) -> Simulation:
    sim = Simulation([gate], [echo], cache=cache, start_time=1000.0)
    sim.start("gate", plan, id="g")
    return sim


@SETTINGS
@given(plan=plans, data=st.data())
def test_replaying_any_prefix_makes_the_same_decisions(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    sim = new_sim(plan)
    drive(sim, None, data)
    history = sim.run_of("g").events
    by_seq = {e.seq: e for e in history if isinstance(e, ev.COMMAND_EVENTS)}
    definition = WorkflowDefinition.from_fn(gate)
    for k in range(1, len(history) + 1):
        act = WorkflowExecution(definition, sim.payloads).feed(history[:k])
        yielded = set()
        for cmd in act.commands:
            if isinstance(cmd, CompleteWorkflow | FailWorkflow):
                if isinstance(history[-1], ev.WorkflowCompleted) and isinstance(
                    cmd, CompleteWorkflow
                ):
                    assert cmd.result == history[-1].result
                continue
            yielded.add(cmd.seq)
            recorded = by_seq.get(cmd.seq)
            if recorded is not None:
                assert recorded.event_id > k
                assert matches(recorded, cmd), (k, cmd, recorded)
        for event in history[k:]:
            if isinstance(event, ev.COMMAND_EVENTS) and event.based_on <= k:
                assert event.seq in yielded, f"prefix {k}: #{event.seq} decided by then"
    if sim.is_closed("g"):
        full = WorkflowExecution(definition, sim.payloads).feed(history)
        assert full.finished and full.commands == ()


@SETTINGS
@given(plan=plans, data=st.data())
def test_a_worker_without_cache_records_the_same_history(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    original = new_sim(plan)
    choices = drive(original, None, data)
    again = new_sim(plan, cache=False)
    drive(again, choices, None)
    assert again.run_of("g").events == original.run_of("g").events
    assert again.status("g") == original.status("g")
