"""Shared pieces of the command-line daemons: options, signal handling, clean exits."""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import pkgutil
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import click

from durablefuture.codec.envelope import PayloadCodec, as_codec
from durablefuture.core.errors import DurableFutureError
from durablefuture.logs import setup_logging
from durablefuture.transport.connection import DEFAULT_URL
from durablefuture.transport.redaction import remember, scrub
from durablefuture.transport.tls import TlsConfig

NATS_OPTION = click.option(
    "--nats",
    "nats_url",
    default=DEFAULT_URL,
    envvar="DF_NATS_URL",
    show_default=True,
    help="NATS server URL; several may be given, comma-separated (env DF_NATS_URL).",
)
CREDS_OPTION = click.option(
    "--creds",
    default=None,
    envvar="DF_NATS_CREDS",
    type=click.Path(exists=True, dir_okay=False),
    help="NATS credentials file: a user JWT .creds file, or one `df auth init` wrote "
    "(env DF_NATS_CREDS).",
)
TLS_CA_OPTION = click.option(
    "--tls-ca",
    default=None,
    metavar="FILE",
    envvar="DF_NATS_TLS_CA",
    help="PEM file of the CA that signed the NATS server's certificate (env DF_NATS_TLS_CA). "
    "Any --tls-* option, or a tls:// URL, asks for TLS; without --tls-ca the system's CAs "
    "are trusted.",
)
TLS_CERT_OPTION = click.option(
    "--tls-cert",
    default=None,
    metavar="FILE",
    envvar="DF_NATS_TLS_CERT",
    help="PEM file of this client's certificate, for a NATS that verifies clients "
    "(env DF_NATS_TLS_CERT).",
)
TLS_KEY_OPTION = click.option(
    "--tls-key",
    default=None,
    metavar="FILE",
    envvar="DF_NATS_TLS_KEY",
    help="PEM file of the client certificate's private key, unencrypted (env DF_NATS_TLS_KEY).",
)
TLS_HOSTNAME_OPTION = click.option(
    "--tls-hostname",
    default=None,
    metavar="NAME",
    envvar="DF_NATS_TLS_HOSTNAME",
    help="Name the server's certificate must hold, if not the URL's host "
    "(env DF_NATS_TLS_HOSTNAME).",
)
TLS_OPTIONS = (TLS_CA_OPTION, TLS_CERT_OPTION, TLS_KEY_OPTION, TLS_HOSTNAME_OPTION)
CODEC_OPTION = click.option(
    "--codec",
    "codec_spec",
    default=None,
    metavar="MODULE:FACTORY",
    envvar="DF_CODEC",
    help="Payload codec: a function or class called with no arguments that returns a "
    "df.PayloadCodec (or a list of them), e.g. durablefuture.codecs:from_env (keys in "
    "DF_CODEC_KEYS) (env DF_CODEC).",
)
NAMESPACE_OPTION = click.option(
    "--namespace",
    default="default",
    envvar="DF_NAMESPACE",
    show_default=True,
    help="Namespace (env DF_NAMESPACE).",
)
CONNECT_TIMEOUT_OPTION = click.option(
    "--connect-timeout",
    default=20.0,
    envvar="DF_CONNECT_TIMEOUT",
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to keep retrying to reach NATS at start before exiting.",
)
LOG_LEVEL_OPTION = click.option(
    "--log-level",
    default="info",
    envvar="DF_LOG_LEVEL",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
LOG_FORMAT_OPTION = click.option(
    "--log-format",
    default="json",
    envvar="DF_LOG_FORMAT",
    show_default=True,
    type=click.Choice(["json", "text"]),
    help="One JSON object per line, or readable text.",
)


METRICS_PORT_OPTION = click.option(
    "--metrics-port",
    default=None,
    envvar="DF_METRICS_PORT",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port at /metrics (env DF_METRICS_PORT).",
)
METRICS_HOST_OPTION = click.option(
    "--metrics-host",
    default="127.0.0.1",
    envvar="DF_METRICS_HOST",
    show_default=True,
    help="Address the metrics endpoint binds (0.0.0.0 in containers).",
)


F = TypeVar("F", bound=Callable[..., Any])


def tls_options(fn: F) -> F:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-hostname`` (see :func:`tls_config`)."""
    for option in reversed(TLS_OPTIONS):
        fn = option(fn)
    return fn


def tls_config(
    tls_ca: str | None, tls_cert: str | None, tls_key: str | None, tls_hostname: str | None
) -> TlsConfig | None:
    """The TLS options as a :class:`TlsConfig` (None when none is given).

    Its files are read now, so a wrong one exits at once with a one-line reason naming the
    option and the path, before anything connects.
    """
    if not (tls_ca or tls_cert or tls_key or tls_hostname):
        return None
    try:
        tls = TlsConfig(ca=tls_ca, cert=tls_cert, key=tls_key, hostname=tls_hostname)
        tls.ssl_context()
    except DurableFutureError as exc:
        fail(str(exc))
    return tls


NAMESPACES_OPTION = click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="DF_NAMESPACE",
    help="Namespace to serve; repeat for several (env DF_NAMESPACE, space-separated). "
    "Default: every namespace with a server.creds in --creds-dir, else 'default'.",
)


def daemon_options(fn: F, namespace: Any = NAMESPACE_OPTION) -> F:
    """The options every daemon takes: connection (and its TLS), namespace, logging, metrics."""
    for option in reversed(
        (
            NATS_OPTION,
            namespace,
            CONNECT_TIMEOUT_OPTION,
            CREDS_OPTION,
            *TLS_OPTIONS,
            LOG_LEVEL_OPTION,
            LOG_FORMAT_OPTION,
            METRICS_PORT_OPTION,
            METRICS_HOST_OPTION,
        )
    ):
        fn = option(fn)
    return fn


async def start_metrics(port: int | None, host: str) -> object:
    """Start the /metrics endpoint if a port was given; returns the server (or None)."""
    if port is None:
        return None
    import logging

    from durablefuture import metrics

    server = await metrics.serve(port, host)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    logging.getLogger("durablefuture").info(
        "metrics at http://%s:%s/metrics", host, bound, extra={"metrics_port": bound}
    )
    return server


def fail(message: str) -> NoReturn:
    """Exit non-zero with a one-line reason (scrubbed of NATS passwords and tokens)."""
    click.echo(f"error: {scrub(message)}", err=True)
    sys.exit(2)


def _print_scrubbed(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


def protect_secrets(nats_url: str) -> None:
    """Print nothing of ``nats_url``'s password or token from here on: logs and errors are
    scrubbed of them, and so is the traceback of an error nobody caught."""
    remember(nats_url)
    sys.excepthook = _print_scrubbed


def load_codec(spec: str | None) -> PayloadCodec | None:
    """``--codec MODULE:FACTORY``: call the factory and check it made a payload codec."""
    if not spec:
        return None
    if spec.count(":") != 1:
        fail(f"--codec {spec!r} is not MODULE:FACTORY (e.g. durablefuture.codecs:from_env)")
    [factory] = load_functions(spec, "codec")
    try:
        made: Any = factory()
        return as_codec(made)
    except (DurableFutureError, TypeError, ImportError) as exc:
        fail(f"--codec {spec!r}: {exc}")


def load_functions(spec: str, what: str) -> list[Callable[..., object]]:
    """Parse ``mod:attr,mod:attr`` (an attr may be a function or a list of functions).

    Modules are looked up in the current directory first (as uvicorn and celery do), so
    ``df-worker --workflows my_app.flows:order`` works from the app's folder without PYTHONPATH.
    """
    _import_from_cwd()
    out: list[Callable[..., object]] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        module_name, sep, attr = part.partition(":")
        if not sep or not module_name or not attr:
            fail(f"--{what} entry {part!r} is not MODULE:ATTRIBUTE (e.g. my_app.flows:order)")
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
                searched = ", ".join(p for p in sys.path if p and os.path.isdir(p))
                fail(
                    f"--{what} {part!r}: cannot import module {module_name!r}: no module named "
                    f"{exc.name!r}; searched {searched}. Run from the folder that holds the "
                    "module, or set PYTHONPATH"
                )
            fail(f"--{what} {part!r}: cannot import module {module_name!r}: {exc}")
        except Exception as exc:
            fail(f"--{what} {part!r}: cannot import module {module_name!r}: {exc!r}")
        try:
            value: Any = pkgutil.resolve_name(part)  # the module is imported: attributes only
        except AttributeError:
            fail(f"--{what} {part!r}: module {module_name!r} has no attribute {attr!r}")
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if not callable(item):
                fail(f"--{what} {part!r}: {item!r} is not a function")
            out.append(item)
    return out


async def until_stopped(stop: asyncio.Event, service: asyncio.Task[None]) -> None:
    """Wait for SIGTERM/SIGINT (``stop``) or for ``service`` to end on its own.

    A service that ends by itself (say, its NATS connection was closed for good) raises here,
    so the process exits non-zero and its supervisor restarts it: a daemon never stays up
    unable to work.
    """
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, service}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if service.done():
        service.result()  # raises what ended it
        raise DurableFutureError("the service stopped by itself; exiting so it is restarted")


GC_THRESHOLD = 5_000
"""Young-generation threshold the daemons run with (CPython's default is 700)."""


def gc_threshold() -> int | None:
    """The young-generation threshold ``DF_GC`` asks for (None: CPython's settings).

    ``DF_GC`` unset or ``tuned``: :data:`GC_THRESHOLD`; ``default``: leave CPython's
    settings alone; a number N (100..10,000,000): that threshold. Read before anything
    connects, so a wrong value exits at once with the reason.
    """
    value = os.environ.get("DF_GC", "tuned").strip().lower()
    if value == "default":
        return None
    if value == "tuned":
        return GC_THRESHOLD
    if not value.isdigit() or not 100 <= int(value) <= 10_000_000:
        fail(f"DF_GC={value[:40]!r} is not 'tuned', 'default' or a number 100..10000000")
    return int(value)


def settle_gc(threshold: int | None) -> None:
    """Once start-up is done: keep what it built out of every later collection, and collect
    the young generation every ``threshold`` container allocations (net of frees) instead of
    every 700 (None: change nothing).

    The modules, options and connections made so far live as long as the process, so they
    are collected once and frozen (``gc.freeze``): no later collection scans them again. The
    older generations keep their ratios. Cycles are still collected, only less often: the
    garbage waiting for a collection is bounded by the threshold.
    """
    if threshold is None:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


def _import_from_cwd() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _run_loop(coro: Any) -> None:
    """Run on uvloop when it is installed (the ``[fast]`` extra), else asyncio."""
    if os.environ.get("DF_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop

            uvloop.run(coro)
            return
        except ImportError:
            pass
    asyncio.run(coro)


def run_daemon(
    main: Callable[[asyncio.Event], Awaitable[None]], *, log_level: str, log_format: str
) -> None:
    """Run ``main(stop_event)``; SIGTERM/SIGINT set the event for a graceful drain."""
    setup_logging(log_level, log_format)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        _run_loop(runner())
    except DurableFutureError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
