"""Updates under hypothesis-chosen interleavings of updates, signals, results and timers.

(i)  Replaying any prefix of the recorded history re-issues exactly the recorded commands
     (update completions, and the activities of a generator handler, included) and every
     command decided within the prefix.
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
from durablefuture.testing import Simulation
from tests.property.programs import check_every_prefix, check_without_cache, drive_with_inputs

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

    def slow_add(v: int) -> Generator[Any, Any, Any]:
        # a generator handler: its activity runs beside the workflow code
        got = yield df.activity(echo, v)
        total[0] += got
        return total[0]

    out: list[Any] = []
    df.workflow.set_signal_handler("stop", stops.append)
    df.workflow.set_update_handler("slow_add", slow_add)
    for r in range(rounds):
        got = yield df.activity(echo, r)
        if r == 1:  # updates accepted before this point wait for the handler
            df.workflow.set_update_handler("add", add, validator=positive)
        ok = yield df.wait_condition(lambda r=r: len(stops) > r or total[0] > 20, timeout=5.0)
        out.append([got, ok, total[0]])
    return out


def drive(sim: Simulation, choices: list[int] | None, data: st.DataObject | None) -> list[int]:
    def send(kind: int, n: int) -> None:
        if kind == 0:
            sim.signal("t", "stop", n)
        elif kind == 3:
            with contextlib.suppress(df.UpdateFailedError):  # the run may have finished
                sim.update("t", "slow_add", n, update_id=f"u{n}")
        else:  # an update: 7 fails in the handler, 0 is rejected by the validator
            value = [n, 7, 0][(n + kind) % 3]
            with contextlib.suppress(df.UpdateFailedError):  # rejected: nothing recorded
                sim.update("t", "add", value, update_id=f"u{n}")

    return drive_with_inputs(
        sim, "t", send, kinds=4, most=8, max_steps=400, choices=choices, data=data
    )


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
    check_every_prefix(sim, "t", tally)
    # every accepted update completes exactly once while the run goes on
    history = sim.run_of("t").events
    accepted = [e.update_id for e in history if isinstance(e, ev.UpdateAccepted)]
    completed = [e.update_id for e in history if isinstance(e, ev.UpdateCompleted)]
    assert len(set(accepted)) == len(accepted) and len(set(completed)) == len(completed)
    assert set(completed) <= set(accepted)
    note_event(f"updates completed: {min(len(completed), 3)}+")


@SETTINGS
@given(data=st.data())
def test_a_worker_without_cache_records_the_same_updates(data: st.DataObject) -> None:
    original, again = check_without_cache(lambda cache: new_sim(cache=cache), drive, data, "t")
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
