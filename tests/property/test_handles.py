"""Handles and cancellation under hypothesis-chosen interleavings (``df.start``, ``df.cancel``,
``yield task``, ``df.any_of`` over handles and with ``cancel_losers``), with local activities
in between (their outcome reaches the code after the events their record is based on).

(i)  Replaying any prefix of the recorded history re-issues exactly the recorded commands and
     every command decided within the prefix (cancellations included).
(ii) A worker that never caches records the same history and result as one that does.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.replay import Activation, WorkflowExecution
from durablefuture.testing import Simulation
from tests.property.programs import check_every_prefix, check_without_cache, run_choosing

SETTINGS = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TYPES = list(df.ActivityCancellationType)


@df.defn(name="echo")
def echo(v: int) -> int:
    return v


@df.defn(name="tasks")
def tasks(plan: list[dict[str, Any]]) -> Generator[Any, Any, Any]:
    handles: list[df.Handle] = []
    out: list[Any] = []

    def pick(i: int) -> df.Handle | None:
        return handles[i % len(handles)] if handles else None

    for step in plan:
        op = step["op"]
        if op == "act":
            opts = df.ActivityOptions(cancellation_type=TYPES[step["t"]])
            handles.append((yield df.start(df.activity(echo, step["v"], options=opts))))
        elif op == "sleep":
            handles.append((yield df.start(df.sleep(step["s"]))))
        elif op == "cancel" and (h := pick(step["i"])) is not None:
            yield df.cancel(h)
            out.append(["cancel", h.seq, h.done])
        elif op == "await" and (h := pick(step["i"])) is not None:
            try:
                out.append(["value", h.seq, (yield h)])
            except (df.ActivityError, df.CancelledError) as err:
                out.append(["error", h.seq, type(err).__name__])
        elif op == "local":
            opts = df.ActivityOptions(start_to_close_timeout=5)
            out.append(["local", (yield df.local_activity(echo, step["v"], options=opts))])
        elif op == "race":
            h = pick(step["i"]) if step["i"] != 99 else None
            first = df.activity(echo, step["v"]) if h is None else h
            try:
                index, _ = yield df.any_of(first, df.sleep(step["s"]), cancel_losers=step["c"])
                out.append(["race", index])
            except (df.ActivityError, df.CancelledError) as err:
                out.append(["race", type(err).__name__])
    return out


steps = st.one_of(
    st.fixed_dictionaries({"op": st.just("act"), "v": st.integers(0, 9), "t": st.integers(0, 2)}),
    st.fixed_dictionaries({"op": st.just("sleep"), "s": st.sampled_from([0.5, 1.0, 3.0])}),
    st.fixed_dictionaries({"op": st.just("cancel"), "i": st.integers(0, 5)}),
    st.fixed_dictionaries({"op": st.just("local"), "v": st.integers(0, 9)}),
    st.fixed_dictionaries({"op": st.just("await"), "i": st.integers(0, 5)}),
    st.fixed_dictionaries(
        {
            "op": st.just("race"),
            "i": st.one_of(st.integers(0, 5), st.none()).map(lambda i: 99 if i is None else i),
            "v": st.integers(0, 9),
            "s": st.sampled_from([0.5, 2.0]),
            "c": st.booleans(),
        }
    ),
)
plans = st.lists(steps, min_size=1, max_size=8)


def new_sim(plan: list[dict[str, Any]], *, cache: bool = True) -> Simulation:
    sim = Simulation([tasks], [echo], cache=cache, start_time=1000.0)
    sim.start("tasks", plan, id="t")
    return sim


def run(sim: Simulation, choices: list[int] | None, data: st.DataObject | None) -> list[int]:
    return run_choosing(sim, choices, data, max_steps=2_000)


def check_replays(
    plan: list[dict[str, Any]], choices: list[int] | None, data: st.DataObject | None
) -> list[ev.Event]:
    """Run ``plan`` (steps drawn from ``data`` or taken from ``choices``), then replay every
    prefix of its history; returns the history."""
    sim = new_sim(plan)
    run(sim, choices, data)
    assert sim.is_closed("t")
    history = sim.run_of("t").events
    assert sim.status("t") == "completed", history[-1]
    records = {e.seq: e for e in history if isinstance(e, ev.LocalActivityRecorded)}

    def settle(execution: WorkflowExecution, act: Activation) -> Activation:
        """What the worker that recorded this history did at this point: a local activity's
        outcome reaches the code after the events its record is based on, so one whose record
        is based on a later event was still running here (the code after it may look at a
        handle that those events finish: ``h.done``, ``df.cancel(h)``)."""
        while execution.pending_local_activities:
            seq, _ = execution.pending_local_activities[0]
            rec = records.get(seq)
            assert rec is not None, f"prefix {execution.last_event_id}: #{seq} never recorded"
            if rec.based_on > execution.last_event_id:
                break
            act = execution.resolve_local(seq, rec.result, rec.failure, rec.attempts)
        return act

    check_every_prefix(sim, "t", tasks, settle)
    # a cancelled timer never fires
    cancelled = {e.target for e in history if isinstance(e, ev.CancellationRequested)}
    cancelled_at = {
        e.target: e.event_id for e in history if isinstance(e, ev.CancellationRequested)
    }
    for e in history:
        if isinstance(e, ev.TimerFired) and e.seq in cancelled:
            assert e.event_id < cancelled_at[e.seq]
    return history


@SETTINGS
@given(plan=plans, data=st.data())
def test_replaying_any_prefix_makes_the_same_decisions(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    check_replays(plan, None, data)


def test_a_cancel_after_a_local_activity_sees_what_its_record_was_based_on() -> None:
    """The race's activity completes and the first timer fires before the next workflow task:
    the local activity's outcome reaches the code after both, so ``df.cancel`` finds the timer
    done and records nothing. A prefix ending before the timer fired leaves the local activity
    running (resolving it there would cancel the timer: another history, not this one)."""
    plan = [
        {"op": "sleep", "s": 0.5},
        {"op": "race", "i": 99, "v": 0, "s": 0.5, "c": False},
        {"op": "local", "v": 0},
        {"op": "act", "v": 0, "t": 0},
        {"op": "cancel", "i": 0},
        {"op": "sleep", "s": 0.5},
    ]
    history = check_replays(plan, [0, 0, 1, 0, 0, 0], None)
    fired = next(e for e in history if isinstance(e, ev.TimerFired) and e.seq == 1)
    (local,) = [e for e in history if isinstance(e, ev.LocalActivityRecorded)]
    assert local.based_on == fired.event_id
    assert not [e for e in history if isinstance(e, ev.CancellationRequested)]
    assert isinstance(history[-1], ev.WorkflowCompleted)
    assert history[-1].result == [["race", 0], ["local", 0], ["cancel", 1, True]]


@SETTINGS
@given(plan=plans, data=st.data())
def test_a_worker_without_cache_records_the_same_history(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    original, again = check_without_cache(lambda cache: new_sim(plan, cache=cache), run, data, "t")
    assert again.result("t") == original.result("t")
