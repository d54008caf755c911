"""Retry math: the delay before the next attempt, and whether there is one.

Pure functions of (policy, attempt, failure, times). Jitter is deterministic: it is derived from
a caller-supplied key (run id, activity id, attempt), so deciding twice gives the same answer.
"""

from __future__ import annotations

from attrs import frozen

from durablefuture.core.failure import Failure
from durablefuture.core.options import Backoff, RetryPolicy

__all__ = ["RetryDecision", "backoff_delay", "decide_retry", "stable_fraction"]


_MASK = 0xFFFFFFFFFFFFFFFF


def stable_fraction(key: str) -> float:
    """A number in [0, 1) derived from ``key`` (FNV-1a), the same on every machine."""
    h = 0xCBF29CE484222325
    for b in key.encode():
        h ^= b
        h = (h * 0x100000001B3) & _MASK
    # FNV-1a barely moves the high bits for keys that differ only at the end (the attempt
    # number in "run:seq:attempt"); a final mix (murmur3 fmix64) spreads them.
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    h ^= h >> 33
    return (h >> 11) / float(1 << 53)


def backoff_delay(policy: RetryPolicy, failed_attempt: int, jitter_key: str = "") -> float:
    """Seconds to wait after attempt ``failed_attempt`` (1-based) failed."""
    if failed_attempt < 1:
        raise ValueError(f"failed_attempt is 1-based, got {failed_attempt}")
    n = failed_attempt - 1
    initial = policy.initial_interval
    if policy.backoff is Backoff.FIXED:
        delay = initial
    elif policy.backoff is Backoff.LINEAR:
        delay = initial * (1.0 + policy.backoff_coefficient * n)
    else:
        # cap the exponent so huge attempt numbers cannot overflow a float
        exp = min(n, 1024)
        try:
            delay = initial * (policy.backoff_coefficient**exp)
        except OverflowError:
            delay = float("inf")
    delay = min(delay, policy.effective_maximum_interval)
    if policy.jitter:
        spread = (stable_fraction(jitter_key or str(failed_attempt)) * 2.0 - 1.0) * policy.jitter
        delay = delay * (1.0 + spread)
    return max(delay, 0.0)


@frozen
class RetryDecision:
    """``retry`` with ``delay`` seconds, or not, with ``reason`` saying why not."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


def decide_retry(
    policy: RetryPolicy,
    failure: Failure,
    failed_attempt: int,
    *,
    now: float,
    scheduled_at: float,
    schedule_to_close_timeout: float | None,
    jitter_key: str = "",
) -> RetryDecision:
    """Whether attempt ``failed_attempt`` is followed by another, and after how long."""
    if failure.non_retryable:
        return RetryDecision(False, reason="non_retryable")
    if failure.matches_type(policy.non_retryable_error_types):
        return RetryDecision(False, reason="non_retryable_error_type")
    if policy.maximum_attempts and failed_attempt >= policy.maximum_attempts:
        return RetryDecision(False, reason="maximum_attempts_reached")
    if failure.next_retry_delay is not None and failure.next_retry_delay >= 0:
        delay = failure.next_retry_delay
    else:
        delay = backoff_delay(policy, failed_attempt, jitter_key)
    if schedule_to_close_timeout is not None:
        deadline = scheduled_at + schedule_to_close_timeout
        if now + delay >= deadline:
            return RetryDecision(False, reason="schedule_to_close_timeout")
    return RetryDecision(True, delay=delay)
