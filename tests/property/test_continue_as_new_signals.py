"""Continue-as-new hands on exactly the unconsumed signals, however history was fed.

A caching worker feeds a run's history to one live generator in pieces (one per workflow task
or receipt), and its reports may be recorded late, after signals that arrived meanwhile. For
histories with signals at random points around a wait and a continue-as-new, commands recorded
at random points, and random partitions of the history into ``feed`` calls:

(i)   the cached execution ends with the same activation as a fresh full replay;
(ii)  its ContinueAsNew carries every signal no wait took, in history order;
(iii) whatever report the server accepts from it (any piece, based on any event) records a
      WorkflowContinuedAsNew carrying exactly those signals.
"""

from __future__ import annotations

from collections.abc import Generator
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ContinueAsNewWorkflow, PendingSignal
from durablefuture.core.orchestration import APPLIED, decide
from durablefuture.core.replay import Activation
from durablefuture.core.state import RunState
from tests.core.helpers import History, execution, primitive, replay

OPTS = df.ActivityOptions(start_to_close_timeout=10)


def carrier(waits: int) -> Generator[Any, Any, Any]:
    got = [(yield df.activity("first", options=OPTS))]
    for _ in range(waits):
        got.append((yield df.wait_signal("go")))
    yield df.continue_as_new(waits, got)


_STEPS = st.one_of(
    st.tuples(st.just("signal"), st.sampled_from(["go", "go", "other"])),
    st.tuples(st.just("decide"), st.integers(0, 6)),  # decided this many events ago
    st.tuples(st.just("complete"), st.just("")),
)


def _build(waits: int, steps: list[tuple[str, Any]]) -> History:
    """A history as a server records it: reports of fresh replays of prefixes, recorded late."""
    h = History("carrier", waits)
    sent = 0
    for kind, arg in steps:
        h.tick()
        if kind == "signal":
            sent += 1
            h.signal(arg, f"{arg}{sent}")
        elif kind == "complete":
            scheduled = any(isinstance(e, ev.ActivityScheduled) for e in h.events)
            done = any(isinstance(e, ev.ActivityCompleted) for e in h.events)
            if scheduled and not done:
                h.completed(1, "first")
        else:
            state = RunState.from_history(h.events)
            based_on = max(state.last_command_event_id, 1, h.last - arg)
            commands = primitive(replay(carrier, h.events[:based_on]).commands)
            if commands:
                h.record(tuple(commands), based_on=based_on)
    return h


def _unconsumed(h: History, waits: int) -> tuple[PendingSignal, ...] | None:
    """Every signal but the first ``waits`` "go" ones, in history order (None: no CAN yet)."""
    if not any(isinstance(e, ev.ActivityCompleted) for e in h.events):
        return None
    signals = [e for e in h.events if isinstance(e, ev.SignalReceived)]
    taken = [s.event_id for s in signals if s.name == "go"][:waits]
    if len(taken) < waits:
        return None
    return tuple(PendingSignal(s.name, s.args) for s in signals if s.event_id not in taken)


def _recorded_signals(h: History, act: Activation) -> tuple[PendingSignal, ...] | None:
    """The signals of the WorkflowContinuedAsNew the server records for ``act`` (None if it
    does not accept the report, e.g. because it is stale)."""
    state = RunState.from_history(h.events)
    task = inp.CompleteWorkflowTask("run-1", act.based_on, act.commands)
    decision = decide(state, task, h.now + 1, new_run_id="run-2")
    if decision.outcome != APPLIED:
        return None
    can = decision.events[-1]
    assert isinstance(can, ev.WorkflowContinuedAsNew)
    return can.signals


@settings(deadline=None, max_examples=400)
@given(
    waits=st.integers(1, 2),
    steps=st.lists(_STEPS, max_size=14),
    data=st.data(),
)
def test_continue_as_new_carries_the_unconsumed_signals_for_any_feed_partition(
    waits: int, steps: list[tuple[str, Any]], data: st.DataObject
) -> None:
    h = _build(waits, steps)
    events = h.events
    n = len(events)
    cuts = data.draw(st.sets(st.integers(1, n)), label="feed() boundaries")  # n: no cut
    bounds = [0, *sorted(c for c in cuts if c < n), n]
    cached = execution(carrier)
    activations = [cached.feed(events[a:b]) for a, b in pairwise(bounds)]
    final = activations[-1]

    fresh = replay(carrier, events)
    assert final == fresh  # (i)

    expected = _unconsumed(h, waits)
    terminal = final.terminal
    if expected is None:
        assert terminal is None
        return
    assert isinstance(terminal, ContinueAsNewWorkflow)
    assert terminal.signals == expected  # (ii)

    for act in activations:  # (iii): every report a worker could send on the way
        if act.terminal is None:
            continue
        recorded = _recorded_signals(h, act)
        if recorded is not None:
            assert recorded == expected, act
    assert _recorded_signals(h, final) == expected
