"""The in-memory Simulation, end to end: the real core playing server, workers and clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.testing import Replayer, Simulation

RETRY = df.ActivityOptions(
    start_to_close_timeout=10,
    retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=3),
)


def charge_credit_card(order_id: str, amount: float) -> dict[str, Any]:
    return {"order": order_id, "charged": amount}


async def ship_package(order_id: str) -> str:
    return f"track-{order_id}"


def order_workflow(order_id: str, amount: float) -> Generator[Any, Any, Any]:
    charge = yield df.activity(charge_credit_card, order_id, amount, options=RETRY)
    tracking = yield df.activity(ship_package, order_id)
    return {"charge": charge, "tracking": tracking}


def kinds(sim: Simulation, wid: str) -> list[str]:
    return [type(e).__name__ for e in sim.run_of(wid).events]


def test_order_workflow_end_to_end() -> None:
    sim = Simulation([order_workflow], [charge_credit_card, ship_package])
    sim.start(order_workflow, "o-1", 42.0, id="o-1")
    sim.run()
    assert sim.result("o-1") == {
        "charge": {"order": "o-1", "charged": 42.0},
        "tracking": "track-o-1",
    }
    assert kinds(sim, "o-1") == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    assert sim.activity_calls == [("charge_credit_card", 1, 1), ("ship_package", 2, 1)]
    Replayer([order_workflow]).replay(sim.run_of("o-1").events)  # the recorded history replays


def test_starting_a_running_id_again_is_refused() -> None:
    sim = Simulation([order_workflow], [charge_credit_card, ship_package])
    sim.start(order_workflow, "o-1", 1.0, id="o-1")
    with pytest.raises(df.WorkflowAlreadyStartedError, match="already running"):
        sim.start(order_workflow, "o-1", 1.0, id="o-1")
    # the same request id is idempotent
    opts = df.WorkflowOptions(request_id="req-x")
    rid = sim.start(order_workflow, "o-2", 1.0, id="o-2", options=opts)
    assert sim.start(order_workflow, "o-2", 1.0, id="o-2", options=opts) == rid


def make_flaky(fail_times: int) -> Any:
    calls: list[int] = []

    @df.defn(name="flaky")
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) <= fail_times:
            raise df.ApplicationError(f"try {len(calls)}", type="Transient")
        return x * 10

    return flaky


def uses_flaky(x: int) -> Generator[Any, Any, Any]:
    try:
        r = yield df.activity("flaky", x, options=RETRY)
    except df.ActivityError as err:
        return {"failed": err.attempt, "cause": err.cause.type}  # type: ignore[union-attr]
    return {"ok": r, "at": df.workflow.now().timestamp()}


def test_retries_with_a_flaky_activity_succeed_after_backoff() -> None:
    sim = Simulation([uses_flaky], [make_flaky(2)], start_time=1000.0)
    sim.start(uses_flaky, 4, id="f")
    sim.run()
    assert sim.result("f") == {"ok": 40, "at": 1000.0 + 1 + 2}  # backoff 1 s, then 2 s
    assert kinds(sim, "f").count("ActivityRetryScheduled") == 2
    assert [c[2] for c in sim.activity_calls] == [1, 2, 3]


def test_retries_exhausted_raise_activity_error_in_the_workflow() -> None:
    sim = Simulation([uses_flaky], [make_flaky(5)])
    sim.start(uses_flaky, 4, id="f")
    sim.run()
    assert sim.result("f") == {"failed": 3, "cause": "Transient"}
    failed = sim.run_of("f").events[-2]
    assert isinstance(failed, ev.ActivityFailed)
    assert failed.retry_state == "maximum_attempts_reached"


def test_an_unregistered_activity_fails_the_attempts() -> None:
    sim = Simulation([uses_flaky], [])
    sim.start(uses_flaky, 1, id="f")
    sim.run()
    assert sim.result("f") == {"failed": 3, "cause": "ActivityNotRegistered"}


def child(n: int) -> Generator[Any, Any, Any]:
    yield df.sleep(n)
    if n > 5:
        raise df.ApplicationError("too long", type="TooLong")
    return n * 2


def parent(ns: list[int]) -> Generator[Any, Any, Any]:
    out = []
    for n in ns:
        try:
            out.append((yield df.child_workflow(child, n)))
        except df.ChildWorkflowError as err:
            out.append(err.cause.type)  # type: ignore[union-attr]
    both = yield df.all_of(df.child_workflow(child, 1, id="fixed-id"), df.sleep(0.5))
    return [out, both]


def test_child_workflows_return_results_and_failures() -> None:
    sim = Simulation([parent, child])
    sim.start(parent, [2, 9], id="p")
    sim.run()
    assert sim.result("p") == [[4, "TooLong"], [2, None]]
    assert sim.status("fixed-id") == RunStatus.COMPLETED
    kids = [e for e in sim.run_of("p").events if isinstance(e, ev.ChildWorkflowStarted)]
    assert len(kids) == 3
    child_started = sim.run_of("fixed-id").events[0]
    assert isinstance(child_started, ev.WorkflowStarted)
    assert child_started.parent is not None and child_started.parent.workflow_id == "p"


def test_a_child_with_a_timer_beside_it_does_not_lose_the_timer() -> None:
    def racer() -> Generator[Any, Any, Any]:
        idx, _ = yield df.any_of(df.child_workflow(child, 4), df.sleep(1))
        return idx

    sim = Simulation([racer, child])
    sim.start(racer, id="r")
    sim.run()
    assert sim.result("r") == 1  # the 1 s timer wins against a 4 s child


def test_a_child_id_already_in_use_fails_the_child_call() -> None:
    def holder() -> Generator[Any, Any, Any]:
        yield df.wait_signal("never")

    def starter() -> Generator[Any, Any, Any]:
        try:
            yield df.child_workflow(child, 1, id="taken")
        except df.ChildWorkflowError as err:
            return err.cause.type  # type: ignore[union-attr]
        return "started"

    sim = Simulation([holder, starter, child])
    sim.start(holder, id="taken")
    sim.start(starter, id="s")
    sim.run()
    assert sim.result("s") == "WorkflowAlreadyStartedError"


def counter(n: int, total: int) -> Generator[Any, Any, Any]:
    yield df.sleep(1)
    if n < 3:
        yield df.continue_as_new(n + 1, total + n)
    return {
        "n": n,
        "total": total,
        "run": df.workflow.info().run_id,
        "first": df.workflow.info().first_run_id,
    }


def test_continue_as_new_chains_runs_under_one_id() -> None:
    sim = Simulation([counter])
    first = sim.start(counter, 0, 0, id="c")
    sim.run()
    out = sim.result("c")
    assert isinstance(out, dict)
    assert (out["n"], out["total"], out["first"]) == (3, 3, first)
    assert out["run"] != first
    chain = [r for r in sim.runs.values() if r.workflow_id == "c"]
    assert [r.state.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 3 + [
        RunStatus.COMPLETED
    ]
    with pytest.raises(df.WorkflowContinuedAsNewError):
        _first_result(sim, first)


def _first_result(sim: Simulation, run_id: str) -> object:
    from durablefuture.outcome import outcome_of

    return outcome_of(sim.runs[run_id].state.summary(), sim.payloads)


def approval() -> Generator[Any, Any, Any]:
    items = []
    while True:
        idx, value = yield df.any_of(df.wait_signal("item"), df.wait_signal("done"))
        if idx == 1:
            return {"items": items, "by": value}
        items.append(value)


def test_signals_are_delivered_in_order_and_buffered() -> None:
    sim = Simulation([approval])
    sim.start(approval, id="a")
    sim.signal("a", "item", "x")  # before the first workflow task ran
    sim.signal("a", "item", "y")
    sim.run()
    assert not sim.is_closed("a")
    sim.signal("a", "item", "z")
    sim.signal("a", "done", "alice")
    sim.run()
    assert sim.result("a") == {"items": ["x", "y", "z"], "by": "alice"}
    # a redelivered signal (same request id) is recorded once
    sim2 = Simulation([approval])
    sim2.start(approval, id="a")
    sim2.signal("a", "item", "x", request_id="s-1")
    sim2.signal("a", "item", "x", request_id="s-1")
    sim2.signal("a", "done", "bob")
    sim2.run()
    assert sim2.result("a") == {"items": ["x"], "by": "bob"}


def slow_step(x: int) -> int:
    return x


def cancellable() -> Generator[Any, Any, Any]:
    try:
        yield df.sleep(timedelta(days=1))
    finally:
        yield df.activity(slow_step, 99)


def test_cancel_runs_cleanup_and_ends_cancelled() -> None:
    sim = Simulation([cancellable], [slow_step])
    sim.start(cancellable, id="c")
    while sim.workflow_tasks:
        sim.run_workflow_task()
    sim.cancel("c", "no longer needed")
    sim.run()
    assert sim.status("c") == RunStatus.CANCELLED
    assert ("slow_step", 2, 1) in sim.activity_calls
    with pytest.raises(df.WorkflowCancelledError):
        sim.result("c")


# The simulation keeps the suspended generator of a run the server closed; when it is garbage
# collected, Python closes it and the `yield` in its `finally` is reported as ignored.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_terminate_ends_the_run_at_once() -> None:
    sim = Simulation([cancellable], [slow_step])
    sim.start(cancellable, id="t")
    sim.run_workflow_task()
    sim.terminate("t", "ops")
    sim.run()
    assert sim.status("t") == RunStatus.TERMINATED
    assert sim.activity_calls == []  # no cleanup on terminate
    assert kinds(sim, "t")[-1] == "WorkflowTerminated"
    with pytest.raises(df.WorkflowTerminatedError):
        sim.result("t")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_execution_timeout() -> None:
    sim = Simulation([cancellable], [slow_step], start_time=0.0)
    sim.start(cancellable, id="x", options=df.WorkflowOptions(execution_timeout=60))
    sim.run()
    assert sim.status("x") == RunStatus.TIMED_OUT
    last = sim.run_of("x").events[-1]
    assert isinstance(last, ev.WorkflowTimedOut) and last.at == 60.0
    with pytest.raises(df.WorkflowTimedOutError):
        sim.result("x")


def test_failed_workflow_result_raises_with_the_cause() -> None:
    def broken() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        raise df.ApplicationError("nope", type="Broken")

    sim = Simulation([broken])
    sim.start(broken, id="b")
    sim.run()
    with pytest.raises(df.WorkflowFailedError) as info:
        sim.result("b")
    assert isinstance(info.value.cause, df.ApplicationError)
    assert info.value.cause.type == "Broken"


def test_a_non_deterministic_worker_fails_the_workflow_task_and_the_run_stays_open() -> None:
    flip = {"new": False}

    def changing() -> Generator[Any, Any, Any]:
        yield df.activity(slow_step, 2 if flip["new"] else 1)
        yield df.sleep(1)

    sim = Simulation([changing], [slow_step], cache=False)
    sim.start(changing, id="n")
    sim.run_workflow_task()
    flip["new"] = True  # deploy changed code while the run is in flight
    sim.run_activity_task()
    sim.run_workflow_task()
    assert kinds(sim, "n")[-1] == "WorkflowTaskFailed"
    failed = sim.run_of("n").events[-1]
    assert isinstance(failed, ev.WorkflowTaskFailed)
    assert failed.failure.type == "NonDeterminismError"
    assert not sim.is_closed("n")
    flip["new"] = False  # roll back: the retried task succeeds
    sim.run()
    assert sim.status("n") == RunStatus.COMPLETED


def test_forgetting_caches_replays_from_history() -> None:
    sim = Simulation([order_workflow], [charge_credit_card, ship_package])
    sim.start(order_workflow, "o", 1.0, id="o")
    steps = 0
    while sim.pending():
        sim.forget_caches()
        _one_step(sim)
        steps += 1
    assert sim.result("o") == {"charge": {"order": "o", "charged": 1.0}, "tracking": "track-o"}
    assert steps >= 5


def _one_step(sim: Simulation) -> None:
    pick = sim.pending()[0]
    if pick.startswith("wft"):
        sim.run_workflow_task()
    elif pick.startswith("act"):
        sim.run_activity_task()
    else:
        sim.fire_next_timer()


def test_run_with_a_chooser_and_step_limit() -> None:
    sim = Simulation([order_workflow], [charge_credit_card, ship_package])
    sim.start(order_workflow, "o", 1.0, id="o")
    seen: list[list[str]] = []

    def last(options: list[str]) -> int:
        seen.append(list(options))
        return len(options) - 1

    sim.run(choose=last)
    assert sim.is_closed("o") and seen[0] == ["wft:0"]
    loop = Simulation([approval])
    loop.start(approval, id="a")

    def spin(options: list[str]) -> int:
        loop.signal("a", "item", 1)
        return 0

    with pytest.raises(RuntimeError, match="did not settle within 5 steps"):
        loop.run(choose=spin, max_steps=5)


def _sized_act(x: int) -> int:
    return x


def _sized_workflow():  # type: ignore[no-untyped-def]
    first = df.workflow.info().history_size
    yield df.activity(_sized_act, 1)
    second = df.workflow.info().history_size
    return [first, second]


def test_history_size_grows_and_replays_identically() -> None:
    results = []
    for cache in (True, False):
        sim = Simulation([_sized_workflow], [_sized_act], cache=cache)
        sim.start(_sized_workflow, id="sized")
        sim.run()
        results.append(sim.result("sized"))
    first, second = results[0]
    assert 0 < first < second
    assert results[0] == results[1]  # a full replay at every step measures the same sizes


@dataclasses.dataclass
class Parcel:
    sku: str
    weight: float


def weigh(parcel: Parcel) -> float:
    return parcel.weight


def weigh_it(raw: Any) -> Generator[Any, Any, Any]:
    try:
        return (yield df.activity(weigh, raw, options=ONCE))
    except df.ActivityError as err:
        return err.cause.failure.message  # type: ignore[union-attr]


def ship(parcel: Parcel, *extra: Parcel) -> Generator[Any, Any, Any]:
    yield df.sleep(1)
    return parcel.weight


ONCE = df.ActivityOptions(
    start_to_close_timeout=10, retry_policy=df.RetryPolicy(maximum_attempts=1)
)


def test_arguments_that_do_not_fit_the_type_hints_name_the_argument_and_fields() -> None:
    sim = Simulation([weigh_it, ship], [weigh])
    sim.start(weigh_it, {"weight": "heavy"}, id="act")
    sim.start(ship, {"sku": "s", "weight": 1.0}, {"weight": "x"}, id="wf")
    sim.run()
    assert sim.result("act") == (
        "cannot turn argument 'parcel' of activity 'weigh' into Parcel: field 'sku' missing; "
        "field 'weight' expected float, got str 'heavy'"
    )
    with pytest.raises(df.WorkflowFailedError) as err:
        sim.result("wf")
    assert "PayloadError: cannot turn argument 1 (*extra) of workflow 'ship' into Parcel: " in (
        str(err.value)
    )
    assert "field 'sku' missing; field 'weight' expected float, got str 'x'" in str(err.value)


def tagged(region: str) -> Generator[Any, Any, Any]:
    df.workflow.upsert_search_attributes({"Region": region, "Stage": "charged"})
    yield df.sleep(1)
    df.workflow.upsert_search_attributes({"Stage": None})
    return region


def test_search_attributes_and_memo_in_the_simulation() -> None:
    sim = Simulation([tagged], [])
    opts = df.WorkflowOptions(search_attributes={"Customer": "c-1"}, memo={"owner": "ops"})
    sim.start(tagged, "eu", id="t-1", options=opts)
    sim.run()
    assert sim.result("t-1") == "eu"
    summary = sim.run_of("t-1").state.summary()
    assert {k: a.value for k, a in summary.search_attributes.items()} == {
        "Customer": "c-1",
        "Region": "eu",
    }
    assert summary.memo == {"owner": "ops"}
    assert kinds(sim, "t-1").count("SearchAttributesUpserted") == 2
    Replayer([tagged]).replay(sim.run_of("t-1").events)


def tagged_chain(n: int) -> Generator[Any, Any, Any]:
    if n == 0:
        df.workflow.upsert_search_attributes({"Stage": "first"})
        yield df.continue_as_new(1)
    yield df.sleep(1)
    return n


def test_continue_as_new_carries_search_attributes_and_memo() -> None:
    sim = Simulation([tagged_chain], [])
    opts = df.WorkflowOptions(search_attributes={"Customer": "c-1"}, memo={"owner": "ops"})
    sim.start(tagged_chain, 0, id="chain-1", options=opts)
    sim.run()
    assert sim.result("chain-1") == 1
    summary = sim.run_of("chain-1").state.summary()  # the second run's
    assert {k: a.value for k, a in summary.search_attributes.items()} == {
        "Customer": "c-1",
        "Stage": "first",
    }
    assert summary.memo == {"owner": "ops"}
