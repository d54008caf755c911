"""Start-up steps that JetStream may refuse for a while: one bounded retry for every daemon.

Right after a cluster starts, or while a NATS node is killed, paused or elects a new stream
leader, JetStream API calls time out or answer ``503 JetStream system temporarily
unavailable``. A df-server or df-worker starting then must ride through it (with a log line
per attempt), not die with a NATS traceback, and must give up with a clear error once the
deadline passes (a daemon never stays up while unable to work).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors

from durablefuture.core.errors import TransportError

__all__ = ["until_ready"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def until_ready(
    what: str,
    step: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    transient: Callable[[TransportError], bool] | None = None,
) -> T:
    """Run ``step`` until it succeeds, retrying transient failures for up to ``timeout`` s.

    ``step`` must be safe to run again after a failure part-way through. NATS errors and
    timeouts are transient; a :class:`TransportError` is transient unless ``transient``
    says otherwise (e.g. a permissions violation will not heal by waiting).

    Raises:
        TransportError: naming ``what``, the time waited and the last error, once the
            deadline has passed; or at once for an error that is not transient.
    """
    deadline = time.monotonic() + timeout
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        try:
            return await step()
        except TransportError as exc:
            if transient is not None and not transient(exc):
                raise
            problem = str(exc)
        except (TimeoutError, nats.errors.Error) as exc:
            problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(
                f"{what} did not succeed within {timeout:g}s ({attempt} attempts; last: "
                f"{problem}); is JetStream available (a NATS cluster with a quorum of its "
                "nodes)? See the nats-server log"
            )
        log.warning(
            "%s failed (attempt %d: %s); retrying for %.0f more s",
            what,
            attempt,
            problem,
            remaining,
            extra={"attempt": attempt},
        )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 2.0)
