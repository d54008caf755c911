"""The UI's schedules: the list, one schedule (next runs, running and recent actions, journal,
why it does not fire), and the pause / unpause / trigger actions.

Routes (the schedule id is always the last part of the path, after a fixed prefix, as for runs):

* ``GET /api/schedules``: every schedule of the namespace, with its next action times.
* ``GET /api/schedules/{id}``: one schedule.
* ``POST /api/schedule-pause/{id}``, ``/api/schedule-unpause/{id}`` (``{"note": ...}``) and
  ``/api/schedule-trigger/{id}`` (``{}``): JSON bodies only; the same Origin check and login as
  every other action (``security.Guard`` wraps the whole app).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from durablefuture.client import Client
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.types import JsonValue
from durablefuture.diagnose_schedules import explain_schedule
from durablefuture.schedules import ScheduleAction, ScheduleDescription

__all__ = ["schedule_payload", "schedule_routes", "schedules_payload"]

NEXT_ACTIONS = 10
LIST_NEXT = 3
Act = Callable[[Request, Callable[[dict[str, object]], Awaitable[str]]], Awaitable[Response]]
Answer = Callable[[Callable[[], Awaitable[JsonValue]]], Awaitable[Response]]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _action(a: ScheduleAction) -> dict[str, JsonValue]:
    return {
        "workflow_id": a.workflow_id,
        "run_id": a.run_id,
        "status": a.status,
        "scheduled_time": a.scheduled_time.timestamp(),
        "taken_at": a.taken_at.timestamp(),
        "source": a.source,
    }


def _spec(d: ScheduleDescription) -> dict[str, JsonValue]:
    spec = d.schedule.spec
    intervals: list[JsonValue] = [
        {"every_s": i.every.total_seconds(), "offset_s": i.offset.total_seconds()}
        for i in spec.intervals
    ]
    return {
        "cron": list(spec.cron),
        "intervals": intervals,
        "timezone": spec.timezone,
        "jitter_s": spec.jitter.total_seconds(),
        "start_at": _ts(spec.start_at),
        "end_at": _ts(spec.end_at),
    }


def summary_json(d: ScheduleDescription) -> dict[str, JsonValue]:
    """One row of the schedules list."""
    s = d.schedule
    last = d.recent_actions[-1] if d.recent_actions else None
    return {
        "schedule_id": d.schedule_id,
        "paused": d.paused,
        "note": s.note,
        "workflow_type": s.action.workflow_type,
        "task_queue": s.action.task_queue,
        "spec": _spec(d),
        "overlap": s.policy.overlap.name,
        "next_action_times": [t.timestamp() for t in d.next_action_times],
        "running": len(d.running_actions),
        "last_action": _action(last) if last is not None else None,
        "actions_taken": d.actions_taken,
        "actions_skipped": d.actions_skipped,
        "actions_missed": d.actions_missed,
    }


async def schedules_payload(client: Client) -> dict[str, JsonValue]:
    """Every schedule of the namespace, by id."""
    found = sorted(await client.list_schedules(LIST_NEXT), key=lambda d: d.schedule_id)
    return {"schedules": [summary_json(d) for d in found], "namespace": client.namespace}


async def schedule_payload(client: Client, schedule_id: str) -> dict[str, JsonValue]:
    """One schedule: definition, next action times, running/buffered/recent actions (newest
    first), its journal (newest first) and the reasons ``df why --schedule`` gives.

    Raises ``ScheduleNotFoundError`` if there is no such schedule.
    """
    handle = client.get_schedule_handle(schedule_id)
    d, why = await asyncio.gather(
        handle.describe(NEXT_ACTIONS), explain_schedule(client, schedule_id)
    )
    s = d.schedule
    out = summary_json(d)
    out.update(
        action={
            "workflow_type": s.action.workflow_type,
            "task_queue": s.action.task_queue,
            "id_prefix": s.action.id_prefix or d.schedule_id,
            "args": cast(list[JsonValue], list(s.action.args)),  # stored as JSON payloads
            "execution_timeout": s.action.execution_timeout,
        },
        policy={
            "overlap": s.policy.overlap.name,
            "catchup_window_s": s.policy.catchup_window.total_seconds(),
            "pause_on_failure": s.policy.pause_on_failure,
        },
        created_at=d.created_at.timestamp(),
        updated_at=d.updated_at.timestamp(),
        running_actions=[_action(a) for a in d.running_actions],
        buffered=[t.timestamp() for t in d.buffered],
        recent_actions=[_action(a) for a in reversed(d.recent_actions)],
        journal=[
            {"at": j.at, "kind": j.kind, "nominal": j.nominal, "detail": j.detail}
            for j in reversed(d.journal)
        ],
        status=why.status,
        why=list(why.reasons),
        namespace=client.namespace,
        checked_at=time.time(),
    )
    return out


def _note(body: dict[str, object]) -> str:
    note = body.get("note", "")
    if not isinstance(note, str):
        raise InvalidArgumentError('"note" must be a string')
    return note


def schedule_routes(client: Client, act: Act, answer: Answer) -> list[BaseRoute]:
    """The schedule API routes; ``act`` runs a JSON action, ``answer`` a read (both map our
    errors to HTTP statuses the way the run routes do)."""
    sid = "{schedule_id:path}"

    async def list_schedules(request: Request) -> Response:
        return await answer(lambda: schedules_payload(client))

    async def one(request: Request) -> Response:
        schedule_id = request.path_params["schedule_id"]
        return await answer(lambda: schedule_payload(client, schedule_id))

    def action(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            schedule_id = request.path_params["schedule_id"]
            handle = client.get_schedule_handle(schedule_id)

            async def go(body: dict[str, object]) -> str:
                if kind == "pause":
                    await handle.pause(_note(body) or "paused from the web UI")
                    return f"paused {schedule_id}"
                if kind == "unpause":
                    await handle.unpause(_note(body))
                    return f"unpaused {schedule_id}"
                await handle.trigger()
                return f"triggered {schedule_id}: one action now"

            return await act(request, go)

        return handler

    return [
        Route("/api/schedules", list_schedules),
        Route("/api/schedules/" + sid, one),
        Route("/api/schedule-pause/" + sid, action("pause"), methods=["POST"]),
        Route("/api/schedule-unpause/" + sid, action("unpause"), methods=["POST"]),
        Route("/api/schedule-trigger/" + sid, action("trigger"), methods=["POST"]),
    ]


async def initial_payload(client: Client, schedule_id: str | None) -> JsonValue:
    """What a schedules page shows first (embedded in its HTML, as for runs)."""
    from durablefuture.schedules import ScheduleNotFoundError

    if schedule_id is None:
        return {"route": "schedules", "data": await schedules_payload(client)}
    out: dict[str, JsonValue] = {"route": "schedule", "schedule_id": schedule_id}
    try:
        out["data"] = await schedule_payload(client, schedule_id)
    except ScheduleNotFoundError as exc:
        out.update(error=str(exc), status=404)
    return out
