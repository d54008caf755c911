"""Start-up steps that JetStream may refuse for a while: one bounded retry for every daemon.

Right after a cluster starts, or while a NATS node is killed, paused or elects a new stream
leader, JetStream API calls time out or answer ``503 JetStream system temporarily
unavailable``. A df-server or df-worker starting then must ride through it (with a log line
per attempt), not die with a NATS traceback, and must give up with a clear error once the
deadline passes (a daemon never stays up while unable to work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors

from durablefuture.core.errors import TransportError
from durablefuture.transport.retrying import retry_until

__all__ = ["until_ready"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def until_ready(
    what: str,
    step: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    transient: Callable[[TransportError], bool] | None = None,
    logger: logging.Logger | None = None,
) -> T:
    """Run ``step`` until it succeeds, retrying transient failures for up to ``timeout`` s.

    ``step`` must be safe to run again after a failure part-way through. NATS errors and
    timeouts are transient; a :class:`TransportError` is transient unless ``transient``
    says otherwise (e.g. a permissions violation will not heal by waiting).

    Raises:
        TransportError: naming ``what``, the time waited and the last error, once the
            deadline has passed; or at once for an error that is not transient.
    """
    last: list[int] = [0]

    def is_permanent(exc: Exception) -> bool:
        return isinstance(exc, TransportError) and transient is not None and not transient(exc)

    def retrying(exc: Exception, tries: int, delay: float) -> None:
        last[0] = tries
        (logger or log).warning(
            "%s failed (attempt %d: %s); retrying in %.1f s",
            what,
            tries,
            _problem(exc),
            delay,
            extra={"attempt": tries},
        )

    async def once() -> T:
        try:
            return await step()
        except TransportError as exc:
            if is_permanent(exc):
                raise _Permanent(exc) from exc
            raise

    try:
        return await retry_until(
            once,
            deadline=time.monotonic() + timeout,
            retry_on=(TransportError, TimeoutError, nats.errors.Error),
            on_retry=retrying,
        )
    except _Permanent as wrapper:
        raise wrapper.error from wrapper.error.__cause__
    except (TransportError, TimeoutError, nats.errors.Error) as exc:
        raise TransportError(
            f"{what} did not succeed within {timeout:g}s ({last[0] + 1} attempts; last: "
            f"{_problem(exc)}); is JetStream available (a NATS cluster with a quorum of its "
            "nodes)? See the nats-server log"
        ) from exc


class _Permanent(Exception):
    """Carries an error that waiting will not heal past the retry loop."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


def _problem(exc: BaseException) -> str:
    if isinstance(exc, TransportError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
