"""Connecting to NATS: wait for the port, connect once, retry with a log line, give up clearly.

A connection is handed out only once JetStream answers on it: a nats-server started without
``-js`` fails here, in one clear line, instead of deep inside the first stream operation.

TLS is asked for by TLS options or a ``tls://`` URL. A failed handshake is not retried (a wrong
CA stays wrong): it raises at once, saying what it most likely means. nats-py would quietly
fall back to plain text when the server does not require TLS, so that case is refused too:
by the port probe (from the server's greeting, before nats-py sends any credentials), and
again once connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlparse

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, ServiceUnavailableError

from durablefuture.core.errors import (
    InvalidArgumentError,
    JetStreamUnavailableError,
    NatsUnavailableError,
    TlsError,
)
from durablefuture.transport.credentials import inbox_prefix, read_credentials
from durablefuture.transport.redaction import redact, remember, scrub
from durablefuture.transport.tls import TlsConfig, explain_handshake_failure

__all__ = [
    "DEFAULT_URL",
    "NATS",
    "TlsConfig",
    "connect",
    "connection_lost",
    "on_reconnect",
    "redact",
]

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


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "nats"


async def _port_open(
    host: str, port: int, timeout: float, tls: _TlsCheck | None = None
) -> str | None:
    """None when ``host:port`` accepts a connection, else why not.

    Raises:
        TlsError: from ``tls``'s check of the server.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return str(exc) or type(exc).__name__
    try:
        if tls is not None:
            await tls.check(reader, writer, host, timeout)
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return None


class _TlsCheck:
    """What the port probe checks when TLS is asked for: that the server requires it (from its
    greeting, before nats-py sends any credentials), and that the handshake succeeds (a probe
    that completes it also leaves no "TLS handshake error" in the nats-server log)."""

    def __init__(self, context: ssl.SSLContext, config: TlsConfig | None, shown: str) -> None:
        self.context = context
        self.config = config
        self.shown = shown

    async def check(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, timeout: float
    ) -> None:
        info = await _greeting(reader, timeout)
        if info is None:
            return  # nothing readable in time: the check after connecting still applies
        if not info.get("tls_required", False):
            raise _plain_text_refused(self.shown)
        hostname = (self.config.hostname if self.config else None) or host
        try:
            await asyncio.wait_for(
                writer.start_tls(self.context, server_hostname=hostname), min(timeout, 5.0)
            )
        except ssl.SSLError as exc:
            explained = explain_handshake_failure(exc, self.shown, self.config)
            raise TlsError(scrub(explained)) from None
        except (TimeoutError, OSError):
            return  # connecting will tell


