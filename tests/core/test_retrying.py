"""The one retry helper: exponential delays, a call per retry, the last error at the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from durablefuture.core.errors import MessageRejectedError, TransportError
from durablefuture.transport.retrying import Backoff, retry_until


def test_delays_double_up_to_the_cap() -> None:
    b = Backoff(first=0.2, most=2.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert b.delay(10**9) == 2.0


def test_a_step_that_succeeds_after_failures_returns_its_value() -> None:
    seen: list[int] = []
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransportError(f"try {calls}")
        return "done"

    result = asyncio.run(
        retry_until(
            step,
            deadline=time.monotonic() + 60,
            retry_on=(TransportError,),
            backoff=Backoff(first=0.001, most=0.001),
            on_retry=lambda _exc, tries, _delay: seen.append(tries),
        )
    )
    assert (result, calls, seen) == ("done", 3, [1, 2])


def test_the_last_error_is_raised_once_no_try_fits_before_the_deadline() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise TransportError(f"try {calls}")

    with pytest.raises(TransportError, match="try 1"):
        asyncio.run(
            retry_until(
                step,
                deadline=time.monotonic() + 0.5,
                retry_on=(TransportError,),
                backoff=Backoff(first=60.0, most=60.0),
            )
        )


def test_max_tries_bounds_the_loop() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise TransportError("again")

    with pytest.raises(TransportError):
        asyncio.run(
            retry_until(
                step,
                deadline=time.monotonic() + 60,
                retry_on=(TransportError,),
                backoff=Backoff(first=0.001, most=0.001),
                max_tries=4,
            )
        )
    assert calls == 4


@pytest.mark.parametrize("error", [MessageRejectedError("too large"), KeyError("other")])
def test_errors_not_to_retry_are_raised_at_once(error: Exception) -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        asyncio.run(
            retry_until(
                step,
                deadline=time.monotonic() + 60,
                retry_on=(TransportError,),
                never=(MessageRejectedError,),
                backoff=Backoff(first=0.001, most=0.001),
            )
        )
    assert calls == 1
