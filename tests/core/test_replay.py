"""Replay: hand-built histories in, commands and outcomes out."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CompleteWorkflow,
    FailWorkflow,
    ScheduleActivity,
    StartTimer,
)
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.errors import WorkflowError
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import ActivityOptions, RetryPolicy
from durablefuture.testing import Replayer, Simulation
from tests.core.helpers import OPTS, T0, Driver, History, app_failure, execution, primitive, replay

DEFAULT_OPTS = ActivityOptions().resolved("q")


# ------------------------------------------------------------------ results in, commands out


def two_steps(x: int) -> Generator[Any, Any, Any]:
    a = yield df.activity("double", x)
    b = yield df.activity("describe", a)
    return [a, b]


def test_first_activation_schedules_the_first_activity_with_resolved_options() -> None:
    act = replay(two_steps, History("two_steps", 4).events)
    assert act.commands == (ScheduleActivity(1, "double", (4,), DEFAULT_OPTS),)
    assert DEFAULT_OPTS.task_queue == "q"  # the run's task queue
    assert DEFAULT_OPTS.start_to_close_timeout == 300.0
    assert act.based_on == 1
    assert not act.finished


def test_results_are_sent_into_the_generator_in_order() -> None:
    d = Driver(two_steps, 4)
    d.step()
    d.h.completed(1, 8)
    act = d.step()
    assert act.commands == (ScheduleActivity(2, "describe", (8,), DEFAULT_OPTS),)
    d.h.completed(2, "eight")
    act = d.step()
    assert act.commands == (CompleteWorkflow([8, "eight"]),)
    assert act.finished
    assert act.terminal == CompleteWorkflow([8, "eight"])
    assert isinstance(d.h.events[-1], ev.WorkflowCompleted)  # recorded by the driver
    # a full replay of the finished history re-issues nothing
    full = d.full_replay()
    assert full.commands == ()
    assert full.finished


def test_an_unfinished_history_replays_to_the_same_pending_commands() -> None:
    h = History("two_steps", 4)
    h.activity(1, "double", 4)
    h.completed(1, 8)
    act = replay(two_steps, h.events)
    assert [type(c) for c in act.commands] == [ScheduleActivity]
    assert act.commands[0].seq == 2  # type: ignore[union-attr]
    assert act.based_on == 3


@dataclasses.dataclass
class Receipt:
    order: str
    cents: int


def make_receipt(order: str) -> Receipt:  # pragma: no cover - never executed in replay
    raise AssertionError


def typed(order: str) -> Generator[Any, Any, Any]:
    receipt = yield df.activity(make_receipt, order)
    assert isinstance(receipt, Receipt)
    return receipt.cents + 1


def test_results_are_structured_to_the_activity_return_hint() -> None:
    d = Driver(typed, "o-1")
    d.step()
    d.h.completed(1, {"order": "o-1", "cents": 41})
    assert d.step().commands == (CompleteWorkflow(42),)


# ------------------------------------------------------------------ failures


ROOT = Failure(
    message="card declined",
    type="PaymentDeclined",
    non_retryable=True,
    details=("card-1", 3),
    type_hierarchy=("ApplicationError", "FailureError", "DurableFutureError"),
    cause=Failure(message="gateway said no", type="GatewayError"),
)


def test_a_failed_activity_throws_activity_error_with_the_structured_cause() -> None:
    seen: list[BaseException] = []

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.activity("charge", 10)
        except df.ActivityError as err:
            seen.append(err)
            return "compensated"
        return "charged"

    d = Driver(wf)
    d.step()
    d.h.failed(1, ROOT, attempt=3, retry_state="non_retryable")
    assert d.step().commands == (CompleteWorkflow("compensated"),)
    (err,) = seen
    assert isinstance(err, df.ActivityError)
    assert (err.activity_name, err.activity_id, err.attempt, err.retry_state) == (
        "charge",
        1,
        3,
        "non_retryable",
    )
    assert "card declined" in str(err) and "gateway said no" in str(err)
    cause = err.cause
    assert isinstance(cause, df.ApplicationError)
    assert cause.type == "PaymentDeclined"
    assert cause.non_retryable is True
    assert cause.details == ("card-1", 3)
    assert cause.failure == ROOT
    inner = cause.__cause__
    assert isinstance(inner, df.ApplicationError)
    assert inner.type == "GatewayError"
    assert inner.message == "gateway said no"


def test_an_activity_timeout_throws_activity_error_caused_by_timeout_error() -> None:
    seen: list[BaseException] = []

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.activity("slow")
        except df.ActivityError as err:
            seen.append(err)

    d = Driver(wf)
    d.step()
    failure = Failure(
        message="too slow", type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type="stc"
    )
    d.h.add(ev.ActivityTimedOut, seq=1, attempt=2, timeout_type="stc", failure=failure)
    assert d.step().commands == (CompleteWorkflow(None),)
    cause = seen[0].cause
    assert isinstance(cause, df.TimeoutError)
    assert cause.timeout_type == "stc"


def test_an_uncaught_activity_error_fails_the_workflow_keeping_the_cause_chain() -> None:
    d = Driver(two_steps, 1)
    d.step()
    d.h.failed(1, ROOT)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "ActivityError"
    assert cmd.failure.kind == FailureKind.ACTIVITY
    assert cmd.failure.cause == ROOT  # the recorded failure, unchanged


def test_generator_swallowing_an_exception_goes_on() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:  # noqa: SIM105 - the point is a plain try/except around the yield
            yield df.activity("a")
        except df.ActivityError:
            pass
        b = yield df.activity("b")
        return b

    d = Driver(wf)
    d.step()
    d.h.failed(1, app_failure())
    assert d.step().commands == (ScheduleActivity(2, "b", (), DEFAULT_OPTS),)
    d.h.completed(2, "ok")
    assert d.step().commands == (CompleteWorkflow("ok"),)


def test_yielding_inside_finally_runs_cleanup_then_fails_with_the_original_error() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.activity("reserve")
        finally:
            yield df.activity("release")

    d = Driver(wf)
    d.step()
    d.h.failed(1, app_failure("no stock", "OutOfStock"))
    assert d.step().commands == (ScheduleActivity(2, "release", (), DEFAULT_OPTS),)
    d.h.completed(2)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "ActivityError"
    assert cmd.failure.cause is not None and cmd.failure.cause.type == "OutOfStock"


def test_returning_none_completes_with_none() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.sleep(1)

    d = Driver(wf)
    assert d.step().commands == (StartTimer(1, 1.0, T0),)
    d.h.fired(1)
    act = d.step()
    assert act.commands == (CompleteWorkflow(None),)
    assert act.finished


def test_a_plain_function_is_refused_as_a_workflow_naming_it_with_an_example() -> None:
    def add_one(x: int) -> int:
        return x + 1

    with pytest.raises(df.InvalidArgumentError) as err:
        WorkflowDefinition.from_fn(add_one)
    message = str(err.value)
    assert "'add_one'" in message and "not a generator function" in message
    assert f"{__file__}:" in message  # where it is defined
    assert "yield df.activity(" in message  # a one-line example
    assert "\n" not in message


def test_every_way_of_registering_refuses_a_plain_function() -> None:
    def add_one(x: int) -> int:
        return x + 1

    with pytest.raises(df.InvalidArgumentError, match=r"'add_one' .*not a generator function"):
        Simulation([add_one])
    with pytest.raises(df.InvalidArgumentError, match=r"'add_one' .*not a generator function"):
        Replayer(workflows=[add_one])


def test_decorated_partial_and_callable_object_workflows_are_accepted() -> None:
    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            return fn(*args)

        return wrapper

    @logged
    def wrapped(x: int) -> Generator[Any, Any, Any]:
        yield df.sleep(x)

    class Flow:
        def __call__(self) -> Generator[Any, Any, Any]:
            yield df.sleep(1)

    def two(a: int, b: int) -> Generator[Any, Any, Any]:
        yield df.sleep(a + b)

    for fn in (wrapped, Flow(), functools.partial(two, 1)):
        assert WorkflowDefinition.from_fn(df.defn(fn, name="flow")).name == "flow"


def test_async_generator_workflows_are_refused_with_their_own_message() -> None:
    async def stream() -> Any:
        yield 1

    with pytest.raises(df.InvalidArgumentError, match=r"'stream' .*async generator.*drop `async`"):
        WorkflowDefinition.from_fn(stream)


def test_raising_fails_the_workflow_with_type_and_message() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.activity("a")
        raise KeyError("missing")

    d = Driver(wf)
    d.step()
    d.h.completed(1)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "KeyError"
    assert "missing" in cmd.failure.message
    assert "raise KeyError" in cmd.failure.stack


def test_raising_application_error_records_type_details_and_flags() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        raise df.ApplicationError("bad order", {"id": 7}, type="BadOrder", non_retryable=True)

    d = Driver(wf)
    d.step()
    d.h.fired(1)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    f = cmd.failure
    assert (f.type, f.message, f.non_retryable, f.details) == (
        "BadOrder",
        "bad order",
        True,
        ({"id": 7},),
    )


def test_raising_before_the_first_yield_fails_the_workflow() -> None:
    def wf(x: int) -> Generator[Any, Any, Any]:
        if x:
            raise ValueError("x must be 0")
        yield df.sleep(1)

    (cmd,) = replay(wf, History("wf", 1).events).commands
    assert isinstance(cmd, FailWorkflow) and cmd.failure.type == "ValueError"


def test_an_unencodable_result_fails_the_workflow_with_payload_error() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        return object()

    d = Driver(wf)
    d.step()
    d.h.fired(1)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "PayloadError"
    assert "the result of workflow 'wf'" in cmd.failure.message


# ------------------------------------------------------------------ yielding the wrong thing


def test_yielding_a_non_command_raises_workflow_error_naming_the_value() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield 42

    (cmd,) = replay(wf, History("wf").events).commands
    assert isinstance(cmd, FailWorkflow)
    assert cmd.failure.type == "WorkflowError"
    assert "yielded 42 (int)" in cmd.failure.message
    assert f"{__file__}:" in cmd.failure.message  # where it happened
    assert "df.activity(...)" in cmd.failure.message  # what to do instead


def test_the_workflow_error_is_raised_at_the_yield_and_can_be_caught() -> None:
    caught: list[BaseException] = []

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield "not a command"
        except WorkflowError as err:
            caught.append(err)
        yield df.activity("after")

    act = replay(wf, History("wf").events)
    assert act.commands == (ScheduleActivity(1, "after", (), DEFAULT_OPTS),)
    assert "'not a command' (str)" in str(caught[0])


def _failure_message(fn: Any) -> str:
    d = Driver(fn)
    d.step()
    d.h.fired(1)
    (cmd,) = d.step().commands
    assert isinstance(cmd, FailWorkflow), cmd
    return cmd.failure.message


def test_returning_a_command_names_the_missing_yield_and_the_line_of_the_return() -> None:
    def charge(order_id: str) -> float: ...

    def wf() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        return df.activity(charge, "o-1")  # forgot: return (yield df.activity(...))

    message = _failure_message(wf)
    line = wf.__code__.co_firstlineno + 2
    assert message.startswith(
        f"the result of workflow 'wf' is df.activity('charge', ...), created at {__file__}:{line}"
    )
    assert "Did you forget `yield`?" in message
    assert "return (yield df.activity('charge', ...))" in message
    assert "cannot be encoded as JSON" not in message


def test_a_result_holding_a_command_or_continue_as_new_is_a_forgotten_yield() -> None:
    def nested() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        return {"steps": [df.sleep(5)]}

    message = _failure_message(nested)
    assert "'nested' contains df.sleep(5), created at " in message
    assert "forget `yield`" in message

    def restart() -> Generator[Any, Any, Any]:
        yield df.sleep(1)
        return df.continue_as_new(2)

    message = _failure_message(restart)
    assert "'restart' is df.continue_as_new(...)" in message
    assert "Write `yield df.continue_as_new(...)` (it ends the run)" in message


def test_a_command_passed_as_an_argument_to_another_is_a_forgotten_yield() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield df.activity("ship", df.activity("charge", 1))

    (cmd,) = replay(wf, History("wf").events).commands
    assert isinstance(cmd, FailWorkflow) and cmd.failure.type == "PayloadError"
    line = wf.__code__.co_firstlineno + 1
    assert cmd.failure.message.startswith(
        "argument 0 (ActivityCall) of activity 'ship' is df.activity('charge', ...), "
        f"created at {__file__}:{line}"
    )
    assert "Did you forget `yield`?" in cmd.failure.message


def test_yielding_a_list_of_commands_hints_at_all_of() -> None:
    def wf() -> Generator[Any, Any, Any]:
        yield [df.activity("a"), df.activity("b")]

    (cmd,) = replay(wf, History("wf").events).commands
    assert isinstance(cmd, FailWorkflow)
    assert "yield df.all_of(...)" in cmd.failure.message


def test_yielding_a_function_hints_at_df_activity() -> None:
    def charge() -> None: ...

    def wf() -> Generator[Any, Any, Any]:
        yield charge

    (cmd,) = replay(wf, History("wf").events).commands
    assert isinstance(cmd, FailWorkflow)
    assert "yield df.activity(charge, ...)" in cmd.failure.message


def test_yielding_a_coroutine_closes_it_and_explains() -> None:
    async def fetch() -> None: ...

    coros: list[Any] = []

    def wf() -> Generator[Any, Any, Any]:
        c = fetch()
        coros.append(c)
        yield c

    (cmd,) = replay(wf, History("wf").events).commands
    assert isinstance(cmd, FailWorkflow)
    assert "coroutine cannot be yielded" in cmd.failure.message
    assert coros[0].cr_frame is None  # closed: no "never awaited" warning


def test_async_workflows_are_rejected_at_registration() -> None:
    async def wf() -> None: ...

    with pytest.raises(df.InvalidArgumentError, match=r"'wf' .*`async def`.*generator functions"):
        WorkflowDefinition.from_fn(wf)


# ------------------------------------------------------------------ all_of / any_of


def test_all_of_schedules_everything_at_once_and_returns_results_in_item_order() -> None:
    def wf() -> Generator[Any, Any, Any]:
        out = yield df.all_of(df.activity("a"), df.activity("b"), df.sleep(5))
        return out

    d = Driver(wf)
    act = d.step()
    assert act.commands == (
        ScheduleActivity(1, "a", (), DEFAULT_OPTS),
        ScheduleActivity(2, "b", (), DEFAULT_OPTS),
        StartTimer(3, 5.0, T0),
    )
    d.h.completed(2, "B")
    assert d.step().commands == ()
    d.h.fired(3)
    assert d.step().commands == ()
    d.h.completed(1, "A")
    assert d.step().commands == (CompleteWorkflow(["A", "B", None]),)


def test_all_of_accepts_a_list_and_an_empty_one_returns_at_once() -> None:
    def wf() -> Generator[Any, Any, Any]:
        empty = yield df.all_of([])
        listed = yield df.all_of([df.activity("a", i) for i in range(2)])
        return [empty, listed]

    d = Driver(wf)
    assert [c.seq for c in primitive(d.step().commands)] == [1, 2]
    d.h.completed(1, 10)
    d.h.completed(2, 11)
    assert d.step().commands == (CompleteWorkflow([[], [10, 11]]),)


def test_all_of_fails_fast_and_ignores_the_late_siblings() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.all_of(df.activity("a"), df.activity("b"))
        except df.ActivityError as err:
            nxt = yield df.activity("compensate", err.activity_name)
            return nxt
        return "all ok"

    d = Driver(wf)
    d.step()
    d.h.failed(2, app_failure())
    assert d.step().commands == (ScheduleActivity(3, "compensate", ("b",), DEFAULT_OPTS),)
    d.h.completed(1, "late")  # the abandoned sibling finishes later: nothing happens
    assert d.step().commands == ()
    d.h.completed(3, "undone")
    assert d.step().commands == (CompleteWorkflow("undone"),)
    assert d.full_replay().commands == ()


def test_any_of_returns_index_and_result_of_the_first_and_abandons_the_rest() -> None:
    def wf() -> Generator[Any, Any, Any]:
        first = yield df.any_of(df.activity("slow"), df.sleep(30))
        after = yield df.activity("next")
        return [list(first), after]

    d = Driver(wf)
    assert [type(c) for c in d.step().commands] == [ScheduleActivity, StartTimer]
    d.h.fired(2)
    assert d.step().commands == (ScheduleActivity(3, "next", (), DEFAULT_OPTS),)
    d.h.completed(1, "too late")
    d.h.completed(3, "n")
    assert d.step().commands == (CompleteWorkflow([[1, None], "n"]),)


def test_any_of_failure_of_the_first_finisher_is_raised() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.any_of(df.activity("a"), df.activity("b"))
        except df.ActivityError as err:
            return err.activity_name
        return "none failed"

    d = Driver(wf)
    d.step()
    d.h.failed(1, app_failure())
    d.h.completed(2, "b won?")
    assert d.step().commands == (CompleteWorkflow("a"),)


def test_nested_groups() -> None:
    def wf() -> Generator[Any, Any, Any]:
        out = yield df.all_of(
            df.any_of(df.activity("a"), df.sleep(10)),
            df.all_of(df.activity("b"), df.activity("c")),
        )
        return out

    d = Driver(wf)
    assert [c.seq for c in primitive(d.step().commands)] == [1, 2, 3, 4]
    d.h.completed(4, "C")
    d.h.fired(2)  # the any_of is decided by the timer
    d.h.completed(1, "A too late")
    assert d.step().commands == ()
    d.h.completed(3, "B")
    assert d.step().commands == (CompleteWorkflow([[1, None], ["B", "C"]]),)
    assert d.full_replay().commands == ()


def test_nested_failure_propagates_through_every_level() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.any_of(df.all_of(df.activity("a"), df.activity("b")), df.sleep(60))
        except df.ActivityError:
            return "inner failure surfaced"
        return "no failure"

    d = Driver(wf)
    d.step()
    d.h.failed(2, app_failure())
    assert d.step().commands == (CompleteWorkflow("inner failure surfaced"),)


def test_any_of_needs_at_least_one_command() -> None:
    with pytest.raises(df.InvalidArgumentError, match="at least one"):
        df.any_of()
    with pytest.raises(df.InvalidArgumentError, match="item 1"):
        df.all_of(df.sleep(1), "nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------ side effects


def test_side_effect_is_run_once_recorded_and_replayed_from_history() -> None:
    calls: list[int] = []

    def roll() -> int:
        calls.append(1)
        return 100 + len(calls)

    def wf() -> Generator[Any, Any, Any]:
        v = yield df.side_effect(roll)
        yield df.activity("use", v)

    d = Driver(wf)
    act = d.step()
    assert [type(c).__name__ for c in act.commands] == ["RecordSideEffect", "ScheduleActivity"]
    assert act.commands[0] == df_record(1, 101)
    assert act.commands[1] == ScheduleActivity(2, "use", (101,), DEFAULT_OPTS)
    assert calls == [1]
    # replay: the function is not called again and the recorded value is used
    assert d.full_replay().commands == ()
    assert calls == [1]
    # history has another value recorded (say the code changed): replay uses it
    h = History("wf")
    h.side_effect(1, 7)
    act = replay(wf, h.events)
    assert act.commands == (ScheduleActivity(2, "use", (7,), DEFAULT_OPTS),)
    assert calls == [1]


def df_record(seq: int, value: Any) -> Any:
    from durablefuture.core.commands import RecordSideEffect

    return RecordSideEffect(seq, value)


def test_a_failing_side_effect_is_recorded_and_raised_the_same_way_on_replay() -> None:
    def flaky() -> int:
        raise ValueError("sensor offline")

    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.side_effect(flaky)
        except Exception as err:
            # what the code sees must not depend on whether this is the first run
            yield df.activity("report", type(err).__name__, getattr(err, "type", None))

    d = Driver(wf)
    act = d.step()
    rec = act.commands[0]
    assert rec.failure is not None and rec.failure.type == "ValueError"  # type: ignore[union-attr]
    first = act.commands[1]
    assert d.full_replay().commands == ()  # no NonDeterminismError
    assert first == ScheduleActivity(2, "report", ("ApplicationError", "ValueError"), DEFAULT_OPTS)


def test_a_side_effect_value_is_seen_as_its_payload_on_the_first_run_too() -> None:
    def wf() -> Generator[Any, Any, Any]:
        v = yield df.side_effect(lambda: (1, 2))
        yield df.activity("kind", type(v).__name__)

    d = Driver(wf)
    act = d.step()
    d.full_replay()  # would raise NonDeterminismError if first run and replay differed
    assert act.commands[1] == ScheduleActivity(2, "kind", ("list",), DEFAULT_OPTS)


def test_a_side_effect_with_a_result_type_is_structured() -> None:
    def wf() -> Generator[Any, Any, Any]:
        v = yield df.side_effect(lambda: Receipt("o", 5), result_type=Receipt)
        yield df.activity("cents", v.cents)

    d = Driver(wf)
    act = d.step()
    assert act.commands[1] == ScheduleActivity(2, "cents", (5,), DEFAULT_OPTS)
    assert d.full_replay().commands == ()


# ------------------------------------------------------------------ options reach the command


def test_activity_options_are_resolved_against_the_run_task_queue() -> None:
    opts = ActivityOptions(schedule_to_close_timeout=60, retry_policy=RetryPolicy(jitter=0.5))

    def wf() -> Generator[Any, Any, Any]:
        yield df.activity("a", options=opts)
        yield df.activity("b", options=ActivityOptions(task_queue="gpu"))

    d = Driver(wf)
    (a,) = d.step().commands
    assert isinstance(a, ScheduleActivity)
    assert a.options.task_queue == "q"
    assert a.options.start_to_close_timeout == 60  # falls back to schedule_to_close
    assert a.options.retry_policy == RetryPolicy(jitter=0.5)
    d.h.completed(1)
    (b,) = d.step().commands
    assert isinstance(b, ScheduleActivity)
    assert b.options.task_queue == "gpu"
    assert b.options.retry_policy == RetryPolicy()


# ------------------------------------------------------------------ the execution object


def test_history_must_be_contiguous_and_start_with_workflow_started() -> None:
    h = History("two_steps", 1)
    h.activity(1, "double", 1)
    x = execution(two_steps)
    with pytest.raises(WorkflowError, match="not contiguous"):
        x.feed([h.events[0], h.events[1].__class__(**{**_fields(h.events[1]), "event_id": 5})])
    with pytest.raises(WorkflowError, match="not WorkflowStarted"):
        execution(two_steps).feed(
            [ev.TimerFired(event_id=1, at=0.0, seq=1)],
        )


def test_nothing_may_follow_the_terminal_event() -> None:
    h = History("wf")
    h.complete(None)
    h.add(ev.TimerFired, seq=1)

    def wf() -> Generator[Any, Any, Any]:
        return None
        yield

    with pytest.raises(WorkflowError, match="after the run's terminal event"):
        replay(wf, h.events)


def _fields(event: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(event, recurse=False)


def test_server_side_endings_close_the_execution() -> None:
    for cls in (ev.WorkflowTimedOut, ev.WorkflowTerminated):
        h = History("two_steps", 1)
        h.activity(1, "double", 1)
        h.add(cls)
        act = replay(two_steps, h.events)
        assert act.finished
        assert act.commands == ()


def test_incremental_feed_equals_full_replay_of_every_prefix() -> None:
    def order(n: int) -> Generator[Any, Any, Any]:
        total = 0
        for i in range(n):
            got = yield df.all_of(df.activity("add", i), df.sleep(1))
            total += got[0]
        if total > 2:
            yield df.any_of(df.activity("bonus", total), df.sleep(5))
        return total

    def add(i: int) -> int:
        return i

    def bonus(total: int) -> str:
        return f"bonus {total}"

    sim = Simulation([order], [add, bonus])
    sim.start(order, 4, id="o")
    sim.run()
    assert sim.result("o") == 6
    history = sim.run_of("o").events
    x = execution(order)
    for i, event in enumerate(history, start=1):
        incremental = x.feed([event])
        fresh = replay(order, history[:i])
        assert incremental == fresh, f"differs after event {i}"
    assert x.finished and x.closed


def test_info_reports_the_run() -> None:
    infos: list[Any] = []

    def wf() -> Generator[Any, Any, Any]:
        infos.append(df.workflow.info())
        yield df.sleep(1)
        infos.append(df.workflow.info())

    d = Driver(wf, run_id="r-9", workflow_id="w-9")
    d.step()
    d.h.fired(1)
    d.step()
    first, second = infos
    assert (first.workflow_id, first.run_id, first.workflow_type) == ("w-9", "r-9", "wf")
    assert first.first_run_id == "r-9"
    assert first.history_length == 1
    assert second.history_length == 3


def test_helpers_outside_a_workflow_raise_a_clear_error() -> None:
    with pytest.raises(WorkflowError, match="only works inside workflow code"):
        df.workflow.now()


def test_activation_of_a_history_with_options_from_another_queue_still_matches() -> None:
    # replay compares kind, name and arguments, not the resolved options
    h = History("two_steps", 1)
    h.activity(1, "double", 1, opts=OPTS)
    assert replay(two_steps, h.events).commands == ()
