"""``df ui``: serve the web UI; and the piece of ``df dev`` that serves it next to the engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import click

from daemons.common import fail, load_functions
from durablefuture.client import Client
from durablefuture.codec.envelope import PayloadCodec
from durablefuture.core.errors import DurableFutureError, InvalidArgumentError
from durablefuture.transport.archive import parse_archive
from durablefuture.transport.redaction import redact, remember_secret
from durablefuture.transport.tls import TlsConfig
from durablefuture.ui import DEFAULT_PORT, INSTALL_HINT, ui_available

__all__ = ["start_dev_ui", "ui"]

CONTEXT = {"help_option_names": ["-h", "--help"]}
DEFAULT_TOKEN_ENV = "DF_UI_TOKEN"


class _Settings(Protocol):
    """What ``df``'s group options leave in the click context (``df_cli.Settings``)."""

    nats_url: str
    namespace: str
    connect_timeout: float
    creds: str | None
    tls: TlsConfig | None
    codec: PayloadCodec | None


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 = a free one).",
)
@click.option(
    "--auth-token-env",
    "token_env",
    default=DEFAULT_TOKEN_ENV,
    show_default=True,
    metavar="NAME",
    help=(
        "Environment variable that holds the UI's login token (16+ characters). When it is "
        "set, browsers sign in on /login and API clients send 'Authorization: Bearer "
        "<token>'. Required unless --host is a loopback address."
    ),
)
@click.option(
    "--workflows",
    "workflows_spec",
    default="",
    envvar="DF_UI_WORKFLOWS",
    metavar="MODULE:ATTR[,...]",
    help=(
        "Workflow functions (as for df-worker --workflows; env DF_UI_WORKFLOWS). The run "
        "page's time travel then replays each run through its code: the source line it was "
        "paused at and its query handlers' answers at every event. Without it, time travel "
        "shows the state history records."
    ),
)
@click.option(
    "--archive",
    default=None,
    envvar="DF_UI_ARCHIVE",
    metavar="dir:PATH|objstore",
    help=(
        "Where df-server --archive writes closed runs' histories (env DF_UI_ARCHIVE): a run "
        "whose history retention removed is shown from there, marked archived, and a search "
        "for its exact workflow id finds it."
    ),
)
@click.pass_obj
def ui(
    settings: _Settings,
    host: str,
    port: int,
    token_env: str,
    workflows_spec: str,
    archive: str | None,
) -> None:
    """Serve the web UI: runs, a timeline per run, time travel through its history, live
    updates, signal/cancel/terminate."""
    if not ui_available():
        fail(INSTALL_HINT)
    from durablefuture.ui import serve
    from durablefuture.ui.auth import UiAuth, is_loopback
    from durablefuture.ui.travel import definitions_of

    workflows: Sequence[Callable[..., object]] = ()
    if workflows_spec:
        workflows = load_functions(workflows_spec, "workflows")
        try:  # refuse a wrong function now, not after reaching NATS
            definitions_of(workflows)
        except DurableFutureError as exc:
            fail(str(exc))

    if archive is not None:
        try:
            parse_archive(archive)
        except InvalidArgumentError as exc:
            fail(f"--archive: {exc}")
    token = os.environ.get(token_env) or None
    if token is None and not is_loopback(host):
        fail(
            f"refusing to serve the UI on {host} without a login: it is not a loopback address; "
            f"set {token_env} to a secret of 16+ characters (e.g. export {token_env}=$(python "
            "-c 'import secrets; print(secrets.token_urlsafe(32))')) or pass --host 127.0.0.1"
        )
    if token is not None:
        try:
            UiAuth(token)
        except InvalidArgumentError as exc:
            fail(f"{token_env}: {exc}")
        remember_secret(token)

    async def go() -> None:
        try:
            client = await Client.connect(
                settings.nats_url,
                settings.namespace,
                connect_timeout=settings.connect_timeout,
                creds=settings.creds,
                tls=settings.tls,
                codec=settings.codec,
            )
        except DurableFutureError as exc:
            fail(str(exc))
        try:
            ready = _announce(settings, token_env if token else None)
            task = asyncio.ensure_future(
                serve(
                    client,
                    host,
                    port,
                    auth_token=token,
                    on_ready=ready,
                    workflows=workflows,
                    archive=archive,
                )
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc} (pass --port 0 for a free port)")
        except InvalidArgumentError as exc:  # e.g. the name resolved to a public address
            fail(str(exc))
        finally:
            await client.close()

    asyncio.run(go())


def _announce(settings: _Settings, token_env: str | None) -> Callable[[str], None]:
    login = f"sign in with the token in ${token_env}" if token_env else "no login"

    def ready(url: str) -> None:
        click.echo(
            f"DurableFuture UI on {url}  (namespace {settings.namespace}, "
            f"NATS {redact(settings.nats_url)}; {login})"
            "\nPress Ctrl-C to stop.",
        )

    return ready


async def start_dev_ui(
    client: Client,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workflows: Sequence[Callable[..., object]] = (),
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """For ``df dev``: serve the UI in this loop; returns (what to print, how to stop it).

    ``workflows`` (the examples, there) are what its time-travel view replays runs through.

    Falls back to a free port when ``port`` is taken. Without starlette/uvicorn, returns the
    install hint and a no-op.
    """

    async def nothing() -> None:
        return None

    if not ui_available():
        return f"not available ({INSTALL_HINT})", nothing
    from durablefuture.ui.server import bind, run_server

    try:
        sock = bind(host, port)
    except OSError:
        sock = bind(host, 0)
    ready = asyncio.Event()
    urls: list[str] = []

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    task = asyncio.ensure_future(run_server(client, sock, on_ready, workflows=workflows))
    waiter = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        exc = task.exception()
        return f"failed to start ({exc})", nothing

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return urls[0], stop
