"""Runs whose history has left the stream, read back from the archive ``df-server --archive``
wrote before retention deleted them (``df ui --archive dir:PATH|objstore``).

An archived run is shown like any closed run (describe, input, history, timeline), marked
``"archived": true``; it has no live updates, no "why" and no actions (it is closed and gone
from the engine).
"""

from __future__ import annotations

import time

from durablefuture.client import Client, describe_state
from durablefuture.codec.envelope import show_envelopes
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.state import RunState
from durablefuture.core.types import JsonValue
from durablefuture.transport.archive import Archive, open_archive
from durablefuture.ui.timeline import build_timeline
from durablefuture.ui.views import describe_json, summary_json

__all__ = ["UiArchive"]


class UiArchive:
    """The archive of the client's namespace, as the UI reads it."""

    def __init__(self, client: Client, spec: str) -> None:
        """Raises ``InvalidArgumentError`` if ``spec`` is not ``dir:PATH`` or ``objstore``."""
        self.client = client
        self.spec = spec
        self.archive: Archive = open_archive(spec, client.layout, client.pub.js)

    async def events(self, workflow_id: str, run_id: str | None) -> list[ev.Event] | None:
        """The archived run's events (the newest archived run without ``run_id``), or None."""
        found = await self.archive.read(workflow_id, run_id)
        if found is None or found.workflow_id != workflow_id:
            return None
        if run_id is not None and found.run_id != run_id:
            return None
        history = self.client.history
        events = await history.decode_raw(
            found.workflow_id,
            found.run_id,
            found.batches,
            self.archive.objects(history.codec.claims.store if history.codec.claims else None),
        )
        return events or None

    async def run(self, workflow_id: str, run_id: str | None) -> dict[str, JsonValue] | None:
        """The run page's JSON for an archived run (None if the archive has no such run)."""
        history = await self.events(workflow_id, run_id)
        if history is None:
            return None
        workflow = describe_json(describe_state(RunState.from_history(history)))
        workflow["archived"] = True
        started = history[0]
        codec = default_codec()
        out: dict[str, JsonValue] = {
            "workflow": workflow,
            "input": list(started.args) if isinstance(started, ev.WorkflowStarted) else None,
            "history": [codec.encode_event(e) for e in history],
            "timeline": build_timeline(history, time.time()),
            "why": [],
            "namespace": self.client.namespace,
            "archived": True,
            "archive": self.archive.describe(),
        }
        shown: dict[str, JsonValue] = show_envelopes(out)
        return shown

    async def row(self, workflow_id: str) -> dict[str, JsonValue] | None:
        """The runs list's row for the newest archived run of ``workflow_id`` (or None)."""
        history = await self.events(workflow_id, None)
        if history is None:
            return None
        row = summary_json(describe_state(RunState.from_history(history)))
        row["archived"] = True
        return row

    async def add_to(self, listed: dict[str, JsonValue], q: str, filters: dict[str, str]) -> None:
        """Add the archived run whose workflow id is ``q`` to an id search's runs list (when
        no listed run has that id and it passes the type/status ``filters``)."""
        rows = listed.get("workflows")
        counts = listed.get("counts")
        if not isinstance(rows, list) or not isinstance(counts, dict):
            return
        if any(isinstance(r, dict) and r.get("workflow_id") == q for r in rows):
            return
        row = await self.row(q)
        if row is None or filters.get("type", row["workflow_type"]) != row["workflow_type"]:
            return
        status = str(row["status"])
        counts[status] = int(str(counts.get(status, 0))) + 1
        if filters.get("status", status) != status:
            return
        rows.insert(0, row)
        listed["total"] = int(str(listed.get("total", 0))) + 1
