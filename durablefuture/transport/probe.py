"""Before connecting to NATS: is the URL usable, does its port accept connections, and, when TLS
is asked for, does the server require TLS (from its greeting, before nats-py sends any
credentials) and complete a handshake with our context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from urllib.parse import urlparse

from nats.aio.client import Client as NATS

from durablefuture.core.errors import InvalidArgumentError, TlsError
from durablefuture.transport.redaction import redact, scrub
from durablefuture.transport.tls import TlsConfig, explain_handshake_failure

__all__ = [
    "TlsCheck",
    "host_port",
    "plain_text_refused",
    "port_open",
    "scheme",
    "ssl_context",
    "uses_tls",
]


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    try:
        port = parsed.port or 4222
    except ValueError as exc:  # its message never holds the userinfo
        raise InvalidArgumentError(
            f"the NATS URL {redact(url)!r} is not valid ({exc}); pass e.g. "
            "nats://127.0.0.1:4222 (several comma-separated)"
        ) from None
    return parsed.hostname or "127.0.0.1", port


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "nats"


async def port_open(
    host: str, port: int, timeout: float, tls: TlsCheck | None = None
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


class TlsCheck:
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
            raise plain_text_refused(self.shown)
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


def plain_text_refused(shown: str) -> TlsError:
    return TlsError(
        f"NATS at {shown} does not require TLS, but TLS was asked for (--tls-* options, "
        "TlsConfig or a tls:// URL): refusing to connect in plain text. Enable TLS on the "
        "server (a tls {} block in its config), or drop the TLS options"
    )


def uses_tls(nc: NATS) -> bool:
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


def ssl_context(
    tls: TlsConfig | ssl.SSLContext | None, servers: list[str]
) -> ssl.SSLContext | None:
    if tls is None and any(scheme(s) == "tls" for s in servers):
        tls = TlsConfig()  # a tls:// URL alone: verified against the system's CAs
    if tls is None:
        return None
    _ASYNCIO_LOG.addFilter(_TLS_EOF_FILTER)  # once: a logger holds each filter once
    return tls if isinstance(tls, ssl.SSLContext) else tls.ssl_context()
