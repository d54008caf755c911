"""Connecting to NATS: wait for the port, connect once, retry with a log line, give up clearly.

A connection is handed out only once JetStream answers on it: a nats-server started without
``-js`` fails here, in one clear line, instead of deep inside the first stream operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, ServiceUnavailableError

from durablefuture.core.errors import (
    InvalidArgumentError,
    JetStreamUnavailableError,
    NatsUnavailableError,
)
from durablefuture.transport.redaction import redact, remember, scrub

__all__ = ["DEFAULT_URL", "connect", "connection_lost", "on_reconnect", "redact"]

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    try:
        port = parsed.port or 4222
    except ValueError as exc:  # its message never holds the userinfo
        raise InvalidArgumentError(
            f"the NATS URL {redact(url)!r} is not valid ({exc}); pass e.g. "
            "nats://127.0.0.1:4222 (several comma-separated)"
        ) from None
    return parsed.hostname or "127.0.0.1", port


async def _port_open(host: str, port: int, timeout: float) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return str(exc) or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


_JS_NOT_ENABLED_FOR_ACCOUNT = 10039


async def _jetstream_problem(nc: NATS, shown: str, timeout: float) -> str | None:
    """None when JetStream answers (or we cannot tell), a reason to retry while it starts up.

    Raises:
        JetStreamUnavailableError: the server has no JetStream, or not for this account.
    """
    try:
        await nc.jetstream(timeout=timeout).account_info()
    except ServiceUnavailableError as exc:
        if exc.code is None:  # no responders: nothing serves the JetStream API
            raise JetStreamUnavailableError(
                f"NATS at {shown} has no JetStream; start nats-server with -js "
                "(or a `jetstream {}` block in its config), or use `df dev`"
            ) from None
        if exc.err_code == _JS_NOT_ENABLED_FOR_ACCOUNT:
            raise JetStreamUnavailableError(
                f"NATS at {shown} has JetStream, but not for this connection's account "
                f"({exc.description}); enable JetStream for the account in the server config"
            ) from None
        return f"JetStream is not ready ({exc.description or exc})"  # e.g. a cluster starting
    except APIError as exc:
        return f"JetStream answered {exc}"
    except (TimeoutError, NatsTimeoutError):
        # no answer: maybe not permitted to ask ($JS.API.INFO); let the real calls tell
        return None
    return None


async def _close_quietly(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


class _Reconnects:
    """Callbacks to run after the connection comes back (pull requests must be renewed)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.nc: NATS | None = None
        self.closed = asyncio.Event()
        self.first_error: str | None = None

    async def error(self, exc: Exception) -> None:
        """nats-py's error callback: quiet (debug); the first explains a failed connect."""
        text = scrub(str(exc) or type(exc).__name__)
        if self.first_error is None:
            self.first_error = text
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
    if isinstance(hooks, _Reconnects):
        hooks.callbacks.append(callback)


async def connection_lost(nc: NATS, stopping: asyncio.Event) -> NatsUnavailableError:
    """Wait until ``nc`` is closed while ``stopping`` is not set; return the error to raise.

    nats-py closes a connection for good when the server answers a protocol error (and when
    reconnecting is given up). A daemon must not stay up unable to work: its run loop races
    this and exits non-zero, so a supervisor restarts it on a fresh connection.
    """
    hooks = getattr(nc, "_df_reconnects", None)
    if not isinstance(hooks, _Reconnects):  # not made by connect(): watch by polling
        while not nc.is_closed or stopping.is_set():
            await asyncio.sleep(0.5)
    else:
        while True:
            await hooks.closed.wait()
            if not stopping.is_set():
                break
            await stopping.wait()
            await asyncio.Event().wait()  # closing on purpose: never report it
    error = getattr(nc, "last_error", None)
    return NatsUnavailableError(
        "the connection to NATS was closed"
        + (f" ({scrub(str(error))})" if error else "")
        + "; exiting so that a supervisor restarts this process on a new connection"
    )


async def connect(
    url: str = DEFAULT_URL,
    *,
    timeout: float = 20.0,
    name: str = "durablefuture",
    creds: str | None = None,
) -> NATS:
    """Connect to ``url`` (several may be given, comma-separated), retrying for up to
    ``timeout`` seconds with a log line per attempt. ``creds`` is a NATS credentials file.

    Passwords and tokens in ``url`` never appear in what this logs or raises (nor, once
    :func:`~durablefuture.transport.redaction.remember`-ed here, in text scrubbed later).

    Raises:
        NatsUnavailableError: naming the URL (redacted) and the last error, after ``timeout``.
        InvalidArgumentError: a URL is malformed (e.g. its port is not a number).
        JetStreamUnavailableError: the server answers but has no JetStream (at once), or its
            JetStream did not become ready within ``timeout``.
    """
    remember(url)
    servers = [u.strip() for u in url.split(",") if u.strip()] or [DEFAULT_URL]
    for server in servers:
        _host_port(server)  # raises on a URL that cannot work
    shown = redact(",".join(servers))
    deadline = time.monotonic() + timeout
    delay = 0.05
    attempt = 0
    last = "no attempt made"
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        problem: str | None = "no server reachable"
        js_starting = False
        hooks = _Reconnects()  # per attempt: a closed attempt must not mark the next closed
        for server in servers:  # wait until at least one of them listens
            problem = await _port_open(*_host_port(server), max(0.05, min(2.0, remaining)))
            if problem is None:
                break
        if problem is None:
            try:
                options: dict[str, object] = {}
                if creds:
                    options["user_credentials"] = creds
                nc = await asyncio.wait_for(
                    nats.connect(
                        servers=servers,
                        name=name,
                        connect_timeout=max(0.5, min(5.0, remaining)),
                        reconnect_time_wait=0.25,
                        max_reconnect_attempts=-1,
                        allow_reconnect=True,
                        error_cb=hooks.error,
                        reconnected_cb=hooks.fire,
                        disconnected_cb=hooks.disconnected,
                        closed_cb=hooks.on_closed,
                        ping_interval=10,
                        **options,
                    ),
                    max(1.0, remaining),
                )
            except Exception as exc:  # nats raises a variety of errors here
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if hooks.first_error:  # e.g. a timeout whose cause nats-py only told error_cb
                    problem += f"; first error: {hooks.first_error}"
            else:
                hooks.nc = nc  # from now on a close is on purpose: no "disconnected" line
                try:
                    problem = await _jetstream_problem(nc, shown, max(0.5, min(5.0, remaining)))
                except BaseException:
                    await _close_quietly(nc)
                    raise
                if problem is None:
                    nc._df_reconnects = hooks  # type: ignore[attr-defined]
                    return nc
                js_starting = True
                await _close_quietly(nc)
        last = scrub(str(problem))  # nats-py may echo a URL, or its credentials
        remaining = deadline - time.monotonic()
        if remaining <= 0 and js_starting:
            raise JetStreamUnavailableError(
                f"NATS at {shown} answered but its JetStream did not become ready within "
                f"{timeout:g}s ({last}); see the nats-server log"
            )
        if remaining <= 0:
            raise NatsUnavailableError(
                f"could not connect to NATS at {shown} within {timeout:g}s ({last}); is "
                "nats-server running there? Start one with `df dev`, or pass --nats URL"
            )
        log.warning(
            "cannot reach NATS at %s (attempt %d: %s); retrying for %.0f more s",
            shown,
            attempt,
            last,
            remaining,
            extra={"nats_url": shown, "attempt": attempt},
        )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)