async def _greeting(reader: asyncio.StreamReader, timeout: float) -> dict[str, object] | None:
    """The server's INFO, or None when it sent nothing readable in time."""
    try:
        line = await asyncio.wait_for(reader.readline(), min(timeout, 2.0))
        op, _, body = line.partition(b" ")
        info = json.loads(body) if op.upper() == b"INFO" else None
    except (TimeoutError, OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _plain_text_refused(shown: str) -> TlsError:
    return TlsError(
        f"NATS at {shown} does not require TLS, but TLS was asked for (--tls-* options, "
        "TlsConfig or a tls:// URL): refusing to connect in plain text. Enable TLS on the "
        "server (a tls {} block in its config), or drop the TLS options"
    )


def _uses_tls(nc: NATS) -> bool:
    url = nc.connected_url
    if url is not None and url.scheme == "wss":
        return True
    info = getattr(nc, "_server_info", None)  # nats-py upgrades exactly when this says so
    return isinstance(info, dict) and bool(info.get("tls_required", False))


class _HarmlessTlsEof(logging.Filter):
    """asyncio warns, each time a TLS connection made by nats-py's streams ends, that
    ``eof_received()`` returning True has no effect; nothing is wrong, so it is not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect" not in record.getMessage()


_ASYNCIO_LOG = logging.getLogger("asyncio")
_TLS_EOF_FILTER = _HarmlessTlsEof()


def _ssl_context(
    tls: TlsConfig | ssl.SSLContext | None, servers: list[str]
) -> ssl.SSLContext | None:
    if tls is None and any(_scheme(s) == "tls" for s in servers):
        tls = TlsConfig()  # a tls:// URL alone: verified against the system's CAs
    if tls is None:
        return None
    _ASYNCIO_LOG.addFilter(_TLS_EOF_FILTER)  # once: a logger holds each filter once
    return tls if isinstance(tls, ssl.SSLContext) else tls.ssl_context()


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


class _TolerantClient(NATS):
    """nats-py's client, except that bytes which are not UTF-8 in a message's subject, reply or
    headers never reach its read loop as an exception.

    nats-py decodes those outside any ``try``; its read loop then stops for good while the
    connection still counts as connected (anyone who can publish to one of our subscriptions
    could do that with one message). Here such text is decoded with replacement characters,
    and unreadable headers are replaced by one ``Df-Unreadable-Headers`` header, so the
    message reaches our handlers, which refuse it as junk.
    """

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        try:
            return await super()._process_headers(headers)
        except (UnicodeDecodeError, ValueError, IndexError):
            return {UNREADABLE_HEADERS: "true"}

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> Any:
        return self.msg_class(
            subject=subject.decode("utf-8", "replace"),
            reply=reply.decode("utf-8", "replace"),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )


UNREADABLE_HEADERS = "Df-Unreadable-Headers"


def read_loop_stopped(nc: NATS) -> bool:
    """True when nats-py's read loop has ended while the connection is not closed or
    reconnecting: the process would stay up receiving nothing."""
    task = getattr(nc, "_reading_task", None)
    return (
        task is not None
        and task.done()
        and not nc.is_closed
        and not nc.is_reconnecting
        and not nc.is_draining
    )


class _Reconnects:
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
    if isinstance(hooks, _Reconnects):
        hooks.callbacks.append(callback)


async def connection_lost(nc: NATS, stopping: asyncio.Event) -> NatsUnavailableError:
    """Wait until ``nc`` is closed while ``stopping`` is not set; return the error to raise.

    nats-py closes a connection for good when the server answers a protocol error (and when
    reconnecting is given up). A daemon must not stay up unable to work: its run loop races
    this and exits non-zero, so a supervisor restarts it on a fresh connection.
    """
    hooks = getattr(nc, "_df_reconnects", None)
    closed = hooks.closed if isinstance(hooks, _Reconnects) else None
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


async def _first_connect(
    nc: NATS,
    hooks: _Reconnects,
    shown: str,
    tls: TlsConfig | None,
    timeout: float,
    connect: Coroutine[object, object, None],
) -> None:
    """Await ``connect`` (``nc.connect(...)``), ended early by a failed TLS handshake.

    nats-py retries a failed handshake on its own until ``timeout``, reporting it only to the
    error callback; retrying cannot fix it, so it is raised at once, explained. ``nc`` is
    closed unless this returns.
    """
    connecting = asyncio.ensure_future(connect)
    tls_failed = asyncio.ensure_future(hooks.tls_failed.wait())
    try:
        done, _ = await asyncio.wait(
            {connecting, tls_failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if connecting in done and not connecting.cancelled() and connecting.exception() is None:
            return
    except BaseException:
        await _close_quietly(nc)
        raise
    finally:
        tls_failed.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting})  # raises only if this task is cancelled
    await _close_quietly(nc)
    if hooks.tls_error is not None:
        raise TlsError(scrub(explain_handshake_failure(hooks.tls_error, shown, tls))) from None
    if connecting not in done or connecting.cancelled():
        raise TimeoutError(f"no answer within {timeout:.1f}s")
    connecting.result()  # raises what nats-py raised


def _login(creds: str | None) -> dict[str, Any]:
    """nats-py connect arguments for a credentials file: a user JWT creds file as it is; an
    nkey seed file (``df auth init``) as the seed, with the user's own inbox prefix (its
    permissions let it subscribe there only)."""
    if not creds:
        return {}
    found = read_credentials(creds)
    if found.jwt:
        return {"user_credentials": creds}
    return {"nkeys_seed_str": found.seed, "inbox_prefix": inbox_prefix(found.public_key)}


async def connect(
    url: str = DEFAULT_URL,
    *,
    timeout: float = 20.0,
    name: str = "durablefuture",
    creds: str | None = None,
    tls: TlsConfig | ssl.SSLContext | None = None,
) -> NATS:
    """Connect to ``url`` (several may be given, comma-separated), retrying for up to
    ``timeout`` seconds with a log line per attempt. ``creds`` is a NATS credentials file
    (a user JWT ``.creds`` file, or an nkey seed file as ``df auth init`` writes);
    ``tls`` asks for TLS (so does a ``tls://`` URL): a :class:`TlsConfig` or a ready context.

    Passwords and tokens in ``url`` never appear in what this logs or raises (nor, once
    :func:`~durablefuture.transport.redaction.remember`-ed here, in text scrubbed later).

    Raises:
        NatsUnavailableError: naming the URL (redacted) and the last error, after ``timeout``.
        TlsError: at once, when the TLS handshake fails or the server does not require TLS
            although TLS was asked for; naming the URL (redacted) and the likely cause.
        InvalidArgumentError: a URL is malformed (e.g. its port is not a number), or a TLS
            file is missing or unusable (naming the option and the path).
        JetStreamUnavailableError: the server answers but has no JetStream (at once), or its
            JetStream did not become ready within ``timeout``.
    """
    remember(url)
    login = _login(creds)
    servers = [u.strip() for u in url.split(",") if u.strip()] or [DEFAULT_URL]
    for server in servers:
        _host_port(server)  # raises on a URL that cannot work
    shown = redact(",".join(servers))
    context = _ssl_context(tls, servers)  # raises on a TLS file that cannot work
    tls_config = tls if isinstance(tls, TlsConfig) else None
    tls_hostname = tls_config.hostname if tls_config is not None else None
    tls_check = _TlsCheck(context, tls_config, shown) if context is not None else None
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
            problem = await _port_open(
                *_host_port(server), max(0.05, min(2.0, remaining)), tls_check
            )
            if problem is None:
                break
        if problem is None:
            nc = _TolerantClient()
            try:
                await _first_connect(
                    nc,
                    hooks,
                    shown,
                    tls_config,
                    max(1.0, remaining),
                    nc.connect(  # nats-py annotates seconds as int; it takes floats
                        servers=servers,
                        name=name,
                        connect_timeout=max(0.5, min(5.0, remaining)),  # type: ignore[arg-type]
                        reconnect_time_wait=0.25,  # type: ignore[arg-type]
                        max_reconnect_attempts=-1,
                        allow_reconnect=True,
                        error_cb=hooks.error,
                        reconnected_cb=hooks.fire,
                        disconnected_cb=hooks.disconnected,
                        closed_cb=hooks.on_closed,
                        ping_interval=10,
                        **login,
                        tls=context,
                        tls_hostname=tls_hostname,
                    ),
                )
            except TlsError:
                raise
            except Exception as exc:  # nats raises a variety of errors here
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if hooks.first_error:  # e.g. a timeout whose cause nats-py only told error_cb
                    problem += f"; first error: {hooks.first_error}"
            else:
                hooks.nc = nc  # from now on a close is on purpose: no "disconnected" line
                if context is not None and not _uses_tls(nc):
                    await _close_quietly(nc)
                    raise _plain_text_refused(shown)
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
