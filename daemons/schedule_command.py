"""``df schedule create|describe|list|update|pause|unpause|trigger|backfill|delete``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import click

from daemons.common import fail
from durablefuture.client import Client
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.schedule_spec import Interval, ScheduleSpec
from durablefuture.core.schedules import Overlap, Schedule, SchedulePolicy, ScheduleStartWorkflow
from durablefuture.schedules import ScheduleDescription

T = TypeVar("T")
CONTEXT = {"help_option_names": ["-h", "--help"]}
OVERLAPS = [o.name for o in Overlap]


class CliSettings(Protocol):
    as_json: bool


Runner = Callable[[Any, Callable[[Client], Awaitable[Any]]], Any]
Emitter = Callable[[Any, Any, str | None], None]


class _Hooks:
    run: Runner
    emit: Emitter


hooks = _Hooks()


def _duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        fail(f"{text!r} is not a duration; use e.g. 30s, 15m, 2h or 1d")


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{text!r} is not an ISO 8601 time; use e.g. 2024-05-01T02:00:00Z")
    if value.tzinfo is None:
        fail(f"{text!r} has no time zone; add Z or an offset such as +02:00")
    return value


def _interval(text: str) -> Interval:
    every, _, offset = text.partition("+")
    return Interval(every=_duration(every), offset=_duration(offset) if offset else timedelta(0))


def _overlap(name: str | None) -> Overlap | None:
    return None if name is None else Overlap[name.upper()]


def _text(d: ScheduleDescription) -> str:
    s = d.schedule
    lines = [
        f"schedule    {d.schedule_id}" + ("  (paused)" if d.paused else ""),
        f"action      start {s.action.workflow_type} on {s.action.task_queue} as "
        f"{s.action.id_prefix or d.schedule_id}-<time>",
        f"spec        cron={list(s.spec.cron)} intervals="
        f"{[str(i.every) + (f'+{i.offset}' if i.offset else '') for i in s.spec.intervals]} "
        f"tz={s.spec.timezone}" + (f" jitter={s.spec.jitter}" if s.spec.jitter else ""),
        f"policy      overlap={s.policy.overlap.name} catchup={s.policy.catchup_window} "
        f"pause_on_failure={s.policy.pause_on_failure}",
        f"counts      taken={d.actions_taken} skipped={d.actions_skipped} "
        f"missed={d.actions_missed}",
    ]
    if s.note:
        lines.append(f"note        {s.note}")
    lines += [f"next        {t.isoformat()}" for t in d.next_action_times]
    lines += [
        f"running     {a.workflow_id} {a.run_id or '-'} {a.status}" for a in d.running_actions
    ]
    lines += [f"buffered    {t.isoformat()}" for t in d.buffered]
    lines += [f"recent      {a.workflow_id} {a.run_id} {a.status}" for a in d.recent_actions[-10:]]
    return "\n".join(lines)


def _json_flag(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


def _settings(settings: Any, as_json: bool) -> Any:
    if as_json:
        settings.as_json = True
    return settings


@click.group(context_settings=CONTEXT)
def schedule() -> None:
    """Create and manage schedules (cron and interval workflows)."""


@schedule.command("create", context_settings=CONTEXT)
@click.argument("schedule_id")
@click.option("--workflow", required=True, help="Workflow type (its registered name).")
@click.option("--input", "input_json", default=None, help="JSON array of arguments.")
@click.option("--task-queue", default="default", show_default=True)
@click.option("--id-prefix", default=None, help="Workflow ids are <prefix>-<scheduled time>.")
@click.option("--cron", multiple=True, help="Five-field cron or @hourly-style alias (repeatable).")
@click.option("--every", multiple=True, help="Interval such as 1h or 1h+15m (every+offset).")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--jitter", default=None, help="Random delay up to this (e.g. 30s).")
@click.option("--start-at", default=None, help="ISO time before which nothing fires.")
@click.option("--end-at", default=None, help="ISO time after which nothing fires.")
@click.option("--overlap", type=click.Choice(OVERLAPS, case_sensitive=False), default="SKIP")
@click.option("--catchup-window", default=None, help="e.g. 10m (default one year).")
@click.option("--pause-on-failure", is_flag=True)
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--note", default="")
@_json_flag
@click.pass_obj
def schedule_create(settings: Any, /, schedule_id: str, **o: Any) -> None:
    """Create schedule SCHEDULE_ID."""
    sched = _build(o)

    async def go(client: Client) -> ScheduleDescription:
        handle = await client.create_schedule(schedule_id, sched)
        return await handle.describe(5)

    s = _settings(settings, o["as_json"])
    d = hooks.run(s, go)
    hooks.emit(s, d, _text(d))


def _build(o: dict[str, Any]) -> Schedule:
    from daemons.df_cli import _parse_input

    try:
        policy: dict[str, Any] = {"overlap": Overlap[o["overlap"].upper()]}
        if o["catchup_window"]:
            policy["catchup_window"] = _duration(o["catchup_window"])
        policy["pause_on_failure"] = o["pause_on_failure"]
        return Schedule(
            action=ScheduleStartWorkflow(
                o["workflow"],
                *_parse_input(o["input_json"]),
                id_prefix=o["id_prefix"],
                task_queue=o["task_queue"],
            ),
            spec=ScheduleSpec(
                cron=tuple(o["cron"]),
                intervals=tuple(_interval(e) for e in o["every"]),
                timezone=o["timezone"],
                jitter=_duration(o["jitter"]) if o["jitter"] else timedelta(0),
                start_at=_time(o["start_at"]) if o["start_at"] else None,
                end_at=_time(o["end_at"]) if o["end_at"] else None,
            ),
            policy=SchedulePolicy(**policy),
            paused=o["paused"],
            note=o["note"],
        )
    except InvalidArgumentError as exc:
        fail(str(exc))


@schedule.command("update", context_settings=CONTEXT)
@click.argument("schedule_id")
@click.option("--workflow", required=True, help="Workflow type (its registered name).")
@click.option("--input", "input_json", default=None, help="JSON array of arguments.")
@click.option("--task-queue", default="default", show_default=True)
@click.option("--id-prefix", default=None)
@click.option("--cron", multiple=True)
@click.option("--every", multiple=True)
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--jitter", default=None)
@click.option("--start-at", default=None)
@click.option("--end-at", default=None)
@click.option("--overlap", type=click.Choice(OVERLAPS, case_sensitive=False), default="SKIP")
@click.option("--catchup-window", default=None)
@click.option("--pause-on-failure", is_flag=True)
@click.option("--paused", is_flag=True)
@click.option("--note", default="")
@_json_flag
@click.pass_obj
def schedule_update(settings: Any, /, schedule_id: str, **o: Any) -> None:
    """Replace the definition of SCHEDULE_ID (same options as create)."""
    sched = _build(o)

    async def go(client: Client) -> ScheduleDescription:
        handle = client.get_schedule_handle(schedule_id)
        await handle.update(sched)
        return await handle.describe(5)

    s = _settings(settings, o["as_json"])
    d = hooks.run(s, go)
    hooks.emit(s, d, _text(d))


@schedule.command("describe", context_settings=CONTEXT)
@click.argument("schedule_id")
@click.option("--next", "count", default=10, show_default=True, help="Next action times shown.")
@_json_flag
@click.pass_obj
def schedule_describe(settings: Any, schedule_id: str, count: int, as_json: bool) -> None:
    """Definition, next action times, running and recent actions of SCHEDULE_ID."""

    async def go(client: Client) -> ScheduleDescription:
        return await client.get_schedule_handle(schedule_id).describe(count)

    s = _settings(settings, as_json)
    d = hooks.run(s, go)
    hooks.emit(s, d, _text(d))


@schedule.command("list", context_settings=CONTEXT)
@_json_flag
@click.pass_obj
def schedule_list(settings: Any, as_json: bool) -> None:
    """Every schedule of the namespace."""

    async def go(client: Client) -> list[ScheduleDescription]:
        return await client.list_schedules()

    s = _settings(settings, as_json)
    found = hooks.run(s, go)
    rows = [
        f"{d.schedule_id:<30} {'paused' if d.paused else 'active':<7} "
        f"{d.schedule.action.workflow_type:<24} next="
        f"{d.next_action_times[0].isoformat() if d.next_action_times else '-'}"
        for d in found
    ]
    hooks.emit(s, found, "\n".join(rows) or "(no schedules)")


def _simple(name: str, doc: str, call: Callable[..., Awaitable[None]], *opts: Any) -> None:
    @click.argument("schedule_id")
    @_json_flag
    @click.pass_obj
    def command(settings: Any, /, schedule_id: str, as_json: bool, **kw: Any) -> None:
        async def go(client: Client) -> dict[str, str]:
            await call(client.get_schedule_handle(schedule_id), **kw)
            return {"schedule_id": schedule_id, "done": name}

        s = _settings(settings, as_json)
        hooks.emit(s, hooks.run(s, go), f"{name}: {schedule_id}")

    command.__doc__ = doc
    for opt in opts:
        command = opt(command)
    schedule.command(name, context_settings=CONTEXT)(command)


_simple(
    "pause",
    "Pause SCHEDULE_ID (no actions until unpaused; none are caught up).",
    lambda h, note: h.pause(note),
    click.option("--note", default=""),
)
_simple(
    "unpause",
    "Resume SCHEDULE_ID.",
    lambda h, note: h.unpause(note),
    click.option("--note", default=""),
)
_simple(
    "trigger",
    "Take one action of SCHEDULE_ID now.",
    lambda h, overlap: h.trigger(_overlap(overlap)),
    click.option("--overlap", type=click.Choice(OVERLAPS, case_sensitive=False), default=None),
)
_simple(
    "backfill",
    "Take the actions SCHEDULE_ID's spec has between --start and --end, now.",
    lambda h, start, end, overlap: h.backfill(_time(start), _time(end), _overlap(overlap)),
    click.option("--start", required=True, help="ISO time (inclusive)."),
    click.option("--end", required=True, help="ISO time (inclusive)."),
    click.option("--overlap", type=click.Choice(OVERLAPS, case_sensitive=False), default=None),
)
_simple("delete", "Delete SCHEDULE_ID (running actions go on).", lambda h: h.delete())


def why_schedule(settings: Any, schedule_id: str, at: str | None) -> None:
    """``df why --schedule ID [--at TIME]`` and ``df schedule why``: print the reasons."""
    from durablefuture.diagnose_schedules import (
        ScheduleDiagnosis,
        explain_schedule,
        render_schedule,
    )

    when = _time(at) if at else None

    async def go(client: Client) -> ScheduleDiagnosis:
        return await explain_schedule(client, schedule_id, when)

    d = hooks.run(settings, go)
    hooks.emit(settings, d, render_schedule(d))


@schedule.command("why", context_settings=CONTEXT)
@click.argument("schedule_id")
@click.option("--at", default=None, help="A scheduled time to explain (ISO 8601, e.g. ...Z).")
@_json_flag
@click.pass_obj
def schedule_why(settings: Any, schedule_id: str, at: str | None, as_json: bool) -> None:
    """Explain why SCHEDULE_ID did not fire (paused, outside start/end, skipped by overlap,
    missed by the catch-up window, no df-server), or what happened at --at."""
    why_schedule(_settings(settings, as_json), schedule_id, at)
