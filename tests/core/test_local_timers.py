"""df-server's local timers (``server/local_timers.py``): one heap and one clock timer for all
the durable timers the server armed; each fires once, in time order, unless cancelled or armed
again, and in an empty context (not the arming request's)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

import pytest

from durablefuture.clock import REAL_CLOCK
from durablefuture.server.local_timers import LocalTimers


class _Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock whose time moves only by ``advance``; it runs the timers that come due."""

    skips = True

    def __init__(self) -> None:
        self.t = 1000.0
        self.handles: list[_Handle] = []

    def now(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        h = _Handle(when, callback)
        self.handles.append(h)
        return h

    def armed(self) -> list[_Handle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        self.t = to
        while due := [h for h in self.armed() if h.when <= to]:
            h = min(due, key=lambda h: h.when)
            h.cancelled = True
            h.callback()


def make() -> tuple[ManualClock, LocalTimers, list[tuple[str, str, str]]]:
    clock = ManualClock()
    fired: list[tuple[str, str, str]] = []
    return clock, LocalTimers(clock, lambda *a: fired.append(a)), fired


def test_timers_fire_once_each_in_time_order_through_one_clock_timer() -> None:
    clock, timers, fired = make()
    timers.arm("w1", "r1", "t1", 1010.0)
    timers.arm("w2", "r2", "t1", 1005.0)
    timers.arm("w1", "r1", "a2.1.stc", 1020.0)
    assert len(timers) == 3
    assert len(clock.armed()) == 1  # for the earliest only
    clock.advance(1007.0)
    assert fired == [("w2", "r2", "t1")]
    clock.advance(1030.0)
    assert fired == [("w2", "r2", "t1"), ("w1", "r1", "t1"), ("w1", "r1", "a2.1.stc")]
    assert len(timers) == 0
    assert clock.armed() == []
    clock.advance(2000.0)
    assert len(fired) == 3  # none twice


def test_armed_again_fires_at_the_new_time_only_and_cancelled_never() -> None:
    clock, timers, fired = make()
    timers.arm("w1", "r1", "hb", 1010.0)
    timers.arm("w1", "r1", "hb", 1030.0)  # a heartbeat moved the deadline
    timers.arm("w2", "r2", "t1", 1015.0)
    timers.arm("w3", "r3", "t1", 1016.0)
    timers.arm("w3", "r3", "t2", 1017.0)
    timers.cancel("r2", "t1")
    timers.cancel_run("r3")
    timers.cancel("r9", "t1")  # unknown: nothing
    assert len(timers) == 1
    clock.advance(1029.0)
    assert fired == []
    clock.advance(1030.0)
    assert fired == [("w1", "r1", "hb")]


def test_due_within_a_millisecond_counts_as_due() -> None:
    clock, timers, fired = make()
    timers.arm("w1", "r1", "t1", 1010.0)
    (handle,) = clock.armed()
    clock.t = 1009.9995  # the loop woke a little early
    handle.cancelled = True
    handle.callback()
    assert fired == [("w1", "r1", "t1")]


def test_an_early_wake_with_nothing_due_waits_again() -> None:
    clock, timers, fired = make()
    timers.arm("w1", "r1", "t1", 1010.0)
    (handle,) = clock.armed()
    clock.t = 1005.0
    handle.cancelled = True
    handle.callback()
    assert fired == []
    assert [h.when for h in clock.armed()] == [1010.0]
    clock.advance(1010.0)
    assert fired == [("w1", "r1", "t1")]


def test_cancelled_entries_do_not_pile_up() -> None:
    clock, timers, fired = make()
    for i in range(10_000):  # an activity heartbeating all the time: its timeout moves on
        timers.arm("w1", "r1", "hb", 2000.0 + i)
    assert len(timers) == 1
    assert len(timers._heap) <= 2 * len(timers) + 65
    clock.advance(20_000.0)
    assert fired == [("w1", "r1", "hb")]


def test_a_failing_fire_leaves_the_others_armed() -> None:
    clock = ManualClock()
    fired: list[str] = []

    def fire(workflow_id: str, run_id: str, key: str) -> None:
        fired.append(run_id)
        if run_id == "r1":
            raise RuntimeError("boom")

    timers = LocalTimers(clock, fire)
    timers.arm("w1", "r1", "t1", 1010.0)
    timers.arm("w2", "r2", "t1", 1020.0)
    with pytest.raises(RuntimeError, match="boom"):
        clock.advance(1010.0)
    clock.advance(1020.0)
    assert fired == ["r1", "r2"]


_REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="")


async def test_a_timer_fires_in_an_empty_context_not_the_arming_requests() -> None:
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def fire(workflow_id: str, run_id: str, key: str) -> None:
        seen.set_result(_REQUEST.get())

    timers = LocalTimers(REAL_CLOCK, fire)
    token = _REQUEST.set("report 7")
    try:
        timers.arm("w1", "r1", "t1", REAL_CLOCK.now() + 0.01)
    finally:
        _REQUEST.reset(token)
    assert await asyncio.wait_for(seen, 5) == ""
    assert len(timers) == 0
