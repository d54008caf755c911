"""df-worker: runs workflow tasks and/or activity tasks of one task queue."""

from __future__ import annotations

import asyncio
import logging
import os

import click

from daemons.common import (
    CODEC_OPTION,
    daemon_options,
    fail,
    gc_threshold,
    load_codec,
    load_functions,
    protect_secrets,
    run_daemon,
    settle_gc,
    start_metrics,
    tls_config,
    until_stopped,
)
from durablefuture.client import Client
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition
from durablefuture.core.errors import DurableFutureError
from durablefuture.worker import Worker, WorkerOptions


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@daemon_options
@CODEC_OPTION
@click.option("--task-queue", default="default", envvar="DF_TASK_QUEUE", show_default=True)
@click.option(
    "--workflows",
    default="",
    envvar="DF_WORKFLOWS",
    help="Workflows to run: MODULE:ATTR[,MODULE:ATTR...] (an ATTR may be a list).",
)
@click.option(
    "--activities",
    default="",
    envvar="DF_ACTIVITIES",
    help="Activities to run: MODULE:ATTR[,MODULE:ATTR...] (an ATTR may be a list).",
)
@click.option("--max-concurrent-activities", default=100, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-concurrent-workflow-tasks", default=100, show_default=True, type=click.IntRange(1)
)
@click.option(
    "--activity-lease",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds without a lease renewal before a crashed worker's activity is retried.",
)
@click.option(
    "--eager-claim-after",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a granted (eager) activity attempt runs with no lease before it claims one "
    "(keep it below a third of df-server's --eager-check).",
)
@click.option(
    "--workflow-task-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds before a crashed worker's workflow task is redelivered.",
)
@click.option(
    "--liveness-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between liveness records; a record expires after three intervals (min 2 s).",
)
@click.option(
    "--sticky/--no-sticky",
    default=True,
    envvar="DF_STICKY",
    show_default=True,
    help="Take the workflow tasks of the runs this worker caches on a subject of its own.",
)
@click.option(
    "--eager/--no-eager",
    default=True,
    envvar="DF_EAGER",
    show_default=True,
    help="Run the first attempts of the activities this worker's workflows schedule here, "
    "granted by df-server with no stored task (needs --workflows and --activities).",
)
@click.option(
    "--drain-timeout",
    default=60.0,
    envvar="DF_DRAIN_TIMEOUT",
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM, seconds running tasks may take to finish and be reported before exit.",
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
    codec_spec: str | None,
    task_queue: str,
    workflows: str,
    activities: str,
    max_concurrent_activities: int,
    max_concurrent_workflow_tasks: int,
    activity_lease: float,
    eager_claim_after: float,
    workflow_task_timeout: float,
    liveness_interval: float,
    sticky: bool,
    eager: bool,
    drain_timeout: float,
) -> None:
    """Run a DurableFuture worker for TASK_QUEUE.

    SIGTERM stops taking tasks, lets running ones finish and report (up to --drain-timeout),
    then exits.
    """
    protect_secrets(nats_url)
    gc_tuning = gc_threshold()
    tls = tls_config(tls_ca, tls_cert, tls_key, tls_hostname)
    codec = load_codec(codec_spec)
    wfs = load_functions(workflows, "workflows") if workflows else []
    acts = load_functions(activities, "activities") if activities else []
    if not wfs and not acts:
        fail("nothing to run: pass --workflows MODULE:ATTR and/or --activities MODULE:ATTR")
    try:  # refuse a wrong function now, not after reaching NATS
        for fn in wfs:
            WorkflowDefinition.from_fn(fn)
        for fn in acts:
            ActivityDefinition.from_fn(fn)
    except DurableFutureError as exc:
        fail(str(exc))

    async def serve(stop: asyncio.Event) -> None:
        await start_metrics(metrics_port, metrics_host)
        client = await Client.connect(
            nats_url,
            namespace,
            connect_timeout=connect_timeout,
            creds=creds,
            tls=tls,
            codec=codec,
        )
        worker = Worker(
            client,
            task_queue,
            wfs,
            acts,
            max_concurrent_activities=max_concurrent_activities,
            max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
            options=WorkerOptions(
                workflow_task_timeout=workflow_task_timeout,
                activity_lease=activity_lease,
                eager_claim_after=eager_claim_after,
                liveness_interval=liveness_interval,
                drain_timeout=drain_timeout,
                sticky=sticky,
                eager_activities=eager,
            ),
        )
        await worker.start()
        settle_gc(gc_tuning)
        runner = asyncio.create_task(worker.run())
        await until_stopped(stop, runner)
        await worker.shutdown()
        await runner
        await client.close()
        if worker.abandoned:
            # a sync activity still running in a thread would hold the interpreter's exit
            # until it returns, and its result could no longer be reported: leave now
            logging.shutdown()
            os._exit(0)

    run_daemon(serve, log_level=log_level, log_format=log_format)


if __name__ == "__main__":  # pragma: no cover
    main()
