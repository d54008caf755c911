"""Replaying a history only up to an event (the UI's time travel): where the code is paused,
what it waits on, its query handlers, and the rest of the history looked ahead at."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import CompleteWorkflow, RecordMarker
from durablefuture.core.replay import WaitingFor, WorkflowExecution
from tests.core.helpers import History, execution

CALLS: list[str] = []


def _line_of(fn: Any, text: str) -> int:
    """The line number of the first line of ``fn``'s source that holds ``text``."""
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def _roll() -> int:
    CALLS.append("roll")
    return 6


def _step(name: str) -> Generator[Any, Any, Any]:
    done = yield df.activity(name)  # the helper's yield
    return done


def travels() -> Generator[Any, Any, Any]:
    stage = "started"
    df.workflow.set_query_handler("stage", lambda: stage)
    roll = yield df.side_effect(_roll)
    stage = f"rolled {roll}"
    charged = yield from _step("charge")
    stage = f"charged {charged}"
    yield df.sleep(5)
    stage = "slept"
    df.workflow.set_query_handler("late", lambda: "registered after the timer")
    return stage


def _history() -> History:
    h = History("travels")  # 1
    h.side_effect(1, 4)  # 2: the recorded roll is 4, not what _roll returns now
    h.activity(2, "charge")  # 3
    h.tick().completed(2, "ok")  # 4
    h.timer(3, 5.0)  # 5
    h.tick(5).fired(3)  # 6
    h.complete("slept")  # 7
    return h


def _at(history: list[ev.Event], event_id: int) -> WorkflowExecution:
    x = execution(travels)
    x.look_ahead(history)
    x.feed(history[:event_id])
    return x


def test_a_prefix_replay_takes_the_recorded_side_effect_and_runs_no_function() -> None:
    history = _history().events
    CALLS.clear()
    x = _at(history, 1)  # only WorkflowStarted: the code runs past the side effect
    assert CALLS == []
    assert x.query("stage", ()) == "rolled 4"
    assert x.pending_commands == ()  # the side effect and the activity are in history already
    # without the rest of the history the code would call the function and take its value
    fresh = execution(travels)
    fresh.feed(history[:1])
    assert CALLS == ["roll"] and fresh.query("stage", ()) == "rolled 6"


def test_paused_location_stack_and_waits_at_each_event() -> None:
    history = _history().events
    helper_line = _line_of(_step, "the helper's yield")
    outer_line = _line_of(travels, 'yield from _step("charge")')
    sleep_line = _line_of(travels, "yield df.sleep(5)")

    for event_id in (1, 2, 3):  # waiting for the activity, inside the helper
        x = _at(history, event_id)
        stack = x.suspended_stack()
        assert [(f.function, f.line) for f in stack] == [
            ("travels", outer_line),
            ("_step", helper_line),
        ]
        assert stack[-1].file == __file__
        assert x.suspended_at == f"{__file__}:{helper_line}" == str(stack[-1])
        assert x.waiting_for == (WaitingFor(2, "activity", "charge"),)
        assert sorted(x.query_handlers) == ["stage"]
        assert x.query("stage", ()) == "rolled 4"

    for event_id in (4, 5):  # the activity's result is in: the code sleeps
        x = _at(history, event_id)
        assert x.suspended_at == f"{__file__}:{sleep_line}"
        assert [f.function for f in x.suspended_stack()] == ["travels"]
        assert x.waiting_for == (WaitingFor(3, "timer", ""),)
        assert x.query("stage", ()) == "charged ok"
        assert x.outcome is None and not x.finished

    for event_id in (6, 7):  # the timer fired: the code returned
        x = _at(history, event_id)
        assert x.finished and x.outcome == CompleteWorkflow("slept")
        assert x.suspended_at is None and x.suspended_stack() == () and x.waiting_for == ()
        assert sorted(x.query_handlers) == ["late", "stage"]
        assert x.query("stage", ()) == "slept"


def patched_later() -> Generator[Any, Any, Any]:
    path = "none yet"
    df.workflow.set_query_handler("path", lambda: path)
    yield df.activity("first")
    if df.workflow.patched("new-step"):
        path = "new"
        yield df.activity("new_step")
    else:
        path = "old"
        yield df.activity("old_step")
    return path


def test_a_prefix_replay_takes_the_branch_the_run_took_at_a_patch() -> None:
    old = History("patched_later")
    old.activity(1, "first")
    old.completed(1)  # 3: the run went on down the old path
    old.activity(2, "old_step")
    old.completed(2)
    old.complete("old")
    x = execution(patched_later)
    x.look_ahead(old.events)
    x.feed(old.events[:3])
    assert x.query("path", ()) == "old" and x.pending_commands == ()

    new = History("patched_later")
    new.activity(1, "first")
    new.completed(1)
    new.marker(2, "new-step")
    new.activity(3, "new_step")
    y = execution(patched_later)
    y.look_ahead(new.events)
    y.feed(new.events[:3])
    assert y.query("path", ()) == "new" and y.pending_commands == ()
    # the prefix alone, at the frontier, would take the new path and record a marker
    z = execution(patched_later)
    z.feed(old.events[:3])
    assert z.query("path", ()) == "new"
    assert isinstance(z.pending_commands[0], RecordMarker)
