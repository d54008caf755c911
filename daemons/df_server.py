"""df-server: the history writer (timers, retries, timeouts, dispatch)."""

from __future__ import annotations

import asyncio

import click

from daemons.common import (
    daemon_options,
    protect_secrets,
    run_daemon,
    start_metrics,
    tls_config,
    until_stopped,
)
from durablefuture.server import Server, ServerOptions


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@daemon_options
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
def main(
    nats_url: str,
    namespace: str,
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
) -> None:
    """Run a DurableFuture server for NAMESPACE on the NATS at --nats.

    Any number of servers may run at once; SIGTERM drains in-flight work and exits.
    """
    protect_secrets(nats_url)
    tls = tls_config(tls_ca, tls_cert, tls_key, tls_hostname)
    options = ServerOptions(namespace=namespace, replicas=replicas, input_ack_wait=input_ack_wait)

    async def serve(stop: asyncio.Event) -> None:
        await start_metrics(metrics_port, metrics_host)
        server = await Server.connect(
            nats_url, options, connect_timeout=connect_timeout, creds=creds, tls=tls
        )
        await server.start()
        task = asyncio.create_task(server.run())
        await until_stopped(stop, task)
        await server.shutdown()
        await task

    run_daemon(serve, log_level=log_level, log_format=log_format)


if __name__ == "__main__":  # pragma: no cover
    main()
