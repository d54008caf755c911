"""``df``: the command line for developers and operators.

``df dev`` runs everything locally (embedded nats-server, a server and a worker for the
examples). ``df workflow ...`` starts, inspects and acts on workflows of a namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
import orjson

from daemons.common import (
    CREDS_OPTION,
    LOG_LEVEL_OPTION,
    fail,
    protect_secrets,
    tls_config,
    tls_options,
)
from daemons.schedule_command import hooks, schedule
from daemons.ui_command import start_dev_ui, ui
from durablefuture.client import Client, WorkflowDescription
from durablefuture.codec.wire import default_codec
from durablefuture.core.errors import DurableFutureError, WorkflowExecutionError
from durablefuture.core.failure import Failure
from durablefuture.core.liveness import WorkerRecord, describe_worker, unserved_workflow
from durablefuture.logs import setup_cli_logging, setup_logging
from durablefuture.transport.connection import DEFAULT_URL
from durablefuture.transport.tls import TlsConfig

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"]}


class Settings:
    def __init__(
        self,
        nats_url: str,
        namespace: str,
        as_json: bool,
        timeout: float,
        creds: str | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.namespace = namespace
        self.as_json = as_json
        self.connect_timeout = timeout
        self.creds = creds
        self.tls = tls


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except WorkflowExecutionError:
        raise
    except DurableFutureError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


def _emit(settings: Settings, value: Any, text: str | None = None) -> None:
    if settings.as_json:
        click.echo(orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2))
    else:
        click.echo(text if text is not None else _pretty(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Failure):
        return default_codec().converter.unstructure(value)
    return default_codec().converter.unstructure(value)


def _pretty(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2).decode()


_JSON_KINDS = {dict: "an object", str: "a string", bool: "a boolean", int: "a number"}


def _parse_input(text: str | None) -> list[Any]:
    """``--input``: a JSON array, one element per positional argument."""
    if text is None or text == "":
        return []
    example = "pass e.g. --input '[\"o-1\", 42.0]'"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = " ".join(str(exc).split())
        fail(f"--input is not valid JSON ({reason}); {example} (a JSON array of arguments)")
    if not isinstance(value, list):
        kind = _JSON_KINDS.get(type(value), "a number" if isinstance(value, float) else "null")
        one = " ".join(text.split())
        wrap = f"--input '[{one}]'" if len(one) <= 60 and "'" not in one else "[ ... ]"
        fail(
            f"--input must be a JSON array of arguments, got {kind}; {example}. "
            f"For a single argument, wrap it: {wrap}"
        )
    return value


@click.group(context_settings=CONTEXT)
@click.option("--nats", "nats_url", default=DEFAULT_URL, envvar="DF_NATS_URL", show_default=True)
@click.option("--namespace", default="default", envvar="DF_NAMESPACE", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--connect-timeout", default=5.0, envvar="DF_CONNECT_TIMEOUT", show_default=True, type=float
)
@CREDS_OPTION
@tls_options
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
) -> None:
    """DurableFuture: durable workflows on NATS JetStream."""
    protect_secrets(nats_url)
    setup_cli_logging()
    tls = tls_config(tls_ca, tls_cert, tls_key, tls_hostname)
    ctx.obj = Settings(nats_url, namespace, as_json, connect_timeout, creds, tls)


async def _client(settings: Settings) -> Client:
    return await Client.connect(
        settings.nats_url,
        settings.namespace,
        connect_timeout=settings.connect_timeout,
        creds=settings.creds,
        tls=settings.tls,
    )


async def _with_client(settings: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    client = await _client(settings)
    try:
        return await fn(client)
    finally:
        await client.close()


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
@LOG_LEVEL_OPTION
@click.pass_obj
def dev(
    settings: Settings, data_dir: str, port: int | None, run_example: str | None, log_level: str
) -> None:
    """Run everything locally: nats-server, a df-server and a worker for the examples."""
    from workflows_examples import ACTIVITIES, EXAMPLES, TASK_QUEUE, WORKFLOWS

    if run_example is not None and run_example not in EXAMPLES:
        fail(f"unknown example {run_example!r}; choose one of {', '.join(sorted(EXAMPLES))}")
    setup_logging("warning" if run_example and log_level == "info" else log_level, "text")

    async def go() -> None:
        from durablefuture.natsserver import free_port
        from durablefuture.testing import LocalEnvironment

        chosen = port if port is not None else (free_port() if run_example else 4222)
        store = os.path.abspath(os.path.join(data_dir, "nats"))
        env = LocalEnvironment(settings.namespace, store_dir=store, port=chosen)
        try:
            await env.__aenter__()
        except DurableFutureError as exc:
            await env.__aexit__(None, None, None)
            fail(f"{exc} (is port {chosen} in use? pass --port 0 for a free one)")
        try:
            client = env.client
            async with env.worker(TASK_QUEUE, WORKFLOWS, ACTIVITIES):
                if run_example is not None:
                    wf, args, driver = EXAMPLES[run_example]
                    wid = f"{run_example}-{uuid.uuid4().hex[:8]}"
                    click.echo(f"started {run_example} example as workflow {wid!r} ...", err=True)
                    handle = await client.start_workflow(wf, *args, id=wid, task_queue=TASK_QUEUE)
                    if driver is not None:
                        await driver(handle)
                    result = await handle.result(timeout=60)
                    click.echo(_pretty({"workflow_id": wid, "result": result}))
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
@click.pass_obj
def why(settings: Settings, workflow_id: str, run_id: str | None) -> None:
    """Explain why WORKFLOW_ID is (not) progressing, from history and live queue state."""
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


# ---------------------------------------------------------------------------- df workflow


@main.group(context_settings=CONTEXT)
def workflow() -> None:
    """Start, inspect and act on workflows."""


def _describe_text(d: WorkflowDescription) -> str:
    lines = [
        f"workflow   {d.workflow_id}",
        f"run        {d.run_id}",
        f"type       {d.workflow_type}",
        f"queue      {d.task_queue}",
        f"status     {d.status}",
        f"started    {d.start_time.isoformat()}",
    ]
    if d.close_time:
        lines.append(f"closed     {d.close_time.isoformat()}")
    lines.append(f"events     {d.history_length}")
    if d.corrupt_at is not None:
        lines.append(f"corrupt    at stream sequence {d.corrupt_at}")
    if d.failure:
        lines.append(f"failure    {d.failure.describe()}")
    if d.cancel_requested:
        lines.append("cancel     requested")
    for a in d.pending_activities:
        line = f"activity   #{a.activity_id} {a.name} attempt {a.attempt}"
        line += " running" if a.started else " waiting"
        if a.worker:
            line += f" on worker {a.worker}"
        if a.next_retry_time:
            line += f", next retry {a.next_retry_time.isoformat()}"
        if a.last_failure:
            line += f", last failure: {a.last_failure.describe()}"
        lines.append(line)
    for seq, at in d.pending_timers:
        lines.append(f"timer      #{seq} fires {at.isoformat()}")
    for w in d.signal_waits:
        deadline = f"times out {w.deadline.isoformat()}" if w.deadline else "no deadline"
        lines.append(
            f"signal     #{w.wait_id} {w.name} waiting since {w.since.isoformat()}, {deadline}"
        )
    if d.last_workflow_task_failure:
        lines.append(f"task error {d.last_workflow_task_failure.describe()}")
    return "\n".join(lines)


@workflow.command("start", context_settings=CONTEXT)
@click.argument("name")
@click.option("--id", "workflow_id", required=True, help="Workflow id (unique while running).")
@click.option("--task-queue", default="default", show_default=True)
@click.option("--input", "input_json", default=None, help="JSON array of arguments.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after seconds.")
@click.pass_obj
def workflow_start(
    settings: Settings,
    name: str,
    workflow_id: str,
    task_queue: str,
    input_json: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Start workflow NAME (its registered name).

    The run is accepted even if no live worker of TASK_QUEUE registers NAME (a rolling deploy
    may bring one); a warning on stderr then says what the queue's live workers register.
    """
    args = _parse_input(input_json)

    async def go(client: Client) -> Any:
        handle = await client.start_workflow(name, *args, id=workflow_id, task_queue=task_queue)
        out: dict[str, Any] = {"workflow_id": handle.id, "run_id": handle.run_id}
        await _warn_if_unserved(client, task_queue, name)
        if wait:
            out["result"] = await _with_spinner(
                "waiting for the result", handle.result(timeout=timeout)
            )
        return out

    _result_or_exit(settings, lambda: _with_client(settings, go), spin=False)


