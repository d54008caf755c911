"""df-server: the history writer (timers, retries, timeouts, dispatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from daemons.common import (
    NAMESPACES_OPTION,
    daemon_options,
    fail,
    gc_threshold,
    protect_secrets,
    run_daemon,
    settle_gc,
    start_metrics,
    tls_config,
    until_stopped,
)
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.namespace import parse_duration, parse_size
from durablefuture.server import ServerOptions, Servers
from durablefuture.server.options import MAX_STATUS_DELAY
from durablefuture.server.schedule_options import ScheduleOptions
from durablefuture.transport.archive import parse_archive

F = TypeVar("F", bound=Callable[..., Any])

SERVER_CREDS = "server.creds"


def daemon_options_many(fn: F) -> F:
    return daemon_options(fn, namespace=NAMESPACES_OPTION)


def namespaces_and_creds(
    namespaces: tuple[str, ...], creds: str | None, creds_dir: str | None
) -> tuple[list[str], str | dict[str, str] | None]:
    """The namespaces to serve and how each logs in (``--creds`` for all, or
    ``<creds-dir>/<namespace>/server.creds`` each, as ``df auth init --out`` writes them)."""
    if creds_dir is None:
        return list(namespaces) or ["default"], creds
    if creds is not None:
        fail("give --creds (one login for every namespace) or --creds-dir, not both")
    root = Path(creds_dir)
    if not namespaces:
        namespaces = tuple(
            sorted(p.parent.name for p in root.glob(f"*/{SERVER_CREDS}") if p.is_file())
        )
        if not namespaces:
            fail(
                f"--creds-dir {creds_dir}: no <namespace>/{SERVER_CREDS} in it; "
                "write them with `df auth init --out DIR --namespace NS`"
            )
    files = {ns: root / ns / SERVER_CREDS for ns in namespaces}
    for ns, path in files.items():
        if not path.is_file():
            fail(
                f"--creds-dir {creds_dir}: no credentials for namespace {ns!r} ({path} is "
                f"missing); add the namespace with `df auth init --out {creds_dir} ...`"
            )
    return list(namespaces), {ns: str(path) for ns, path in files.items()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@daemon_options_many
@click.option(
    "--creds-dir",
    default=None,
    envvar="DF_CREDS_DIR",
    type=click.Path(exists=True, file_okay=False),
    help="A `df auth init --out` directory: each namespace logs in with "
    "<dir>/<namespace>/server.creds; without --namespace, every namespace in it is served "
    "(env DF_CREDS_DIR).",
)
@click.option(
    "--replicas",
    default=1,
    envvar="DF_REPLICAS",
    show_default=True,
    type=click.IntRange(1, 5),
    help="Replicas of the namespace stream and buckets (3 on a 3-node NATS cluster).",
)
@click.option(
    "--input-ack-wait",
    default=10.0,
    envvar="DF_INPUT_ACK_WAIT",
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds before an input held by a crashed server is redelivered.",
)
@click.option(
    "--start-concurrency",
    default=64,
    envvar="DF_START_CONCURRENCY",
    show_default=True,
    type=click.IntRange(min=0),
    help="New starts from clients handled at once; runs already going, and their due timers "
    "first, go ahead of a burst of starts (0: no limit).",
)
@click.option(
    "--sticky-timeout",
    default=5.0,
    envvar="DF_STICKY_TIMEOUT",
    show_default=True,
    type=click.FloatRange(min=0),
    help="A run's workflow tasks go to the worker caching it; one that worker has not taken "
    "after this many seconds (or that a worker which is gone held) goes to the task queue "
    "(0: no sticky tasks).",
)
@click.option(
    "--eager-check",
    default=30.0,
    envvar="DF_EAGER_CHECK",
    show_default=True,
    type=click.FloatRange(min=0),
    help="A worker that decides an activity of its own task queue, with free slots, runs its "
    "first attempt itself (no stored task); an attempt nobody reported nor claimed within "
    "this many seconds (or its start_to_close_timeout plus 3 s, if sooner) is timed out and "
    "retried (0: every activity task is stored).",
)
@click.option(
    "--eager-start-wait",
    default=0.0,
    envvar="DF_EAGER_START_WAIT",
    show_default=True,
    type=click.FloatRange(min=0, max=1),
    help="Seconds a new run's first workflow task is offered to a worker of its queue before "
    "anything is stored (eager start; e.g. 0.1); no answer in time and the run is created as "
    "before (0: off).",
)
@click.option(
    "--status-delay",
    default=1.0,
    envvar="DF_STATUS_DELAY",
    show_default=True,
    type=click.FloatRange(min=0, max=MAX_STATUS_DELAY),
    help="Seconds a run must stay open before it is listed as running; a run that closes "
    "sooner gets only its closed status entry (0: listed right after its start; at most 60).",
)
@click.option(
    "--retention",
    default=None,
    envvar="DF_RETENTION",
    metavar="DURATION",
    help="How long closed runs are kept (history, status, payloads), e.g. 7d, 12h, 30m; "
    "stored with the namespace for every df-server. Default: what is stored, else 7d.",
)
@click.option(
    "--archive",
    default=None,
    envvar="DF_ARCHIVE",
    metavar="dir:PATH|objstore",
    help="Archive each closed run's history before retention deletes it: to a folder "
    "(dir:PATH) or to the object store bucket DF_<ns>_archive (objstore).",
)
@click.option(
    "--history-warn-events",
    type=click.IntRange(min=1),
    default=None,
    help="Warn when a run's history reaches this many events (default 10240).",
)
@click.option(
    "--history-warn-size",
    default=None,
    metavar="SIZE",
    help="Warn when a run's history reaches this size, e.g. 10MB (default 10MiB).",
)
@click.option(
    "--history-limit-events",
    type=click.IntRange(min=1),
    default=None,
    help="End (terminate) a run whose history reaches this many events (default 51200).",
)
@click.option(
    "--history-limit-size",
    default=None,
    metavar="SIZE",
    help="End (terminate) a run whose history reaches this size, e.g. 50MB (default 50MiB).",
)
@click.option(
    "--compact-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between two purges of handled inputs and tasks (0: never).",
)
@click.option(
    "--schedule-ahead",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds before its fire time an ALLOW_ALL schedule action may be recorded, so that "
    "at the fire time only its start is left (0: at the fire time, as df-servers before "
    "this option did; use 0 while older df-servers still run beside this one).",
)
@click.option(
    "--schedule-poll-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between two looks at a schedule while it waits on a running action (a "
    "buffered action, a stop request, pause-on-failure, an action started but its run not yet "
    "seen); shorter: such actions move on sooner, at the cost of more reads.",
)
def main(
    nats_url: str,
    namespaces: tuple[str, ...],
    connect_timeout: float,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_hostname: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
    replicas: int,
    input_ack_wait: float,
    start_concurrency: int,
    sticky_timeout: float,
    eager_check: float,
    eager_start_wait: float,
    status_delay: float,
    creds_dir: str | None,
    retention: str | None,
    archive: str | None,
    history_warn_events: int | None,
    history_warn_size: str | None,
    history_limit_events: int | None,
    history_limit_size: str | None,
    compact_interval: float,
    schedule_ahead: float,
    schedule_poll_interval: float,
) -> None:
    """Run a DurableFuture server for one or more namespaces on the NATS at --nats.

    Any number of servers may run at once; SIGTERM drains in-flight work and exits.
    """
    protect_secrets(nats_url)
    gc_tuning = gc_threshold()
    tls = tls_config(tls_ca, tls_cert, tls_key, tls_hostname)
    served, logins = namespaces_and_creds(namespaces, creds, creds_dir)
    options = ServerOptions(
        replicas=replicas,
        input_ack_wait=input_ack_wait,
        compact_interval=compact_interval,
        sticky_timeout=sticky_timeout,
        eager_check=eager_check,
        eager_start_wait=eager_start_wait,
        status_delay=status_delay,
        start_concurrency=start_concurrency,
        schedules=ScheduleOptions(ahead=schedule_ahead, poll_interval=schedule_poll_interval),
        **storage_options(
            retention,
            archive,
            history_warn_events,
            history_warn_size,
            history_limit_events,
            history_limit_size,
        ),
    )

    async def serve(stop: asyncio.Event) -> None:
        await start_metrics(metrics_port, metrics_host)
        servers = await Servers.connect(
            nats_url, served, options, connect_timeout=connect_timeout, creds=logins, tls=tls
        )
        await servers.start()
        settle_gc(gc_tuning)
        task = asyncio.create_task(servers.run())
        await until_stopped(stop, task)
        await servers.shutdown()
        await task

    run_daemon(serve, log_level=log_level, log_format=log_format)


def storage_options(
    retention: str | None,
    archive: str | None,
    warn_events: int | None,
    warn_size: str | None,
    limit_events: int | None,
    limit_size: str | None,
) -> dict[str, Any]:
    """ServerOptions fields of the storage flags (exits with a one-line reason if bad)."""
    out: dict[str, Any] = {}
    limits: dict[str, int] = {}
    try:
        if retention is not None:
            out["retention"] = parse_duration(retention, "--retention")
        if archive is not None:
            parse_archive(archive)
            out["archive"] = archive
        if warn_events is not None:
            limits["history_warn_events"] = warn_events
        if warn_size is not None:
            limits["history_warn_bytes"] = parse_size(warn_size, "--history-warn-size")
        if limit_events is not None:
            limits["history_limit_events"] = limit_events
        if limit_size is not None:
            limits["history_limit_bytes"] = parse_size(limit_size, "--history-limit-size")
    except InvalidArgumentError as exc:
        raise click.BadParameter(str(exc)) from None
    out["history_limits"] = limits
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
