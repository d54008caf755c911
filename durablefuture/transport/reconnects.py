"""What a connection does after it is made: log disconnects and refusals, renew pull requests
on reconnect, and tell a daemon when the connection is gone for good."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from nats.aio.client import Client as NATS

from durablefuture.core.errors import NatsUnavailableError
from durablefuture.transport.nats_client import read_loop_stopped
from durablefuture.transport.redaction import scrub

__all__ = ["Reconnects", "connection_lost", "on_reconnect"]

# one logger for everything about the connection (connection.py logs its retries there too)
log = logging.getLogger("durablefuture.transport.connection")


class Reconnects:
    """Callbacks to run after the connection comes back (pull requests must be renewed)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.nc: NATS | None = None
        self.closed = asyncio.Event()
        self.first_error: str | None = None
        self.tls_error: ssl.SSLError | None = None
        self.tls_failed = asyncio.Event()

    async def error(self, exc: Exception) -> None:
        """nats-py's error callback: quiet (debug); the first explains a failed connect."""
        text = scrub(str(exc) or type(exc).__name__)
        if self.first_error is None:
            self.first_error = text
        if isinstance(exc, ssl.SSLError) and self.tls_error is None:
            self.tls_error = exc
            self.tls_failed.set()
        lowered = text.lower()
        if "permissions violation" in lowered or "authorization violation" in lowered:
            # nats-server refused something these credentials may not do (df auth init)
            log.error(
                "NATS refused: %s; the credentials of this connection do not allow it "
                "(see `df auth init` for what each role may do)",
                text,
            )
            return
        log.debug("nats: %s", text)

    async def on_closed(self) -> None:
        self.closed.set()
        nc = self.nc
        error = getattr(nc, "last_error", None) if nc is not None else None
        if error is not None:  # closed by an error, not by us
            log.warning("the connection to NATS is closed (%s)", scrub(str(error)))

    async def fire(self) -> None:
        log.warning("reconnected to NATS")
        for cb in list(self.callbacks):
            try:
                cb()
            except Exception as exc:  # a listener must not break the others
                log.debug("reconnect listener failed: %s", exc)

    async def disconnected(self) -> None:
        nc = self.nc
        if nc is not None and (nc.is_closed or nc.is_draining):
            return  # closing on purpose
        log.warning("disconnected from NATS; reconnecting")


def on_reconnect(nc: NATS, callback: Callable[[], None]) -> None:
    """Run ``callback`` each time ``nc`` reconnects (connections made by :func:`connect`)."""
    hooks = getattr(nc, "_df_reconnects", None)
    if isinstance(hooks, Reconnects):
        hooks.callbacks.append(callback)


async def connection_lost(nc: NATS, stopping: asyncio.Event) -> NatsUnavailableError:
    """Wait until ``nc`` is closed while ``stopping`` is not set; return the error to raise.

    nats-py closes a connection for good when the server answers a protocol error (and when
    reconnecting is given up). A daemon must not stay up unable to work: its run loop races
    this and exits non-zero, so a supervisor restarts it on a fresh connection.
    """
    hooks = getattr(nc, "_df_reconnects", None)
    closed = hooks.closed if isinstance(hooks, Reconnects) else None
    while True:  # polled too: nats-py's read loop can stop without closing the connection
        if stopping.is_set():
            await asyncio.Event().wait()  # closing on purpose: never report it
        if read_loop_stopped(nc):
            return NatsUnavailableError(
                "the NATS client stopped reading from its connection; exiting so that a "
                "supervisor restarts this process on a new connection"
            )
        if (closed is not None and closed.is_set()) or (closed is None and nc.is_closed):
            break
        if closed is None:
            await asyncio.sleep(0.5)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), 1.0)
    error = getattr(nc, "last_error", None)
    return NatsUnavailableError(
        "the connection to NATS was closed"
        + (f" ({scrub(str(error))})" if error else "")
        + "; exiting so that a supervisor restarts this process on a new connection"
    )