async def _warn_if_unserved(client: Client, task_queue: str, workflow_type: str) -> None:
    """Warn on stderr when no live worker of ``task_queue`` registers ``workflow_type``."""
    try:
        records = await client.workers(task_queue)
    except DurableFutureError as exc:  # the run is started; liveness is only advice
        click.echo(f"warning: cannot check the workers of {task_queue!r}: {exc}", err=True)
        return
    if records is None:
        return  # liveness unknown (older df-server): say nothing rather than guess
    problem = unserved_workflow(records, task_queue, workflow_type)
    if problem:
        click.echo(f"warning: {problem}", err=True)


async def _with_spinner(label: str, work: Awaitable[T]) -> T:
    """Show a spinner on stderr while ``work`` runs (only on a terminal)."""
    if not sys.stderr.isatty():
        return await work
    task = asyncio.ensure_future(work)
    frames = "|/-\\"
    began = time.monotonic()
    i = 0
    try:
        while not task.done():
            elapsed = time.monotonic() - began
            sys.stderr.write(f"\r{frames[i % 4]} {label} ({elapsed:.0f}s)")
            sys.stderr.flush()
            i += 1
            await asyncio.wait({task}, timeout=0.2)
    finally:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
    return task.result()


def _result_or_exit(
    settings: Settings,
    fn: Callable[[], Awaitable[Any]],
    waiting: str = "waiting for the result",
    *,
    spin: bool = True,
) -> None:
    async def spun() -> Any:
        return await _with_spinner(waiting, fn()) if spin else await fn()

    try:
        value = _run(spun())
    except WorkflowExecutionError as exc:
        _emit(settings, {"error": type(exc).__name__, "message": str(exc)}, f"{exc}")
        sys.exit(1)
    except TimeoutError as exc:
        fail(str(exc))
    _emit(settings, value)


