"""Options validate themselves: every bad value raises InvalidArgumentError saying what to set."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

import durablefuture as df
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import (
    DEFAULT_START_TO_CLOSE,
    ActivityOptions,
    Backoff,
    IdReusePolicy,
    ParentClosePolicy,
    RetryPolicy,
    WorkflowOptions,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_interval": 0}, "initial_interval must be > 0 seconds.*set e.g."),
        ({"initial_interval": -1}, "initial_interval must be >= 0 seconds"),
        ({"initial_interval": "1s"}, "initial_interval must be a timedelta or a number"),
        ({"initial_interval": True}, "initial_interval must be a timedelta or a number"),
        ({"initial_interval": float("nan")}, "initial_interval must be >= 0"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be >= 1 for EXPONENTIAL.*2.0"),
        ({"backoff_coefficient": -1, "backoff": Backoff.LINEAR}, ">= 0 for LINEAR"),
        ({"backoff_coefficient": "2"}, "backoff_coefficient must be a number"),
        ({"backoff_coefficient": True}, "backoff_coefficient must be a number"),
        ({"backoff_coefficient": float("nan")}, "backoff_coefficient must be a number"),
        ({"initial_interval": 10, "maximum_interval": 5}, "maximum_interval .* shorter than"),
        ({"maximum_interval": -1}, "maximum_interval must be >= 0"),
        ({"maximum_attempts": -1}, "maximum_attempts must be an int >= 0 .0 = unlimited"),
        ({"maximum_attempts": 2.5}, "maximum_attempts must be an int"),
        ({"maximum_attempts": True}, "maximum_attempts must be an int"),
        ({"backoff": "quadratic"}, "backoff must be Backoff.EXPONENTIAL, LINEAR or FIXED"),
        ({"backoff": 3}, "backoff must be Backoff"),
        ({"non_retryable_error_types": 5}, "non_retryable_error_types takes a list"),
        ({"non_retryable_error_types": [5]}, "takes error type names or exception classes"),
        ({"jitter": 1.5}, "jitter must be a fraction between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be a fraction"),
        ({"jitter": True}, "jitter must be a fraction"),
    ],
)
def test_bad_retry_policies(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        RetryPolicy(**kwargs)


def test_retry_policy_defaults_and_conversions() -> None:
    p = RetryPolicy()
    assert (p.initial_interval, p.backoff_coefficient, p.maximum_attempts) == (1.0, 2.0, 0)
    assert p.effective_maximum_interval == 100.0
    q = RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        maximum_interval=timedelta(seconds=3),
        backoff="linear",
        backoff_coefficient=0,
        non_retryable_error_types=ValueError,
    )
    assert (q.initial_interval, q.maximum_interval, q.backoff) == (0.5, 3.0, Backoff.LINEAR)
    assert q.non_retryable_error_types == ("ValueError",)
    assert RetryPolicy(non_retryable_error_types="X").non_retryable_error_types == ("X",)
    assert RetryPolicy(backoff="FIXED", backoff_coefficient=0).backoff is Backoff.FIXED
    assert isinstance(InvalidArgumentError("x"), ValueError)  # catchable as ValueError too


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_to_close_timeout": 0}, "start_to_close_timeout must be > 0 seconds.*None"),
        ({"schedule_to_close_timeout": -5}, "schedule_to_close_timeout must be >= 0"),
        ({"schedule_to_start_timeout": 0}, "schedule_to_start_timeout must be > 0"),
        ({"heartbeat_timeout": "soon"}, "heartbeat_timeout must be a timedelta or a number"),
        ({"task_queue": "has space"}, "task queue 'has space' is not valid: use 1-128 letters"),
        ({"task_queue": ""}, "task queue '' is not valid"),
        ({"task_queue": 5}, "task_queue must be a string"),
        ({"retry_policy": {"maximum_attempts": 3}}, "retry_policy must be a df.RetryPolicy"),
    ],
)
def test_bad_activity_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ActivityOptions(**kwargs)


def test_activity_options_resolve_defaults() -> None:
    r = ActivityOptions().resolved("q")
    assert r.start_to_close_timeout == DEFAULT_START_TO_CLOSE
    assert (r.task_queue, r.retry_policy) == ("q", RetryPolicy())
    s2c = ActivityOptions(schedule_to_close_timeout=timedelta(minutes=1)).resolved("q")
    assert s2c.start_to_close_timeout == 60.0
    own = ActivityOptions(task_queue="gpu", start_to_close_timeout=5).resolved("q")
    assert (own.task_queue, own.start_to_close_timeout) == ("gpu", 5.0)
    # resolving resolved options changes nothing, whatever the default queue
    for done in (r, s2c, own):
        assert done.resolved("other") == done
    # each default is filled in when it alone is missing
    no_policy = ActivityOptions(task_queue="gpu", start_to_close_timeout=5)
    assert no_policy.resolved("q").retry_policy == RetryPolicy()
    no_queue = ActivityOptions(start_to_close_timeout=5, retry_policy=RetryPolicy(jitter=0.1))
    assert no_queue.resolved("q") == attrs.evolve(no_queue, task_queue="q")
    no_stc = ActivityOptions(task_queue="gpu", retry_policy=RetryPolicy())
    assert no_stc.resolved("q").start_to_close_timeout == DEFAULT_START_TO_CLOSE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"execution_timeout": 0}, "execution_timeout must be > 0 seconds.*None for no limit"),
        ({"execution_timeout": -1}, "execution_timeout must be >= 0"),
        ({"task_queue": "a.b"}, "task queue 'a.b' is not valid"),
        ({"task_queue": None}, "task_queue must be a string"),
        ({"id_reuse_policy": "sometimes"}, "id_reuse_policy must be one of IdReusePolicy."),
        ({"parent_close_policy": 1}, "parent_close_policy must be one of ParentClosePolicy."),
    ],
)
def test_bad_workflow_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        WorkflowOptions(**kwargs)


def test_workflow_options_accept_policy_names() -> None:
    w = WorkflowOptions(id_reuse_policy="REJECT_DUPLICATE", parent_close_policy="abandon")
    assert w.id_reuse_policy is IdReusePolicy.REJECT_DUPLICATE
    assert w.parent_close_policy is ParentClosePolicy.ABANDON
    assert WorkflowOptions(execution_timeout=timedelta(hours=1)).execution_timeout == 3600.0


def test_workflow_id_and_namespace_checks() -> None:
    from durablefuture.core.types import check_namespace, check_workflow_id

    assert check_workflow_id("order-1") == "order-1"
    with pytest.raises(InvalidArgumentError, match="non-empty string"):
        check_workflow_id("")
    with pytest.raises(InvalidArgumentError, match="the limit is 512"):
        check_workflow_id("x" * 513)
    assert check_namespace("prod_1") == "prod_1"
    with pytest.raises(InvalidArgumentError, match="use 1-64 letters"):
        check_namespace("a b")


# ------------------------------------------------------------------ call-site validation


def charge(order_id: str, amount: float) -> dict[str, float]:
    return {"amount": amount}


def test_command_helpers_validate_at_the_call_site() -> None:
    with pytest.raises(InvalidArgumentError, match="sleep duration must be >= 0"):
        df.sleep(-1)
    assert df.sleep(timedelta(minutes=2)).duration == 120.0
    with pytest.raises(InvalidArgumentError, match="'charge' cannot be called with 1 argument"):
        df.activity(charge, "o-1")
    with pytest.raises(InvalidArgumentError, match=r"options must be a df.ActivityOptions"):
        df.activity(charge, "o-1", 1.0, options={"start_to_close_timeout": 5})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="expected a activity"):
        df.activity(lambda: None)
    with pytest.raises(InvalidArgumentError, match="activity name must not be empty"):
        df.activity("")
    with pytest.raises(InvalidArgumentError, match="task queue"):
        df.child_workflow("child", task_queue="bad queue")
    with pytest.raises(InvalidArgumentError, match="parent_close_policy must be"):
        df.child_workflow("child", parent_close_policy="abandon")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"df.side_effect takes a function"):
        df.side_effect(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="execution_timeout"):
        df.child_workflow("child", execution_timeout=-1)


def test_defn_names_functions() -> None:
    @df.defn(name="charge-card")
    def anything() -> None: ...

    assert df.activity(anything).name == "charge-card"
    assert df.activity(charge, "o", 1.0).name == "charge"
    assert df.activity("by-name", 1, 2).args == (1, 2)  # names skip the arity check
    with pytest.raises(InvalidArgumentError, match="decorates a function"):
        df.defn(5)  # type: ignore[call-overload]
