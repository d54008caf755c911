"""Serving the UI with uvicorn inside the caller's event loop (next to its client)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Sequence

import uvicorn

from durablefuture.client import Client
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.ui.app import create_app
from durablefuture.ui.auth import UiAuth, check_exposure, is_loopback

__all__ = ["bind", "run_server"]

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the program that embeds it owns SIGINT/TERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0 = a free one); raises ``OSError``."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def run_server(
    client: Client,
    sock: socket.socket,
    on_ready: Callable[[str], None] | None = None,
    auth: UiAuth | None = None,
    *,
    workflows: Sequence[Callable[..., object]] = (),
    archive: str | None = None,
) -> None:
    """Serve the UI on an already bound socket until cancelled, then shut down cleanly.

    ``workflows`` are the functions the time-travel view replays runs through; ``archive``
    is where runs whose history retention removed are read from.

    Raises:
        InvalidArgumentError: the socket is not on a loopback address and there is no login,
            or one of ``workflows`` is not a workflow function.
    """
    host = sock.getsockname()[0]
    try:
        check_exposure(host, auth)
    except InvalidArgumentError:
        sock.close()
        raise
    allowed = list(LOOPBACK_NAMES) if is_loopback(host) else None
    closing = asyncio.Event()
    try:
        app = create_app(
            client,
            auth=auth,
            allowed_hosts=allowed,
            closing=closing,
            workflows=workflows,
            archive=archive,
        )
    except InvalidArgumentError:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        log_config=None,
    )
    server = _EmbeddedServer(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                return
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready(url_of(sock))
        await asyncio.shield(serving)
    finally:
        closing.set()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        sock.close()
