"""What the UI's JSON API returns, built from the public client API (no web framework here)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import cast

from durablefuture.client import Client, WorkflowDescription, describe_state
from durablefuture.codec.envelope import show_envelopes
from durablefuture.codec.visibility import MAX_PAGE_SIZE
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import (
    InvalidQueryError,
    ServerUnavailableError,
    WorkflowNotFoundError,
)
from durablefuture.core.failure import Failure
from durablefuture.core.query import parse_query, split_order_by
from durablefuture.core.state import RunState
from durablefuture.core.types import JsonValue
from durablefuture.diagnose import explain
from durablefuture.ui.timeline import build_timeline

__all__ = ["describe_json", "list_payload", "run_payload", "summary_json"]

STATUSES = (
    RunStatus.RUNNING,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.TERMINATED,
    RunStatus.TIMED_OUT,
    RunStatus.CONTINUED_AS_NEW,
    RunStatus.CORRUPT,
)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _failure(value: Failure | None) -> JsonValue:
    if value is None:
        return None
    out: dict[str, JsonValue] = default_codec().converter.unstructure(value)
    out["describe"] = value.describe()
    return out


def _attr_json(v: object) -> JsonValue:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, tuple):
        return [str(x) for x in v]
    return cast(JsonValue, v)


def summary_json(d: WorkflowDescription) -> dict[str, JsonValue]:
    """One row of the runs list."""
    return {
        "workflow_id": d.workflow_id,
        "run_id": d.run_id,
        "workflow_type": d.workflow_type,
        "task_queue": d.task_queue,
        "status": d.status,
        "start_time": _ts(d.start_time),
        "close_time": _ts(d.close_time),
        "history_length": d.history_length,
    }


def describe_json(d: WorkflowDescription) -> dict[str, JsonValue]:
    """Everything ``handle.describe()`` says, with times as seconds since the epoch."""
    out = summary_json(d)
    out.update(
        result=cast(JsonValue, d.result),  # the stored payload, already JSON
        failure=_failure(d.failure),
        cancel_requested=d.cancel_requested,
        new_run_id=d.new_run_id,
        last_workflow_task_failure=_failure(d.last_workflow_task_failure),
        pending_activities=[
            {
                "activity_id": a.activity_id,
                "name": a.name,
                "attempt": a.attempt,
                "task_queue": a.task_queue,
                "scheduled_time": _ts(a.scheduled_time),
                "started": a.started,
                "last_failure": _failure(a.last_failure),
                "next_retry_time": _ts(a.next_retry_time),
                "worker": a.worker,
            }
            for a in d.pending_activities
        ],
        pending_timers=[{"seq": seq, "fire_at": _ts(at)} for seq, at in d.pending_timers],
        search_attributes={k: _attr_json(v) for k, v in d.search_attributes.items()},
        memo=cast(JsonValue, d.memo),
        signal_waits=[
            {
                "wait_id": w.wait_id,
                "name": w.name,
                "since": _ts(w.since),
                "deadline": _ts(w.deadline),
            }
            for w in d.signal_waits
        ],
    )
    return out


def _matches(d: WorkflowDescription, q: str) -> bool:
    q = q.casefold()
    return q in d.workflow_id.casefold() or q in d.run_id.casefold()


async def list_payload(
    client: Client,
    *,
    status: str | None = None,
    workflow_type: str | None = None,
    q: str | None = None,
    limit: int = 200,
    page_token: str | None = None,
) -> dict[str, JsonValue]:
    """Runs newest first, filtered; plus counts per status and the known types for the filters.

    ``q`` is the filter box: a visibility query (``WorkflowType = 'order' AND Region = 'eu'``)
    or nothing, answered by the df-servers' index one page at a time (``limit`` runs, then
    ``next_page_token`` for the next page); a single word that is no query searches ids
    instead (a substring of the workflow or run id, over the status index read once). The
    counts are over the runs that match the type and the filter box, so the status chips say
    what clicking them shows. With an empty box and no df-server to answer, the status index
    is read instead (one page, with a ``note`` that says so).
    """
    query = _as_query(q)
    note: str | None = None
    if query is not None or not q:
        try:
            return await _queried(client, query or "", status, workflow_type, limit, page_token)
        except ServerUnavailableError as exc:
            if query or page_token:  # a query or a next page needs the index
                raise
            note = f"{exc} — listed from the status entries instead (every run read; no paging)"
    everything = await client.list_workflows(limit=1_000_000, count_open=False)
    types = sorted({d.workflow_type for d in everything})
    scoped = [
        d
        for d in everything
        if (not workflow_type or d.workflow_type == workflow_type) and (not q or _matches(d, q))
    ]
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for d in scoped:
        counts[d.status] = counts.get(d.status, 0) + 1
    rows = [d for d in scoped if not status or d.status == status]
    shown = await client.count_events(rows[:limit])  # the index counts open runs' events at start
    return {
        "workflows": [summary_json(d) for d in shown],
        "total": len(rows),
        "counts": dict(counts),
        "types": list(types),
        "namespace": client.namespace,
        "next_page_token": None,
        **({"note": note} if note else {}),
    }


_WORD = re.compile(r"[^\s'\"()=<>!,]+")


def _as_query(q: str | None) -> str | None:
    """The filter box as a query, or None for an id search (one word that is no query).

    Raises:
        InvalidQueryError: it is neither (the message names the position).
    """
    if not q:
        return None
    try:
        parse_query(q)
    except InvalidQueryError:
        if _WORD.fullmatch(q):
            return None
        raise
    return q


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


async def _queried(
    client: Client,
    query: str,
    status: str | None,
    workflow_type: str | None,
    limit: int,
    page_token: str | None,
) -> dict[str, JsonValue]:
    where, order = split_order_by(query)
    scope = [f"({where})"] if where.strip() else []
    if workflow_type:
        scope.append(f"WorkflowType = {_quoted(workflow_type)}")

    def text(*more: str) -> str:
        return " AND ".join([*scope, *more]) + (f" {order}" if order else "")

    counts: dict[str, int] = {}
    for s in STATUSES:
        counts[s] = await client.count_workflows(text(f"ExecutionStatus = {_quoted(s)}"))
    chosen = [f"ExecutionStatus = {_quoted(status)}"] if status else []
    page = await client.list_workflows(
        text(*chosen), page_size=max(1, min(limit, MAX_PAGE_SIZE)), next_page_token=page_token
    )
    shown = await client.count_events(page)
    types = sorted({d.workflow_type for d in page} | ({workflow_type} if workflow_type else set()))
    return {
        "workflows": [summary_json(d) for d in shown],
        "total": counts.get(status, 0) if status else sum(counts.values()),
        "counts": dict(counts),
        "types": list(types),
        "namespace": client.namespace,
        "query": query,
        "next_page_token": getattr(page, "next_page_token", None),
    }


async def run_payload(
    client: Client, workflow_id: str, run_id: str | None = None
) -> dict[str, JsonValue]:
    """One run: describe + inputs + history + timeline + the "why" reasons.

    Raises ``WorkflowNotFoundError`` if the id (or run) has no history.
    """
    run = run_id or await client.latest_run_id(workflow_id)
    # one read for both, so the header and the timeline always show the same moment
    # (what handle.fetch_history() and handle.describe() each do with a read of their own)
    batches = await client.history.read(workflow_id, run)
    if not batches:
        raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run}")
    history = [e for b in batches for e in b.events]
    description = describe_state(RunState.from_history([(b.input_id, b.events) for b in batches]))
    diagnosis = await explain(client, workflow_id, run)
    codec = default_codec()
    started = history[0]
    inputs: JsonValue = list(started.args) if isinstance(started, ev.WorkflowStarted) else None
    out: dict[str, JsonValue] = {
        "workflow": describe_json(description),
        "input": inputs,
        "history": [codec.encode_event(e) for e in history],
        "timeline": build_timeline(history, time.time()),
        "why": list(diagnosis.reasons),
        "namespace": client.namespace,
    }
    shown: dict[str, JsonValue] = show_envelopes(out)  # payloads the UI has no codec for
    return shown