@workflow.command("result", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--timeout", default=None, type=float)
@click.pass_obj
def workflow_result(settings: Settings, workflow_id: str, timeout: float | None) -> None:
    """Wait for WORKFLOW_ID to finish and print its result (exit 1 if it did not complete)."""

    async def go(client: Client) -> Any:
        return await client.get_workflow_handle(workflow_id).result(timeout=timeout)

    _result_or_exit(settings, lambda: _with_client(settings, go))


@workflow.command("describe", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.pass_obj
def workflow_describe(settings: Settings, workflow_id: str) -> None:
    """Status, pending activities, timers and signal waits of the latest run."""

    async def go(client: Client) -> WorkflowDescription:
        return await client.get_workflow_handle(workflow_id).describe()

    d = _run(_with_client(settings, go))
    _emit(settings, d, _describe_text(d))


@workflow.command("history", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.pass_obj
def workflow_history(settings: Settings, workflow_id: str) -> None:
    """The events of the latest run (a table, or raw JSON with --json)."""

    async def go(client: Client) -> list[Any]:
        return await client.get_workflow_handle(workflow_id).fetch_history()

    events = _run(_with_client(settings, go))
    codec = default_codec()
    raw = [codec.encode_event(e) for e in events]
    if settings.as_json:
        click.echo(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
        return
    for e, r in zip(events, raw, strict=True):
        ts = datetime.fromtimestamp(e.at).strftime("%H:%M:%S.%f")[:-3]
        detail = {k: v for k, v in r.items() if k not in ("t", "event_id", "at")}
        click.echo(f"{e.event_id:>5}  {ts}  {type(e).__name__:<24} {orjson.dumps(detail).decode()}")


@workflow.command("list", context_settings=CONTEXT)
@click.option("--status", default=None, help="running, completed, failed, ...")
@click.option("--type", "workflow_type", default=None)
@click.option("--since", default=None, help="ISO time: runs started at or after it.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def workflow_list(
    settings: Settings, status: str | None, workflow_type: str | None, since: str | None, limit: int
) -> None:
    """Runs of the namespace, newest first."""
    since_dt = None
    if since:
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since {since!r} is not an ISO date/time (e.g. 2026-11-25T10:00:00+00:00)")

    async def go(client: Client) -> list[WorkflowDescription]:
        return await client.list_workflows(
            status=status, workflow_type=workflow_type, since=since_dt, limit=limit
        )

    rows = _run(_with_client(settings, go))
    text = "\n".join(
        f"{d.start_time.isoformat(timespec='seconds')}  {d.status:<16} {d.workflow_type:<24} "
        f"{d.workflow_id}  {d.run_id}"
        for d in rows
    )
    _emit(settings, rows, text or "(no workflows)")


@workflow.command("signal", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.argument("name")
@click.option("--input", "input_json", default=None, help="JSON array of signal arguments.")
@click.pass_obj
def workflow_signal(
    settings: Settings, workflow_id: str, name: str, input_json: str | None
) -> None:
    """Send signal NAME to WORKFLOW_ID."""
    args = _parse_input(input_json)

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).signal(name, *args)

    _run(_with_client(settings, go))
    _emit(settings, {"signalled": workflow_id, "signal": name}, f"signalled {workflow_id}")


@workflow.command("cancel", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--reason", default="")
@click.pass_obj
def workflow_cancel(settings: Settings, workflow_id: str, reason: str) -> None:
    """Request cancellation (the workflow can clean up)."""

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).cancel(reason)

    _run(_with_client(settings, go))
    _emit(settings, {"cancel_requested": workflow_id}, f"cancellation requested for {workflow_id}")


@workflow.command("terminate", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--reason", default="")
@click.pass_obj
def workflow_terminate(settings: Settings, workflow_id: str, reason: str) -> None:
    """End the run at once."""

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).terminate(reason)

    _run(_with_client(settings, go))
    _emit(settings, {"terminated": workflow_id}, f"terminated {workflow_id}")


@workflow.command("query", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.argument("name")
@click.option("--input", "input_json", default=None, help="JSON array of query arguments.")
@click.option("--timeout", default=10.0, show_default=True, type=float)
@click.pass_obj
def workflow_query(
    settings: Settings, workflow_id: str, name: str, input_json: str | None, timeout: float
) -> None:
    """Ask WORKFLOW_ID for live state through its query handler NAME."""
    args = _parse_input(input_json)

    async def go(client: Client) -> Any:
        return await client.get_workflow_handle(workflow_id).query(name, *args, timeout=timeout)

    _emit(settings, _run(_with_client(settings, go)))


@workflow.command("replay-check", context_settings=CONTEXT)
@click.option(
    "--workflows",
    "spec",
    required=True,
    help="The code to check: MODULE:ATTR[,MODULE:ATTR...] (as for df-worker).",
)
@click.option("--type", "workflow_type", default=None, help="Only runs of this workflow type.")
@click.option("--id", "workflow_ids", multiple=True, help="Only these workflow ids.")
@click.option("--status", default=None, help="Only runs with this status (e.g. running).")
@click.option("--limit", default=1000, show_default=True, help="At most this many runs.")
@click.pass_obj
def workflow_replay_check(
    settings: Settings,
    spec: str,
    workflow_type: str | None,
    workflow_ids: tuple[str, ...],
    status: str | None,
    limit: int,
) -> None:
    """Replay stored histories against local code; exit 1 on any non-determinism.

    Gate a deploy on it: runs that are in flight must replay on the new code.
    """
    from daemons.common import load_functions
    from durablefuture.core.definitions import name_of
    from durablefuture.core.errors import NonDeterminismError
    from durablefuture.testing import Replayer

    functions = load_functions(spec, "workflows")
    replayer = Replayer(workflows=functions)
    known = {name_of(f) for f in functions}

    async def go(client: Client) -> list[dict[str, Any]]:
        targets: list[tuple[str, str | None]]
        if workflow_ids:
            targets = [(wid, None) for wid in workflow_ids]
        else:
            rows = await client.list_workflows(
                status=status, workflow_type=workflow_type, limit=limit
            )
            targets = [(d.workflow_id, d.run_id) for d in rows if d.workflow_type in known]
        out: list[dict[str, Any]] = []
        for wid, run_id in targets:
            handle = client.get_workflow_handle(wid, run_id=run_id)
            history = await handle.fetch_history()
            row: dict[str, Any] = {"workflow_id": wid, "run_id": history[0].run_id}  # type: ignore[union-attr]
            try:
                replayer.replay(history)
                row["ok"] = True
            except NonDeterminismError as exc:
                row.update(ok=False, event_id=exc.event_id, error=str(exc))
            except DurableFutureError as exc:
                row.update(ok=False, error=str(exc))
            out.append(row)
        return out

    rows = _run(_with_client(settings, go))
    bad = [r for r in rows if not r["ok"]]
    text = "\n".join(
        f"{'ok  ' if r['ok'] else 'FAIL'}  {r['workflow_id']}  {r['run_id']}"
        + ("" if r["ok"] else f"\n      {r['error']}")
        for r in rows
    )
    summary = f"{len(rows) - len(bad)} of {len(rows)} histories replay on this code"
    _emit(settings, {"checked": len(rows), "failed": len(bad), "runs": rows}, f"{text}\n{summary}")
    if bad:
        sys.exit(1)


@workflow.command("queues", context_settings=CONTEXT)
@click.argument("task_queue")
@click.pass_obj
def workflow_queues(settings: Settings, task_queue: str) -> None:
    """Depth of TASK_QUEUE: tasks waiting for a worker and in flight, per kind."""

    async def go(client: Client) -> dict[str, int]:
        return await client.queue_depths(task_queue)

    depths = _run(_with_client(settings, go))
    _emit(
        settings, depths, "\n".join(f"{k:<20} {v}" for k, v in depths.items()) or "(no consumers)"
    )


main.add_command(ui)

hooks.run = lambda settings, fn: _run(_with_client(settings, fn))
hooks.emit = _emit
main.add_command(schedule)

if __name__ == "__main__":  # pragma: no cover
    main()
