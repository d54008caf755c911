"""What df-server records in place of an input naming a payload object that is gone: the
heartbeat details of a timer's firing or of a failed attempt are dropped (the timeout or the
failure is recorded), never the input refused while the run waits for it."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.failure import Failure
from durablefuture.core.orchestration import start_events
from durablefuture.core.state import RunState
from durablefuture.server.missing_payloads import described, instead_of_missing

REF = {"__df_payload__": {"m": {"df-claim": "0" * 64}, "d": ""}}


def state() -> RunState:
    request = inp.StartWorkflowRequest(
        workflow_id="t", workflow_type="w", task_queue="q", request_id="req"
    )
    events = start_events(request, namespace="ns", run_id="run-1", now=1.0)
    first = events[0]
    assert isinstance(first, ev.WorkflowStarted)
    s = RunState(started=first)
    s.apply(events, "start")
    return s


def test_a_timer_firing_is_recorded_without_its_heartbeat_details() -> None:
    fire = inp.FireTimer("run-1", "a3.1.hb", heartbeat_at=5.0, heartbeat_details=(REF,))
    instead = instead_of_missing(state(), fire, "gone")
    assert instead == inp.FireTimer("run-1", "a3.1.hb", heartbeat_at=5.0)
    assert described(fire, instead) == "FireTimer without its heartbeat details"


def test_a_timer_firing_without_details_is_still_refused() -> None:
    assert instead_of_missing(state(), inp.FireTimer("run-1", "a3.1.hb"), "gone") is None


def test_a_failed_attempt_loses_its_details_first_then_its_failure() -> None:
    failure = Failure(message="boom", type="ValueError", details=(REF,))
    failed = inp.FailActivityTask("run-1", 3, 1, failure, (REF,))
    first = instead_of_missing(state(), failed, "gone")
    assert first == inp.FailActivityTask("run-1", 3, 1, failure)
    assert first is not None
    second = instead_of_missing(state(), first, "gone")
    assert isinstance(second, inp.FailActivityTask) and second.heartbeat_details == ()
    # the error keeps its type and its retry decision, only its details are dropped
    assert second.failure == Failure(message="boom (its details are lost: gone)", type="ValueError")
    assert described(first, second) == "FailActivityTask without its failure's details"
    final = Failure(
        message="declined",
        type="CardDeclined",
        non_retryable=True,
        details=(REF,),
        type_hierarchy=("CardDeclined", "Exception"),
        cause=Failure(message="inner", details=(REF,)),
    )
    kept = instead_of_missing(state(), inp.FailActivityTask("run-1", 3, 1, final), "gone")
    assert isinstance(kept, inp.FailActivityTask)
    assert kept.failure.non_retryable and kept.failure.type == "CardDeclined"
    assert kept.failure.type_hierarchy == ("CardDeclined", "Exception")
    assert kept.failure.details == () and kept.failure.cause is None
