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
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, ServiceUnavailableError

from durablefuture.core.errors import JetStreamUnavailableError, NatsUnavailableError, TlsError
from durablefuture.transport.credentials import inbox_prefix, read_credentials
from durablefuture.transport.nats_client import TolerantClient, close_quietly, read_loop_stopped
from durablefuture.transport.probe import (
    TlsCheck,
    host_port,
    plain_text_refused,
    port_open,
    ssl_context,
    uses_tls,
)
from durablefuture.transport.reconnects import Reconnects, connection_lost, on_reconnect
from durablefuture.transport.redaction import redact, remember, scrub
from durablefuture.transport.tls import TlsConfig, explain_handshake_failure

__all__ = [
    "DEFAULT_URL",
    "NATS",
    "TlsConfig",
    "connect",
    "connection_lost",
    "on_reconnect",
    "read_loop_stopped",
    "redact",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"


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


async def _first_connect(
    nc: NATS,
    hooks: Reconnects,
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
        await close_quietly(nc)
        raise
    finally:
        tls_failed.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting})  # raises only if this task is cancelled
    await close_quietly(nc)
    if hooks.tls_error is not None:
        raise TlsError(scrub(explain_handshake_failure(hooks.tls_error, shown, tls))) from None
    if connecting not in done or connecting.cancelled():
        raise TimeoutError(f"no answer within {timeout:.1f}s")
    connecting.result()  # raises what nats-py raised


def _login(creds: str | None, own_inbox: bool = True) -> dict[str, Any]:
    """nats-py connect arguments for a credentials file: a user JWT creds file as it is; an
    nkey seed file (``df auth init``) as the seed, with the user's own inbox prefix (its
    permissions let it subscribe there only) unless ``own_inbox`` is false."""
    if not creds:
        return {}
    found = read_credentials(creds)
    if found.jwt:
        return {"user_credentials": creds}
    if not own_inbox:
        return {"nkeys_seed_str": found.seed}
    return {"nkeys_seed_str": found.seed, "inbox_prefix": inbox_prefix(found.public_key)}


async def connect(
    url: str = DEFAULT_URL,
    *,
    timeout: float = 20.0,
    name: str = "durablefuture",
    creds: str | None = None,
    tls: TlsConfig | ssl.SSLContext | None = None,
    own_inbox: bool = True,
) -> NATS:
    """Connect to ``url`` (several may be given, comma-separated), retrying for up to
    ``timeout`` seconds with a log line per attempt. ``creds`` is a NATS credentials file
    (a user JWT ``.creds`` file, or an nkey seed file as ``df auth init`` writes);
    ``tls`` asks for TLS (so does a ``tls://`` URL): a :class:`TlsConfig` or a ready context.

    With an nkey seed file the replies come to the user's own inbox prefix
    (``_INBOX.<public key>``, which its permissions allow it to read), unless ``own_inbox``
    is false: then to nats-py's usual ``_INBOX``, 57 bytes shorter in every reply subject.
    That is for df-server's ``server`` user only, which may subscribe to anything in its
    account and whose inbox traffic never leaves it (only the users' own inboxes are
    exported to the users' account).

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
    login = _login(creds, own_inbox)
    servers = [u.strip() for u in url.split(",") if u.strip()] or [DEFAULT_URL]
    for server in servers:
        host_port(server)  # raises on a URL that cannot work
    shown = redact(",".join(servers))
    context = ssl_context(tls, servers)  # raises on a TLS file that cannot work
    tls_config = tls if isinstance(tls, TlsConfig) else None
    tls_hostname = tls_config.hostname if tls_config is not None else None
    tls_check = TlsCheck(context, tls_config, shown) if context is not None else None
    deadline = time.monotonic() + timeout
    delay = 0.05
    attempt = 0
    last = "no attempt made"
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        problem: str | None = "no server reachable"
        js_starting = False
        hooks = Reconnects()  # per attempt: a closed attempt must not mark the next closed
        for server in servers:  # wait until at least one of them listens
            problem = await port_open(*host_port(server), max(0.05, min(2.0, remaining)), tls_check)
            if problem is None:
                break
        if problem is None:
            nc = TolerantClient()
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
                if context is not None and not uses_tls(nc):
                    await close_quietly(nc)
                    raise plain_text_refused(shown)
                try:
                    problem = await _jetstream_problem(nc, shown, max(0.5, min(5.0, remaining)))
                except BaseException:
                    await close_quietly(nc)
                    raise
                if problem is None:
                    nc._df_reconnects = hooks  # type: ignore[attr-defined]
                    return nc
                js_starting = True
                await close_quietly(nc)
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
