"""One way to retry a step that fails while NATS, JetStream or the df-server are not there yet
(start-up, a cluster electing a leader): exponential delays, a log line per failed try, and a
deadline after which the last error is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from attrs import field, frozen
from attrs.validators import gt

__all__ = ["Backoff", "retry_until"]

T = TypeVar("T")


@frozen
class Backoff:
    """Delays between tries: ``first``, then doubled each time, never more than ``most``."""

    first: float = field(default=0.2, validator=gt(0))
    most: float = field(default=2.0, validator=gt(0))

    def delay(self, tries: int) -> float:
        """Seconds to wait after failed try number ``tries`` (1-based)."""
        return min(self.most, self.first * 2.0 ** min(64, max(0, tries - 1)))


async def retry_until(
    step: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    retry_on: tuple[type[Exception], ...],
    never: tuple[type[Exception], ...] = (),
    backoff: Backoff = Backoff(),
    on_retry: Callable[[Exception, int, float], None] | None = None,
    max_tries: int = 10_000,
) -> T:
    """Await ``step()`` until it returns; a ``retry_on`` error (not one of ``never``) is
    retried after the backoff delay, as long as that delay ends before ``deadline``
    (``time.monotonic()``) and fewer than ``max_tries`` were made. ``on_retry(error, tries,
    delay)`` is called before each wait (to log it).

    Raises:
        The last error of ``step``, once the deadline or ``max_tries`` leaves no room for
        another try; any other error at once.
    """
    tries = 0
    while True:
        tries += 1
        try:
            return await step()
        except never:
            raise
        except retry_on as exc:
            delay = backoff.delay(tries)
            if tries >= max_tries or time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(exc, tries, delay)
            await asyncio.sleep(delay)
