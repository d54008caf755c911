"""``df workflow delete`` and ``df namespace describe``: deleting closed runs, and what a
namespace keeps."""

from __future__ import annotations

import click

from daemons.cli_base import CONTEXT, Settings, _emit, _run, _with_client
from daemons.workflow_command import workflow
from durablefuture.client import Client
from durablefuture.client.namespace import NamespaceDescription


@workflow.command("delete", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--run-id", default=None, help="This run (default: the latest).")
@click.pass_obj
def workflow_delete(settings: Settings, workflow_id: str, run_id: str | None) -> None:
    """Delete a closed run now: history, status entry and payloads (archived first if
    df-server runs with --archive). An open run is refused; needs the admin role."""

    async def go(client: Client) -> str:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        run = handle.run_id or await client.latest_run_id(workflow_id)
        await client.get_workflow_handle(workflow_id, run_id=run).delete()
        return run

    run = _run(_with_client(settings, go))
    _emit(settings, {"deleted": workflow_id, "run_id": run}, f"deleted {workflow_id} run {run}")


@click.group(context_settings=CONTEXT)
def namespace() -> None:
    """What a namespace keeps: retention, history limits, runs and storage."""


@namespace.command("describe", context_settings=CONTEXT)
@click.pass_obj
def namespace_describe(settings: Settings) -> None:
    """Retention, history limits, run counts by status and the bytes used."""

    async def go(client: Client) -> NamespaceDescription:
        return await client.describe_namespace()

    d = _run(_with_client(settings, go))
    value = {
        "namespace": d.namespace,
        "retention_seconds": d.settings.retention,
        "history_warn_events": d.settings.history_warn_events,
        "history_warn_bytes": d.settings.history_warn_bytes,
        "history_limit_events": d.settings.history_limit_events,
        "history_limit_bytes": d.settings.history_limit_bytes,
        "runs": d.runs,
        "runs_by_status": d.runs_by_status,
        "bytes_used": d.bytes_used,
        "stream_bytes": d.stream_bytes,
        "stream_messages": d.stream_messages,
        "messages_by_kind": d.messages_by_kind,
        "status_bytes": d.status_bytes,
        "activity_bytes": d.activity_bytes,
        "payload_bytes": d.payload_bytes,
    }
    _emit(settings, value, d.text())
