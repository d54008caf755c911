"""Structured failures: exceptions to Failure and back, cause chains kept."""

from __future__ import annotations

import pytest

from durablefuture.core import errors
from durablefuture.core.failure import (
    MAX_CAUSE_DEPTH,
    MAX_STACK,
    Failure,
    FailureKind,
    exception_from_failure,
    failure_from_exception,
)


class LookupFailed(LookupError):
    pass


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_plain_exception_records_type_message_stack_and_bases() -> None:
    f = failure_from_exception(raised(LookupFailed("no such order")))
    assert (f.type, f.message, f.kind) == ("LookupFailed", "no such order", FailureKind.APPLICATION)
    assert f.type_hierarchy == ("LookupError",)
    assert "raise exc" in f.stack and "LookupFailed: no such order" in f.stack
    assert not f.non_retryable and f.details == () and f.cause is None


def test_an_empty_message_falls_back_to_the_type_name() -> None:
    assert failure_from_exception(KeyboardInterrupt()).message == "KeyboardInterrupt"


def test_explicit_and_implicit_cause_chains_are_recorded() -> None:
    def chained() -> BaseException:
        try:
            try:
                raise OSError("disk")
            except OSError as low:
                raise ValueError("parse") from low
        except ValueError:
            try:
                raise RuntimeError("outer")  # implicit context: the ValueError
            except RuntimeError as top:
                return top

    f = failure_from_exception(chained())
    assert [f.type, f.cause.type, f.cause.cause.type] == ["RuntimeError", "ValueError", "OSError"]  # type: ignore[union-attr]
    assert f.describe() == (
        "RuntimeError: outer; caused by ValueError: parse; caused by OSError: disk"
    )
    suppressed = raised(ValueError("x"))
    suppressed.__context__ = OSError("hidden")
    suppressed.__suppress_context__ = True
    assert failure_from_exception(suppressed).cause is None


def test_cause_chains_are_bounded() -> None:
    exc: BaseException = ValueError("0")
    for i in range(1, 40):
        nxt = ValueError(str(i))
        nxt.__cause__ = exc
        exc = nxt
    f = failure_from_exception(exc)
    depth = 0
    while f.cause is not None:
        f, depth = f.cause, depth + 1
    assert depth == MAX_CAUSE_DEPTH


def test_stack_is_truncated_to_its_tail() -> None:
    f = failure_from_exception(raised(ValueError("x" * 20_000 + " the end")))
    assert len(f.stack) == MAX_STACK
    assert f.stack.endswith(" the end\n")


def test_application_error_fields_are_recorded() -> None:
    err = errors.ApplicationError(
        "declined", {"code": 51}, "x", type="CardDeclined", non_retryable=True, next_retry_delay=3.0
    )
    f = failure_from_exception(err, lambda ds: tuple(repr(d) for d in ds))
    assert (f.type, f.message, f.non_retryable, f.next_retry_delay) == (
        "CardDeclined",
        "declined",
        True,
        3.0,
    )
    assert f.details == ("{'code': 51}", "'x'")
    assert f.type_hierarchy == ("FailureError", "DurableFutureError")
    untyped = failure_from_exception(errors.ApplicationError("plain"))
    assert untyped.type == "ApplicationError"


def test_unencodable_details_never_hide_the_error() -> None:
    def refuse(_: tuple[object, ...]) -> tuple[()]:
        raise TypeError("cannot encode")

    f = failure_from_exception(errors.ApplicationError("boom", object()), refuse)
    assert f.message == "boom"
    assert f.details[-1] == "(details could not be encoded: cannot encode)"
    assert str(f.details[0]).startswith("<object object")


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        (FailureKind.APPLICATION, errors.ApplicationError),
        (FailureKind.ACTIVITY, errors.ActivityError),
        (FailureKind.CHILD_WORKFLOW, errors.ChildWorkflowError),
        (FailureKind.CANCELLED, errors.CancelledError),
        (FailureKind.TIMEOUT, errors.TimeoutError),
        (FailureKind.TERMINATED, errors.TerminatedError),
        (FailureKind.SERVER, errors.ApplicationError),
    ],
)
def test_exception_from_failure_picks_the_class_by_kind(kind: str, cls: type) -> None:
    f = Failure("m", type="T", kind=kind, timeout_type="stc")
    exc = exception_from_failure(f)
    assert type(exc) is cls
    assert exc.failure == f
    if isinstance(exc, errors.TimeoutError):
        assert exc.timeout_type == "stc"


def test_round_trip_keeps_the_record_through_rebuilt_errors() -> None:
    f = Failure(
        "declined",
        type="CardDeclined",
        non_retryable=True,
        details=({"code": 51}, [1, 2]),
        next_retry_delay=1.5,
        cause=Failure("timeout", type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type="x"),
    )
    exc = exception_from_failure(f)
    assert isinstance(exc, errors.ApplicationError)
    assert (exc.type, exc.non_retryable, exc.details, exc.next_retry_delay) == (
        "CardDeclined",
        True,
        ({"code": 51}, [1, 2]),
        1.5,
    )
    assert isinstance(exc.cause, errors.TimeoutError)
    assert failure_from_exception(exc) == f  # re-raised as is: recorded unchanged


def test_a_new_error_wrapping_a_rebuilt_one_chains_to_the_record() -> None:
    inner = Failure("declined", type="CardDeclined")
    try:
        try:
            raise exception_from_failure(inner)
        except errors.ApplicationError as e:
            raise RuntimeError("order failed") from e
    except RuntimeError as outer:
        f = failure_from_exception(outer)
    assert f.type == "RuntimeError" and f.cause == inner


def test_failure_kinds_of_engine_errors() -> None:
    assert failure_from_exception(errors.CancelledError("c")).kind == FailureKind.CANCELLED
    t = failure_from_exception(errors.TimeoutError("t", timeout_type="heartbeat"))
    assert (t.kind, t.timeout_type) == (FailureKind.TIMEOUT, "heartbeat")
    assert failure_from_exception(errors.TerminatedError("x")).kind == FailureKind.TERMINATED
    assert failure_from_exception(errors.ActivityError("a")).kind == FailureKind.ACTIVITY
    assert failure_from_exception(errors.ChildWorkflowError("c")).kind == FailureKind.CHILD_WORKFLOW


def test_matches_type() -> None:
    f = Failure("m", type="A", type_hierarchy=("B", "C"))
    assert f.matches_type(("C",)) and f.matches_type(("A", "Z"))
    assert not f.matches_type(()) and not f.matches_type(("Z",))


def test_failure_fields_accept_lists() -> None:
    f = Failure("m", details=[1, 2], type_hierarchy=["A"])  # type: ignore[arg-type]
    assert f.details == (1, 2) and f.type_hierarchy == ("A",)
    with pytest.raises(TypeError):
        Failure("m", details=5)  # type: ignore[arg-type]


def test_error_tree_has_one_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.DurableFutureError), name
