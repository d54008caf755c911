"""Replay of signals (buffering, order, timeouts) and of cancellation."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PendingSignal,
    ScheduleActivity,
    StartSignalWait,
)
from durablefuture.core.options import ActivityOptions
from durablefuture.testing.sim import Simulation
from tests.core.helpers import (
    T0,
    Driver,
    History,
    app_failure,
    execution,
    primitive,
    replay,
)

DEFAULT_OPTS = ActivityOptions().resolved("q")


# ------------------------------------------------------------------ signals


def collect(n: int, name: str = "item") -> Generator[Any, Any, Any]:
    got = []
    for _ in range(n):
        got.append((yield df.wait_signal(name)))
    return got


def test_wait_signal_issues_a_command_and_returns_the_argument() -> None:
    d = Driver(collect, 1)
    assert d.step().commands == (StartSignalWait(1, "item", None, T0),)
    d.h.signal("item", {"sku": 1})
    assert d.step().commands == (CompleteWorkflow([{"sku": 1}]),)


def test_signals_sent_before_the_wait_are_buffered_in_order() -> None:
    d = Driver(collect, 3)
    d.h.signal("item", "a")
    d.h.signal("other", "ignored")
    d.h.signal("item", "b")
    act = d.step()  # all three waits are served from the buffer in one activation
    assert primitive(act.commands) == [
        StartSignalWait(1, "item", None, T0),
        StartSignalWait(2, "item", None, T0),
        StartSignalWait(3, "item", None, T0),
    ]
    assert act.terminal is None  # the third waits for a third signal
    d.h.signal("item", "c")
    assert d.step().commands == (CompleteWorkflow(["a", "b", "c"]),)
    assert d.full_replay().commands == ()


def test_signals_arriving_while_waiting_are_delivered_in_history_order() -> None:
    d = Driver(collect, 3)
    d.step()
    d.h.signal("item", 1)
    d.h.signal("item", 2)
    d.h.signal("item", 3)
    act = d.step()
    assert act.commands[-1] == CompleteWorkflow([1, 2, 3])


def test_signal_payload_shapes() -> None:
    def wf() -> Generator[Any, Any, Any]:
        none = yield df.wait_signal("s")
        many = yield df.wait_signal("s")
        return [none, list(many), type(many).__name__]

    d = Driver(wf)
    d.h.signal("s")
    d.h.signal("s", 1, "two")
    act = d.step()
    assert act.commands[-1] == CompleteWorkflow([None, [1, "two"], "tuple"])


def test_wait_signal_timeout_raises_timeout_error() -> None:
    seen: list[BaseException] = []

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.wait_signal("approve", timeout=30)
        except df.TimeoutError as err:
            seen.append(err)
            return "timed out"
        return "approved"

    d = Driver(wf)
    assert d.step().commands == (StartSignalWait(1, "approve", 30.0, T0),)
    wait = d.h.events[-1]
    assert isinstance(wait, ev.SignalWaitStarted) and wait.deadline == d.h.now + 30
    d.h.add(ev.SignalWaitTimedOut, seq=1)
    d.h.signal("approve", "late")  # after the timeout: buffered for a later wait, if any
    assert d.step().commands == (CompleteWorkflow("timed out"),)
    assert isinstance(seen[0], df.TimeoutError) and seen[0].timeout_type == "signal"


def test_a_timed_out_wait_does_not_swallow_the_next_signal() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:  # noqa: SIM105 - the point is a plain try/except around the yield
            yield df.wait_signal("s", timeout=1)
        except df.TimeoutError:
            pass
        got = yield df.wait_signal("s")
        return got

    d = Driver(wf)
    d.step()
    d.h.add(ev.SignalWaitTimedOut, seq=1)
    d.h.signal("s", "for the second wait")
    act = d.step()
    assert act.commands[-1] == CompleteWorkflow("for the second wait")


def test_a_satisfied_wait_ignores_its_later_timeout() -> None:
    d = Driver(collect, 2)
    d.step()
    d.h.signal("item", "x")
    d.step()
    d.h.add(ev.SignalWaitTimedOut, seq=1)  # the server's timer fired anyway
    assert d.step().commands == ()
    d.h.signal("item", "y")
    assert d.step().commands == (CompleteWorkflow(["x", "y"]),)


def test_any_of_signal_or_timer() -> None:
    def wf() -> Generator[Any, Any, Any]:
        idx, value = yield df.any_of(df.wait_signal("go"), df.sleep(60))
        after = yield df.wait_signal("go")  # the abandoned wait must not take this signal
        return [idx, value, after]

    d = Driver(wf)
    d.step()
    d.h.fired(2)
    d.h.signal("go", "first")
    act = d.step()
    assert act.commands[-1] == CompleteWorkflow([1, None, "first"])


def test_wait_signal_validates_its_arguments() -> None:
    with pytest.raises(df.InvalidArgumentError, match="signal name"):
        df.wait_signal("")
    with pytest.raises(df.InvalidArgumentError, match="wait_signal timeout"):
        df.wait_signal("x", timeout=-1)


# ------------------------------------------------------------------ cancellation


def with_cleanup() -> Generator[Any, Any, Any]:
    try:
        yield df.activity("work")
        yield df.activity("more work")
    finally:
        yield df.activity("cleanup")
        yield df.activity("cleanup 2")


def test_cancellation_raises_at_the_current_yield_and_cleanup_can_yield() -> None:
    d = Driver(with_cleanup)
    d.step()
    d.h.cancel("user asked")
    assert d.step().commands == (ScheduleActivity(2, "cleanup", (), DEFAULT_OPTS),)
    d.h.completed(1, "work finished anyway")  # abandoned: ignored
    d.h.completed(2)
    assert d.step().commands == (ScheduleActivity(3, "cleanup 2", (), DEFAULT_OPTS),)
    d.h.completed(3)
    act = d.step()
    assert act.commands == (CancelWorkflow("workflow cancellation requested: user asked"),)
    assert act.finished
    assert d.full_replay().commands == ()


def test_the_cancelled_error_reaches_the_code_with_the_reason() -> None:
    seen: list[BaseException] = []

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.all_of(df.activity("a"), df.sleep(10))
        except df.CancelledError as err:
            seen.append(err)
            return "stopped cleanly"

    d = Driver(wf)
    d.step()
    d.h.cancel("enough")
    assert d.step().commands == (CompleteWorkflow("stopped cleanly"),)
    assert "enough" in str(seen[0])


def test_a_second_cancel_request_is_not_raised_again() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.activity("a")
        except df.CancelledError:
            r = yield df.activity("undo")
            return r

    d = Driver(wf)
    d.step()
    d.h.cancel()
    d.step()
    d.h.cancel()  # the server ignores a second one, but replay must cope if it is there
    d.h.completed(2, "undone")
    assert d.step().commands == (CompleteWorkflow("undone"),)


def test_a_cancelled_error_raised_by_the_code_itself_fails_the_workflow() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        raise df.CancelledError("not really cancelled")

    d = Driver(wf)
    d.step()
    d.h.fired(1)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "CancelledError"


def test_cancel_recorded_before_the_first_task_interrupts_the_first_yield() -> None:
    d = Driver(with_cleanup)
    d.h.cancel()
    act = d.step()
    # the code yielded 'work' (seq 1) and then, interrupted, 'cleanup' (seq 2)
    assert [c.name for c in primitive(act.commands)] == ["work", "cleanup"]  # type: ignore[union-attr]


def test_a_failing_cleanup_fails_the_workflow() -> None:
    d = Driver(with_cleanup)
    d.step()
    d.h.cancel()
    d.step()
    d.h.failed(2, app_failure("cleanup broke"))
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "ActivityError"


def test_replay_of_a_cancelled_history_matches() -> None:
    h = History("with_cleanup")
    h.activity(1, "work")
    h.cancel()
    h.activity(2, "cleanup")
    h.completed(2)
    h.activity(3, "cleanup 2")
    h.completed(3)
    h.add(ev.WorkflowCancelled, based_on=h.last, message="workflow cancellation requested")
    act = replay(with_cleanup, h.events)
    assert act.finished and act.commands == ()


def _carry(seen: list[str]) -> Generator[Any, Any, Any]:
    first = yield df.wait_signal("s")
    if not seen:
        yield df.continue_as_new([first])
    rest = []
    for _ in range(2):
        rest.append((yield df.wait_signal("s")))
    return [*seen, first, *rest]


def test_continue_as_new_carries_unconsumed_signals_in_order() -> None:
    sim = Simulation([_carry])
    sim.start(_carry, [], id="carry")
    for value in ("a", "b", "c", "d"):  # all arrive before the first run decides anything
        sim.signal("carry", "s", value)
    sim.run()
    assert sim.result("carry") == ["a", "b", "c", "d"]
    first_run = next(r for r in sim.runs.values() if r.state.status == "continued_as_new")
    can = first_run.events[-1]
    assert isinstance(can, ev.WorkflowContinuedAsNew)
    assert [s.name for s in can.signals] == ["s", "s", "s"]
    assert [s.args for s in can.signals] == [("b",), ("c",), ("d",)]


def _rich(hops: int, got: list[Any]) -> Generator[Any, Any, Any]:
    # the shape of tests/integration/flows.py chaos_rich: a child, a signal, continue-as-new
    child = yield df.child_workflow("child", hops, id=f"child-{hops}")
    signal = yield df.wait_signal("go", timeout=300)
    got = [*got, [child, signal]]
    if hops > 0:
        yield df.continue_as_new(hops - 1, got)
    return got


def test_a_cached_run_hands_on_signals_fed_after_it_decided_to_continue_as_new() -> None:
    # The history of a lost signal (test_chaos seed 7). The worker's report "wait for go"
    # (decided after event 4) was recorded only at event 7, after signals g0 and g1; its
    # cached generator had been fed g0 meanwhile, took it and decided to continue as new, and
    # was then fed g1, the wait and g2. Its report was based on event 8, so the server added
    # no later signal: the command had to carry g1 and g2 itself, and carried none.
    h = History("_rich", 2, [])
    h.child(1, "child", "child-2", 2)
    h.add(ev.ChildWorkflowStarted, seq=1, run_id="child-run")
    h.add(ev.ChildWorkflowCompleted, seq=1, result=102)
    h.signal("go", "g0")
    h.signal("go", "g1")
    h.wait(2, "go", timeout=300, based_on=4)
    h.signal("go", "g2")
    x = execution(_rich)
    activation = None
    for part in ([1], [2, 3, 4], [5], [6], [7], [8]):  # one feed per workflow task / receipt
        activation = x.feed(h.events[i - 1] for i in part)
    assert activation is not None and activation.based_on == 8
    handed_on = (PendingSignal("go", ("g1",)), PendingSignal("go", ("g2",)))
    assert activation.commands == (ContinueAsNewWorkflow((1, [[102, "g0"]]), signals=handed_on),)
    assert replay(_rich, h.events).commands == activation.commands  # a full replay agrees
    h.record(activation.commands, based_on=activation.based_on)
    can = h.events[-1]
    assert isinstance(can, ev.WorkflowContinuedAsNew) and can.signals == handed_on


@pytest.mark.parametrize("wait_based_on", [1, 4])
def test_signals_queued_or_fed_after_continue_as_new_keep_history_order(
    wait_based_on: int,
) -> None:
    # based on event 4, the wait is checked (and "a" delivered, and the code continues as new)
    # while the replayer reads event 5: "c" and "y" come after that, even in a single feed
    h = History("_carry", [])
    h.signal("s", "a")
    h.signal("other", "x")  # never waited for: handed on too, in its place
    h.signal("s", "b")
    h.wait(1, "s", based_on=wait_based_on)
    h.signal("s", "c")
    h.signal("other", "y")
    expected = tuple(
        PendingSignal(name, (arg,))
        for name, arg in [("other", "x"), ("s", "b"), ("s", "c"), ("other", "y")]
    )
    for cut in range(1, len(h.events) + 1):
        x = execution(_carry)
        x.feed(h.events[:cut])
        act = x.feed(h.events[cut:])
        assert act.based_on == len(h.events)
        assert act.commands == (ContinueAsNewWorkflow((["a"],), signals=expected),), cut


def _carry_one() -> Generator[Any, Any, Any]:
    first = yield df.wait_signal("s")
    yield df.continue_as_new([first])


def test_a_signal_fed_after_the_code_continued_as_new_goes_to_the_next_run() -> None:
    """A worker feeds history as it comes: the code may have decided to continue as new when
    a signal is fed that came before that decision was recorded. The signal is not lost."""
    d = Driver(_carry_one)
    d.step()
    d.h.signal("s", "a")
    act = d.x.feed(d.h.events[d.x.last_event_id :])  # decided, not recorded yet
    assert act.commands == (ContinueAsNewWorkflow((["a"],)),)
    d.h.signal("s", "b")
    act = d.x.feed(d.h.events[d.x.last_event_id :])
    assert act.commands == (ContinueAsNewWorkflow((["a"],), signals=(PendingSignal("s", ("b",)),)),)
    assert replay(_carry_one, d.h.events).commands == act.commands  # as a full replay decides
    d.h.record(act.commands, based_on=act.based_on)
    can = d.h.events[-1]
    assert isinstance(can, ev.WorkflowContinuedAsNew)
    assert can.signals == (PendingSignal("s", ("b",)),)  # once
