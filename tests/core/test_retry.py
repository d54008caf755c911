"""Retry math: backoff kinds, caps, jitter, attempts, non-retryable types, cut-offs."""

from __future__ import annotations

import pytest

from durablefuture.core.failure import Failure
from durablefuture.core.options import Backoff, RetryPolicy
from durablefuture.core.retry import backoff_delay, decide_retry, stable_fraction

BOOM = Failure("boom", type="IOError", type_hierarchy=("OSError",))


def delays(policy: RetryPolicy, n: int = 6) -> list[float]:
    return [backoff_delay(policy, a) for a in range(1, n + 1)]


def test_exponential_doubles_and_caps_at_100x_initial_by_default() -> None:
    assert delays(RetryPolicy(initial_interval=1)) == [1, 2, 4, 8, 16, 32]
    assert backoff_delay(RetryPolicy(initial_interval=1), 8) == 100  # 128 capped
    assert delays(RetryPolicy(initial_interval=0.5, backoff_coefficient=3), 3) == [0.5, 1.5, 4.5]


def test_exponential_with_explicit_cap() -> None:
    p = RetryPolicy(initial_interval=2, maximum_interval=10)
    assert delays(p) == [2, 4, 8, 10, 10, 10]


def test_exponential_with_coefficient_one_is_constant() -> None:
    assert delays(RetryPolicy(initial_interval=3, backoff_coefficient=1), 3) == [3, 3, 3]


def test_linear_grows_by_a_fixed_step_and_caps() -> None:
    p = RetryPolicy(initial_interval=2, backoff_coefficient=1.5, backoff=Backoff.LINEAR)
    assert delays(p, 4) == [2, 5, 8, 11]
    capped = RetryPolicy(
        initial_interval=2, backoff_coefficient=1, maximum_interval=5, backoff=Backoff.LINEAR
    )
    assert delays(capped, 5) == [2, 4, 5, 5, 5]


def test_fixed_is_always_the_initial_interval() -> None:
    p = RetryPolicy(initial_interval=7, backoff=Backoff.FIXED, backoff_coefficient=0.1)
    assert delays(p, 4) == [7, 7, 7, 7]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    p = RetryPolicy(initial_interval=1, backoff_coefficient=10)
    assert backoff_delay(p, 10_000) == 100


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(RetryPolicy(), 0)


def test_jitter_is_deterministic_per_key_and_bounded() -> None:
    p = RetryPolicy(initial_interval=10, maximum_interval=10, jitter=0.2)
    keyed = [backoff_delay(p, 3, f"run:1:{i}") for i in range(200)]
    assert keyed == [backoff_delay(p, 3, f"run:1:{i}") for i in range(200)]
    assert all(8.0 <= d <= 12.0 for d in keyed)
    assert len(set(keyed)) > 150  # spread, not constant
    assert min(keyed) < 8.5 and max(keyed) > 11.5  # uses the whole band
    assert backoff_delay(RetryPolicy(initial_interval=10, jitter=0.0), 1, "k") == 10


def test_stable_fraction_spreads_keys_that_differ_only_at_the_end() -> None:
    # jitter keys are "run:seq:attempt": consecutive attempts must not get the same jitter
    values = [stable_fraction(f"run-1:7:{i}") for i in range(1000)]
    assert values == [stable_fraction(f"run-1:7:{i}") for i in range(1000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55
    deciles = [sum(1 for v in values if k / 10 <= v < (k + 1) / 10) for k in range(10)]
    assert min(deciles) > 60, deciles  # roughly uniform: ~100 in each tenth


def decide(policy: RetryPolicy, failure: Failure = BOOM, attempt: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "now": 100.0,
        "scheduled_at": 100.0,
        "schedule_to_close_timeout": None,
    }
    args.update(kw)
    return decide_retry(policy, failure, attempt, **args)  # type: ignore[arg-type]


def test_retries_until_maximum_attempts() -> None:
    p = RetryPolicy(maximum_attempts=3)
    assert decide(p, attempt=1).retry and decide(p, attempt=2).retry
    last = decide(p, attempt=3)
    assert not last.retry and last.reason == "maximum_attempts_reached"
    unlimited = decide(RetryPolicy(maximum_attempts=0), attempt=10_000)
    assert unlimited.retry and unlimited.delay == 100


def test_maximum_attempts_one_means_no_retry() -> None:
    assert not decide(RetryPolicy(maximum_attempts=1)).retry


def test_non_retryable_flag_wins() -> None:
    d = decide(RetryPolicy(), Failure("x", non_retryable=True))
    assert (d.retry, d.reason) == (False, "non_retryable")


@pytest.mark.parametrize("name", ["IOError", "OSError"])
def test_non_retryable_types_match_the_type_or_a_base_class(name: str) -> None:
    d = decide(RetryPolicy(non_retryable_error_types=[name]))
    assert (d.retry, d.reason) == (False, "non_retryable_error_type")


def test_non_retryable_types_given_as_classes_match_by_name() -> None:
    assert not decide(RetryPolicy(non_retryable_error_types=[OSError])).retry
    assert decide(RetryPolicy(non_retryable_error_types=[KeyError, "Other"])).retry


def test_application_error_type_is_matched() -> None:
    f = Failure("declined", type="CardDeclined", type_hierarchy=("ApplicationError",))
    assert not decide(RetryPolicy(non_retryable_error_types=("CardDeclined",)), f).retry
    assert not decide(RetryPolicy(non_retryable_error_types=("ApplicationError",)), f).retry
    assert decide(RetryPolicy(non_retryable_error_types=("Card",)), f).retry


def test_next_retry_delay_overrides_the_policy() -> None:
    f = Failure("slow down", next_retry_delay=42.0)
    d = decide(RetryPolicy(initial_interval=1), f)
    assert (d.retry, d.delay) == (True, 42.0)
    zero = decide(RetryPolicy(initial_interval=1), Failure("now", next_retry_delay=0.0))
    assert zero.delay == 0.0
    # but it does not lift the attempt limit
    assert not decide(RetryPolicy(maximum_attempts=1), f).retry


def test_schedule_to_close_cuts_retries_that_would_end_after_the_deadline() -> None:
    p = RetryPolicy(initial_interval=10)
    ok = decide(p, now=100.0, scheduled_at=100.0, schedule_to_close_timeout=15.0)
    assert ok.retry and ok.delay == 10
    cut = decide(p, attempt=2, now=100.0, scheduled_at=100.0, schedule_to_close_timeout=15.0)
    assert (cut.retry, cut.reason) == (False, "schedule_to_close_timeout")  # 100 + 20 >= 115
    exact = decide(p, now=105.0, scheduled_at=100.0, schedule_to_close_timeout=15.0)
    assert not exact.retry  # retry would start exactly at the deadline


def test_jittered_delay_reaches_the_decision() -> None:
    p = RetryPolicy(initial_interval=10, maximum_interval=10, jitter=0.5)
    d1 = decide(p, jitter_key="a")
    d2 = decide(p, jitter_key="b")
    assert d1.retry and 5 <= d1.delay <= 15 and d1.delay != d2.delay
    assert decide(p, jitter_key="a").delay == d1.delay
