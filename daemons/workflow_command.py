"""``df workflow ...``: start, inspect and act on the workflows of a namespace."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import click

from daemons.cli_base import CONTEXT, Settings, T, _emit, _parse_input, _run, _with_client
from daemons.common import fail
from durablefuture.client import Client, WorkflowDescription
from durablefuture.codec import text as json_text
from durablefuture.codec.envelope import show_envelopes
from durablefuture.codec.wire import default_codec
from durablefuture.core.errors import DurableFutureError, WorkflowExecutionError
from durablefuture.core.liveness import unserved_workflow

# ---------------------------------------------------------------------------- df workflow


@click.group(context_settings=CONTEXT)
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
    for name, value in sorted(d.search_attributes.items()):
        shown = value.isoformat() if isinstance(value, datetime) else value
        lines.append(f"attribute  {name} = {shown!r}")
    for name, memo in sorted(d.memo.items()):
        lines.append(f"memo       {name} = {memo!r}")
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
@click.option("--run-id", default=None, help="This run (default: the latest).")
@click.option(
    "--archive",
    default=None,
    envvar="DF_ARCHIVE",
    metavar="dir:PATH|objstore",
    help="Read the archived history (df-server --archive) once the stream no longer has it.",
)
@click.pass_obj
def workflow_history(
    settings: Settings, workflow_id: str, run_id: str | None, archive: str | None
) -> None:
    """The events of the latest run (a table, or raw JSON with --json)."""

    async def go(client: Client) -> list[Any]:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        return await handle.fetch_history(archive=archive)

    events = _run(_with_client(settings, go))
    codec = default_codec()
    # payloads the codec (if any) did not decode show as "encrypted (key k1)"
    raw = show_envelopes([codec.encode_event(e) for e in events])
    if settings.as_json:
        click.echo(json_text.pretty(raw))
        return
    for e, r in zip(events, raw, strict=True):
        ts = datetime.fromtimestamp(e.at).strftime("%H:%M:%S.%f")[:-3]
        detail = {k: v for k, v in r.items() if k not in ("t", "event_id", "at")}
        click.echo(f"{e.event_id:>5}  {ts}  {type(e).__name__:<24} {json_text.compact(detail)}")


@workflow.command("list", context_settings=CONTEXT)
@click.option(
    "--query",
    "-q",
    default=None,
    help="Visibility query, e.g. \"WorkflowType = 'order' AND ExecutionStatus = 'Failed'\" "
    "(answered by the df-servers' index, one page at a time).",
)
@click.option("--page-size", default=None, type=int, help="Runs per page (with --query).")
@click.option("--next-page-token", default=None, help="Token printed under the previous page.")
@click.option("--status", default=None, help="running, completed, failed, ...")
@click.option("--type", "workflow_type", default=None)
@click.option("--since", default=None, help="ISO time: runs started at or after it.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def workflow_list(
    settings: Settings,
    query: str | None,
    page_size: int | None,
    next_page_token: str | None,
    status: str | None,
    workflow_type: str | None,
    since: str | None,
    limit: int,
) -> None:
    """Runs of the namespace, newest first (or in the query's ORDER BY)."""
    since_dt = None
    if since:
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since {since!r} is not an ISO date/time (e.g. 2026-11-25T10:00:00+00:00)")
    paged = query is not None or page_size is not None or next_page_token is not None

    async def go(client: Client) -> list[WorkflowDescription]:
        return await client.list_workflows(
            query,
            page_size=page_size or (min(limit, 1000) if paged else None),
            next_page_token=next_page_token,
            status=status,
            workflow_type=workflow_type,
            since=since_dt,
            limit=limit,
        )

    rows = _run(_with_client(settings, go))
    token = getattr(rows, "next_page_token", None)
    text = "\n".join(
        f"{d.start_time.isoformat(timespec='seconds')}  {d.status:<16} {d.workflow_type:<24} "
        f"{d.workflow_id}  {d.run_id}"
        for d in rows
    )
    if token:
        text += f"\nmore: --next-page-token {token}"
    value: object = {"workflows": list(rows), "next_page_token": token} if paged else rows
    _emit(settings, value, text or "(no workflows)")


@workflow.command("count", context_settings=CONTEXT)
@click.option("--query", "-q", default=None, help="Visibility query (all runs without one).")
@click.pass_obj
def workflow_count(settings: Settings, query: str | None) -> None:
    """How many runs match the query (answered by the df-servers' index)."""

    async def go(client: Client) -> int:
        return await client.count_workflows(query)

    n = _run(_with_client(settings, go))
    _emit(settings, {"count": n}, str(n))


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
