"""``df workflow update``: call an update of a running workflow and print its result."""

from __future__ import annotations

from typing import Any

import click

from daemons.cli_base import CONTEXT, Settings, _emit, _parse_input, _run, _with_client
from daemons.workflow_command import workflow
from durablefuture.client import Client


@workflow.command("update", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.argument("name")
@click.option("--input", "input_json", default=None, help="JSON array of update arguments.")
@click.option(
    "--update-id",
    default=None,
    help="Idempotency key: an update id already accepted returns its first result again.",
)
@click.option("--timeout", default=None, type=float, help="Stop waiting after this many seconds.")
@click.pass_obj
def workflow_update(
    settings: Settings,
    workflow_id: str,
    name: str,
    input_json: str | None,
    update_id: str | None,
    timeout: float | None,
) -> None:
    """Call update NAME of WORKFLOW_ID and print what its handler returned (a rejected or
    failed update exits non-zero with the reason)."""
    args = _parse_input(input_json)

    async def go(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id)
        return await handle.update(name, *args, update_id=update_id, timeout=timeout)

    _emit(settings, _run(_with_client(settings, go)))
