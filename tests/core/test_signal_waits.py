"""What a run's state says about signal waits (matched as the replayer matches them) and about
the worker of an activity attempt. Pure: no NATS."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core.failure import Failure
from durablefuture.core.state import RunState
from tests.core.helpers import History


def _waiting(h: History) -> list[tuple[int, str]]:
    state = RunState.from_history(h.events)
    return [(seq, w.name) for seq, w in sorted(state.waiting_for_signals.items())]


def test_a_signal_answers_the_oldest_wait_for_its_name() -> None:
    h = History()
    h.wait(1, "approve")
    h.wait(2, "approve", based_on=1)
    h.wait(3, "note", timeout=60, based_on=1)
    assert _waiting(h) == [(1, "approve"), (2, "approve"), (3, "note")]
    h.signal("approve", True)
    assert _waiting(h) == [(2, "approve"), (3, "note")]
    state = RunState.from_history(h.events)
    assert state.waiting_for_signals[3].deadline == h.events[3].at + 60


def test_a_wait_takes_a_signal_that_arrived_before_it() -> None:
    h = History()
    h.signal("approve", True)
    h.wait(1, "approve")
    assert _waiting(h) == []
    h.wait(2, "approve")
    assert _waiting(h) == [(2, "approve")]


def test_a_timed_out_wait_is_no_longer_waiting_and_a_later_signal_is_kept() -> None:
    h = History()
    h.wait(1, "approve", timeout=5)
    h.add(ev.SignalWaitTimedOut, seq=1)
    assert _waiting(h) == []
    h.signal("approve", "late")
    h.wait(2, "approve")
    assert _waiting(h) == []  # the late signal answered the new wait


def test_the_attempt_remembers_the_worker_that_started_it_until_a_retry() -> None:
    h = History()
    h.activity(1, "charge")
    h.add(ev.ActivityStarted, seq=1, attempt=1, worker="h:1:abc")
    assert RunState.from_history(h.events).activities[1].worker == "h:1:abc"
    h.add(
        ev.ActivityRetryScheduled,
        seq=1,
        attempt=1,
        failure=Failure("boom"),
        delay=1.0,
        retry_at=h.now + 1,
    )
    assert RunState.from_history(h.events).activities[1].worker == ""
