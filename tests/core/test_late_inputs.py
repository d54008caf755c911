"""An input for "the current run" of a workflow id, sent on a workflow's decision, is not
for a run started after that decision: derived again late (after JetStream's duplicate
window), it would reach a newer run of the id whose history cannot tell it a duplicate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core._command_effects import signal_input
from durablefuture.core.effects import DeliverInput
from durablefuture.core.orchestration import APPLIED, IGNORED, decide, effects_for, start_events
from durablefuture.core.state import RunState

MARGIN = inp.DECIDED_AT_MARGIN


def run_started_at(at: float, workflow_id: str = "t", run_id: str = "run-1") -> RunState:
    request = inp.StartWorkflowRequest(
        workflow_id=workflow_id, workflow_type="w", task_queue="q", request_id=f"req-{run_id}"
    )
    events = start_events(request, namespace="ns", run_id=run_id, now=at)
    first = events[0]
    assert isinstance(first, ev.WorkflowStarted)
    state = RunState(started=first)
    state.apply(events, "start")
    return state


def late_input(kind: str, decided_at: float | None) -> inp.SignalWorkflow | inp.RequestCancel:
    if kind == "signal":
        return inp.SignalWorkflow("run-1", "go", "src:1:signal", (1,), decided_at)
    return inp.RequestCancel("run-1", "src:1:cancel", "stop", decided_at)


def test_inputs_for_the_current_run_carry_the_time_of_their_decision() -> None:
    source = run_started_at(10.0, "src", "src-run")
    signalled = ev.ExternalWorkflowSignalled(2, 12.5, 1, 1, "t", "go", (1,))
    cancelled = ev.ExternalCancelRequested(3, 13.5, 1, 2, "t", "stop")
    source.apply([signalled, cancelled], "wtc:1")
    effects = [
        e for e in effects_for(source, [signalled, cancelled]) if isinstance(e, DeliverInput)
    ]
    assert [(e.input.run_id, e.input.decided_at) for e in effects] == [("", 12.5), ("", 13.5)]


@given(
    kind=st.sampled_from(["signal", "cancel"]),
    started=st.floats(0, 1e10, allow_nan=False),
    decided=st.floats(0, 1e10, allow_nan=False),
)
def test_an_input_reaches_only_a_run_started_by_its_decision_and_the_margin(
    kind: str, started: float, decided: float
) -> None:
    state = run_started_at(started)
    decision = decide(state, late_input(kind, decided), max(started, decided) + 1000)
    expected = APPLIED if started <= decided + MARGIN else IGNORED
    assert decision.outcome == expected, decision.reason
    # an input with no decision time (a client's, or one naming its run) is never held so
    assert decide(state, late_input(kind, None), started + 1).outcome == APPLIED


def test_a_held_signal_names_its_child_run_and_carries_no_decision_time() -> None:
    # the signal was decided before the child started: its run id says which run it is for
    source = run_started_at(10.0, "src", "src-run")
    e = ev.ExternalWorkflowSignalled(2, 12.5, 1, 1, "kid", "go")
    effect = signal_input(source, e, "kid-run")
    assert effect.input.run_id == "kid-run" and effect.input.decided_at is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_decision_time_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="decided_at"):
        inp.SignalWorkflow("run-1", "go", "r", (), bad)
    with pytest.raises(ValueError, match="decided_at"):
        inp.RequestCancel("run-1", "r", "", bad)
