"""Connecting to NATS: wait for the port, connect once, retry with a log line, give up clearly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NATS

from durablefuture.core.errors import InvalidArgumentError, NatsUnavailableError
from durablefuture.transport.redaction import redact, remember, scrub

__all__ = ["DEFAULT_URL", "connect", "on_reconnect", "redact"]

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


class _Reconnects:
    """Callbacks to run after the connection comes back (pull requests must be renewed)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.nc: NATS | None = None
        self.first_error: str | None = None

    async def error(self, exc: Exception) -> None:
        """nats-py's error callback: quiet (debug); the first explains a failed connect."""
        text = scrub(str(exc) or type(exc).__name__)
        if self.first_error is None:
            self.first_error = text
        log.debug("nats: %s", text)

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
    """
    remember(url)
    servers = [u.strip() for u in url.split(",") if u.strip()] or [DEFAULT_URL]
    for server in servers:
        _host_port(server)  # raises on a URL that cannot work
    shown = redact(",".join(servers))
    hooks = _Reconnects()
    deadline = time.monotonic() + timeout
    delay = 0.05
    attempt = 0
    last = "no attempt made"
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        problem: str | None = "no server reachable"
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
                        ping_interval=10,
                        **options,
                    ),
                    max(1.0, remaining),
                )
                nc._df_reconnects = hooks  # type: ignore[attr-defined]
                hooks.nc = nc
                return nc
            except Exception as exc:  # nats raises a variety of errors here
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if hooks.first_error:  # e.g. a timeout whose cause nats-py only told error_cb
                    problem += f"; first error: {hooks.first_error}"
        last = scrub(str(problem))  # nats-py may echo a URL, or its credentials
        remaining = deadline - time.monotonic()
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
