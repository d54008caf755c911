"""``df``: the command line for developers and operators.

``df dev`` runs everything locally (embedded nats-server, a server and a worker for the
examples). ``df workflow ...`` (in :mod:`daemons.workflow_command`) starts, inspects and acts on
workflows of a namespace; ``df schedule ...`` and ``df ui`` live in their own modules too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import click

from daemons.auth_command import auth
from daemons.cli_base import (
    CONTEXT,
    Settings,
    _emit,
    _parse_input,
    _run,
    _with_client,
)
from daemons.common import (
    CODEC_OPTION,
    CREDS_OPTION,
    LOG_LEVEL_OPTION,
    fail,
    gc_threshold,
    load_codec,
    protect_secrets,
    settle_gc,
    tls_config,
    tls_options,
)
from daemons.schedule_command import hooks, schedule, why_schedule
from daemons.storage_command import namespace
from daemons.ui_command import start_dev_ui, ui
from daemons.update_command import workflow_update as workflow_update  # registers it
from daemons.workflow_command import workflow
from durablefuture.client import Client
from durablefuture.codec import text as json_text
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.liveness import WorkerRecord, describe_worker
from durablefuture.logs import setup_cli_logging, setup_logging
from durablefuture.transport.connection import DEFAULT_URL

__all__ = ["_parse_input", "main"]


@click.group(context_settings=CONTEXT)
@click.option("--nats", "nats_url", default=DEFAULT_URL, envvar="DF_NATS_URL", show_default=True)
@click.option("--namespace", default="default", envvar="DF_NAMESPACE", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--connect-timeout", default=5.0, envvar="DF_CONNECT_TIMEOUT", show_default=True, type=float
)
@CREDS_OPTION
@tls_options
@CODEC_OPTION
@click.pass_context
def main(
    ctx: click.Context,
    nats_url: str,
    namespace: str,
    as_json: bool,
    connect_timeout: float,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_hostname: str | None,
    codec_spec: str | None,
) -> None:
    """DurableFuture: durable workflows on NATS JetStream."""
    protect_secrets(nats_url)
    setup_cli_logging()
    tls = tls_config(tls_ca, tls_cert, tls_key, tls_hostname)
    codec = load_codec(codec_spec)
    ctx.obj = Settings(nats_url, namespace, as_json, connect_timeout, creds, tls, codec)


# ---------------------------------------------------------------------------- df dev


@main.command(context_settings=CONTEXT)
@click.option(
    "--data-dir",
    default=".df-dev",
    show_default=True,
    help="Where the embedded nats-server keeps its JetStream store.",
)
@click.option(
    "--port",
    default=None,
    type=int,
    help="NATS port (default 4222; with --run a free port).",
)
@click.option(
    "--run",
    "run_example",
    default=None,
    help="Run an example and exit: order, recovery, saga, approval, batch.",
)
@click.option(
    "--auth", is_flag=True, help="Require logins: see `df auth init` (creds in DATA_DIR)."
)
@LOG_LEVEL_OPTION
@click.pass_obj
def dev(
    settings: Settings,
    data_dir: str,
    port: int | None,
    run_example: str | None,
    log_level: str,
    auth: bool = False,
) -> None:
    """Run everything locally: nats-server, a df-server and a worker for the examples."""
    from workflows_examples import ACTIVITIES, EXAMPLES, TASK_QUEUE, WORKFLOWS

    if run_example is not None and run_example not in EXAMPLES:
        fail(f"unknown example {run_example!r}; choose one of {', '.join(sorted(EXAMPLES))}")
    gc_tuning = gc_threshold()  # the in-process df-server and worker, as the daemons
    setup_logging("warning" if run_example and log_level == "info" else log_level, "text")

    async def go() -> None:
        from durablefuture.natsserver import free_port
        from durablefuture.testing import LocalEnvironment

        chosen = port if port is not None else (free_port() if run_example else 4222)
        store = os.path.abspath(os.path.join(data_dir, "nats"))
        env = LocalEnvironment(settings.namespace, store_dir=store, port=chosen, auth=auth)
        try:
            await env.__aenter__()
        except DurableFutureError as exc:
            await env.__aexit__(None, None, None)
            fail(f"{exc} (is port {chosen} in use? pass --port 0 for a free one)")
        try:
            client = env.client
            async with env.worker(TASK_QUEUE, WORKFLOWS, ACTIVITIES):
                settle_gc(gc_tuning)
                if run_example is not None:
                    wf, args, driver = EXAMPLES[run_example]
                    wid = f"{run_example}-{uuid.uuid4().hex[:8]}"
                    click.echo(f"started {run_example} example as workflow {wid!r} ...", err=True)
                    handle = await client.start_workflow(wf, *args, id=wid, task_queue=TASK_QUEUE)
                    if driver is not None:
                        await driver(handle)
                    result = await handle.result(timeout=60)
                    click.echo(json_text.pretty({"workflow_id": wid, "result": result}))
                else:
                    ui_address, stop_ui = await start_dev_ui(client, workflows=WORKFLOWS)
                    click.echo(
                        f"DurableFuture dev environment\n"
                        f"  NATS:        {env.nats_url}  (store: {store})\n"
                        f"  web UI:      {ui_address}\n"
                        f"  namespace:   {settings.namespace}\n"
                        f"  task queue:  {TASK_QUEUE} (examples: {', '.join(sorted(EXAMPLES))})\n"
                        f"Start a workflow from another terminal:\n"
                        f"  df --nats {env.nats_url} workflow start order_workflow --id o-1 "
                        f"--task-queue {TASK_QUEUE} --input '[\"o-1\", 42.0]' --wait\n"
                        f"Press Ctrl-C to stop."
                    )
                    if auth:  # every command needs a login (a role's credentials)
                        click.echo(f"  credentials: --creds {env.creds('client')} (and admin, ...)")
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, stop.set)
                    await stop.wait()
                    await stop_ui()
        finally:
            await env.__aexit__(None, None, None)

    _run(go())


# ---------------------------------------------------------------------------- df why


@main.command(context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--run-id", default=None, help="A specific run (default: the latest).")
@click.option("--schedule", "of_schedule", is_flag=True, help="The id is a schedule's.")
@click.option("--at", default=None, help="With --schedule: a scheduled time to explain.")
@click.pass_obj
def why(
    settings: Settings, workflow_id: str, run_id: str | None, of_schedule: bool, at: str | None
) -> None:
    """Explain why WORKFLOW_ID is (not) progressing, from history and live queue state."""
    if of_schedule:  # df why --schedule ID [--at TIME]: why it did not fire
        why_schedule(settings, workflow_id, at)
        return
    from durablefuture.diagnose import Diagnosis, explain, render

    async def go(client: Client) -> Diagnosis:
        return await explain(client, workflow_id, run_id)

    d = _run(_with_client(settings, go))
    _emit(settings, d, render(d))


# ---------------------------------------------------------------------------- df lint


@main.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.pass_obj
def lint(settings: Settings, paths: tuple[str, ...]) -> None:
    """Check workflow code in PATHS for non-determinism (clock, randomness, I/O, ...).

    Exit status 1 when anything is found (for CI and pre-commit). Silence one finding with
    `# df: noqa DF101` on its line. Needs no NATS.
    """
    from durablefuture.lint import main as lint_main

    sys.exit(lint_main([*paths, *(["--json"] if settings.as_json else [])]))


# ---------------------------------------------------------------------------- df workers


@main.command(context_settings=CONTEXT)
@click.option("--task-queue", default=None, help="Only the workers of this task queue.")
@click.pass_obj
def workers(settings: Settings, task_queue: str | None) -> None:
    """Live workers: what each registers, what it runs, when it was last seen."""

    async def go(client: Client) -> list[WorkerRecord] | None:
        return await client.workers(task_queue)

    records = _run(_with_client(settings, go))
    if records is None:
        fail(
            "worker liveness is unknown: the namespace has no workers bucket (it was created "
            "by an older df-server; restart df-server to create it)"
        )
    records.sort(key=lambda r: (r.task_queue, r.started_at, r.identity))
    now = time.time()
    text = "\n".join(f"{r.task_queue:<20} {describe_worker(r, now)}" for r in records)
    _emit(settings, records, text or "(no live workers)")


main.add_command(workflow)
main.add_command(ui)
main.add_command(auth)
main.add_command(namespace)

hooks.run = lambda settings, fn: _run(_with_client(settings, fn))
hooks.emit = _emit
main.add_command(schedule)

if __name__ == "__main__":  # pragma: no cover
    main()
