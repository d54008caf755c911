"""A run's rarely used maps (children, signal waits, updates), its signal request ids and its
signals start as one empty value shared by every run (``core/state.py``): the first entry
gives the run a container of its own, so nothing one run records shows in another."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.orchestration import start_events
from durablefuture.core.state import RunState


def new_run(run_id: str) -> RunState:
    request = inp.StartWorkflowRequest(
        workflow_id=f"w-{run_id}", workflow_type="w", task_queue="q", request_id=f"req-{run_id}"
    )
    events = start_events(request, namespace="ns", run_id=run_id, now=100.0)
    first = events[0]
    assert isinstance(first, ev.WorkflowStarted)
    state = RunState(started=first)
    state.apply(events, "start")
    return state


def test_what_one_run_records_never_shows_in_another() -> None:
    a, b, c = new_run("a"), new_run("b"), new_run("c")
    n = a.last_event_id
    a.apply(
        [
            ev.SignalWaitStarted(n + 1, 101.0, based_on=n, seq=1, name="go", deadline=200.0),
            ev.ChildWorkflowScheduled(
                n + 2,
                101.0,
                based_on=n,
                seq=2,
                workflow_type="child",
                workflow_id="k",
                task_queue="q",
            ),
            ev.UpdateAccepted(n + 3, 101.0, update_id="u1", name="set"),
            ev.SignalReceived(n + 4, 102.0, name="other", request_id="r1"),
        ],
        "in-1",
    )
    assert set(a.signal_waits) == {1}
    assert set(a.waiting_for_signals) == {1}
    assert set(a.children) == {2}
    assert set(a.updates) == {"u1"}
    assert a.unclaimed_signals == {"other": 1}
    assert set(a.signal_requests) == {"r1"}
    assert [s.name for s in a.signals] == ["other"]
    for other in (b, c, new_run("d")):
        assert not other.signal_waits
        assert not other.waiting_for_signals
        assert not other.children
        assert not other.updates
        assert not other.unclaimed_signals
        assert not other.signal_requests
        assert not other.signals
    m = b.last_event_id
    b.apply([ev.SignalReceived(m + 1, 103.0, name="go", request_id="r2")], "in-2")
    assert b.unclaimed_signals == {"go": 1}
    assert set(b.signal_requests) == {"r2"}
    assert a.unclaimed_signals == {"other": 1}  # unchanged by b's
    assert set(a.signal_requests) == {"r1"}
    assert not c.unclaimed_signals and not c.signal_requests and not c.signals


def test_a_wait_answered_and_timed_out_leaves_its_run_empty_again() -> None:
    a = new_run("a")
    n = a.last_event_id
    a.apply(
        [
            ev.SignalWaitStarted(n + 1, 101.0, based_on=n, seq=1, name="go", deadline=200.0),
            ev.SignalWaitTimedOut(n + 2, 200.0, seq=1),
        ],
        "in-1",
    )
    assert not a.signal_waits and not a.waiting_for_signals
    assert not new_run("b").signal_waits
