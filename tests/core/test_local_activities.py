"""Local activities in the pure core: recorded as one event, replayed without running again,
their outcome handed to the code after the events their record is based on."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import RecordLocalActivity
from durablefuture.testing import Replayer, Simulation
from tests.core.helpers import PAYLOADS, execution

OPTS = df.ActivityOptions(start_to_close_timeout=5)
CALLS: list[int] = []


def double(x: int) -> int:
    CALLS.append(x)
    return 2 * x


def refuse(x: int) -> int:
    raise df.ApplicationError(f"refused {x}", type="Refused")


def chain() -> Generator[Any, Any, Any]:
    a = yield df.local_activity(double, 2, options=OPTS)
    b = yield df.local_activity(double, a, options=OPTS)
    try:
        yield df.local_activity(refuse, b, options=OPTS)
    except df.ActivityError as err:
        return [a, b, type(err.__cause__).__name__, str(err.__cause__)]
    return None


def test_each_outcome_is_one_event_and_a_replay_runs_nothing_again() -> None:
    CALLS.clear()
    sim = Simulation([chain], [])
    sim.start(chain, id="w")
    sim.run()
    assert sim.result("w") == [4, 8, "ApplicationError", "refused 8"]
    events = sim.run_of("w").events
    recorded = [e for e in events if isinstance(e, ev.LocalActivityRecorded)]
    assert [(e.seq, e.name, e.result, e.attempts) for e in recorded] == [
        (1, "double", 4, 1),
        (2, "double", 8, 1),
        (3, "refuse", None, 1),
    ]
    assert recorded[2].failure is not None and recorded[2].failure.type == "Refused"
    assert not [e for e in events if isinstance(e, ev.ActivityScheduled)]  # no task queue
    assert CALLS == [2, 4]
    Replayer([chain]).replay(events)
    assert CALLS == [2, 4]  # replaying ran nothing


def test_the_outcome_reaches_the_code_after_the_events_it_was_based_on() -> None:
    def counted() -> Generator[Any, Any, Any]:
        seen: list[str] = []
        df.workflow.set_signal_handler("s", seen.append)
        yield df.local_activity(double, 1, options=OPTS)
        return len(seen)  # the signal in the same workflow task came first

    sim = Simulation([counted], [])
    sim.start(counted, id="w")
    sim.signal("w", "s", "x")
    sim.run()
    assert sim.result("w") == 1
    events = sim.run_of("w").events
    (recorded,) = [e for e in events if isinstance(e, ev.LocalActivityRecorded)]
    assert recorded.based_on == 2 and recorded.applied_at == events[1].at
    Replayer([counted]).replay(events)


def test_a_prefix_that_ends_before_the_record_leaves_it_to_run_again() -> None:
    sim = Simulation([chain], [])
    sim.start(chain, id="w")
    sim.run()
    history = sim.run_of("w").events
    ex = execution(chain)
    ex.feed(history[:2])  # started, the first record
    assert [s for s, _ in ex.pending_local_activities] == [2]
    activation = ex.resolve_local(2, PAYLOADS.to_payload(8), None, 1)
    assert activation.commands[0] == RecordLocalActivity(
        2, "double", (4,), 8, None, 1, history[1].at
    )


def test_a_different_local_activity_in_history_is_a_divergence() -> None:
    sim = Simulation([chain], [])
    sim.start(chain, id="w")
    sim.run()

    @df.defn(name="chain")
    def other() -> Generator[Any, Any, Any]:
        yield df.local_activity(refuse, 2, options=OPTS)

    with pytest.raises(df.NonDeterminismError, match="local_activity 'double'"):
        Replayer([other]).replay(sim.run_of("w").events)


def test_options_are_required_and_bounded() -> None:
    with pytest.raises(df.InvalidArgumentError, match="start_to_close_timeout"):
        df.local_activity(double, 1)
    with pytest.raises(df.InvalidArgumentError, match="at most 60 s"):
        df.local_activity(double, 1, options=df.ActivityOptions(start_to_close_timeout=61))
