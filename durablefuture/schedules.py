"""Schedules, client side: create, describe, update, pause, trigger, backfill, delete, list.

``await client.create_schedule("nightly", df.Schedule(action=df.ScheduleStartWorkflow(report,
"eu", id_prefix="report", task_queue="reports"), spec=df.ScheduleSpec(cron=["0 2 * * *"],
timezone="Europe/Berlin")))`` returns a :class:`ScheduleHandle`. Requests are stored in the
namespace's stream and applied by a df-server (see ``server/schedules.py``); reads go straight
to the schedule's state record.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from attrs import evolve, field, frozen

from durablefuture.codec.schedules import ScheduleCodec, ScheduleInput
from durablefuture.core.errors import (
    InvalidArgumentError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
)
from durablefuture.core.reply_errors import error_for_reply
from durablefuture.core.schedule_spec import Interval, ScheduleSpec
from durablefuture.core.schedules import (
    ActionRecord,
    JournalEntry,
    Overlap,
    Schedule,
    SchedulePolicy,
    ScheduleStartWorkflow,
    ScheduleState,
    upcoming,
)
from durablefuture.core.types import check_workflow_id
from durablefuture.transport.schedule_store import ScheduleStore

if TYPE_CHECKING:
    from durablefuture.client import Client

__all__ = [
    "Interval",
    "Overlap",
    "Schedule",
    "ScheduleAction",
    "ScheduleAlreadyExistsError",
    "ScheduleDescription",
    "ScheduleHandle",
    "ScheduleNotFoundError",
    "SchedulePolicy",
    "ScheduleSpec",
    "ScheduleStartWorkflow",
]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@frozen
class ScheduleAction:
    """One action a schedule took: its scheduled time, workflow id, run and outcome."""

    scheduled_time: datetime
    taken_at: datetime
    workflow_id: str
    run_id: str
    status: str
    """``starting``, ``running`` or how the run closed (completed, failed, ...); ``removed``:
    its run was removed before the schedule saw it close; ``lost``: never seen running, and no
    run long after its start."""
    source: str

    @classmethod
    def of(cls, r: ActionRecord) -> ScheduleAction:
        return cls(_dt(r.nominal), _dt(r.taken_at), r.workflow_id, r.run_id, r.status, r.source)


@frozen
class ScheduleDescription:
    """What ``handle.describe()`` and ``client.list_schedules()`` return."""

    schedule_id: str
    schedule: Schedule
    created_at: datetime
    updated_at: datetime
    next_action_times: tuple[datetime, ...]
    running_actions: tuple[ScheduleAction, ...]
    recent_actions: tuple[ScheduleAction, ...]
    buffered: tuple[datetime, ...]
    actions_taken: int
    actions_skipped: int
    actions_missed: int
    journal: tuple[JournalEntry, ...] = field(default=())

    @property
    def paused(self) -> bool:
        return self.schedule.paused

    @classmethod
    def of(cls, state: ScheduleState, count: int, now: float) -> ScheduleDescription:
        # an action recorded ahead of its time is not taken yet: it is the next action time
        ahead = sum(1 for r in state.running if r.pending(now))
        return cls(
            schedule_id=state.schedule_id,
            schedule=state.schedule,
            created_at=_dt(state.created_at),
            updated_at=_dt(state.updated_at),
            next_action_times=tuple(_dt(f) for _n, f in upcoming(state, count, now)),
            running_actions=tuple(
                ScheduleAction.of(r) for r in state.running if not r.pending(now)
            ),
            recent_actions=tuple(ScheduleAction.of(r) for r in state.recent),
            buffered=tuple(_dt(b.nominal) for b in state.buffered),
            actions_taken=state.actions - ahead,
            actions_skipped=state.skipped,
            actions_missed=state.missed,
            journal=state.journal,
        )


class Schedules:
    """The schedule operations of one client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.codec = ScheduleCodec(client.codec)
        self.store = ScheduleStore(client.nc, client.pub, client.layout)

    async def encode(self, schedule: Schedule) -> Schedule:
        """Encode the action's arguments to JSON payloads now, so a bad argument fails here
        (through the payload codec, if any; large ones stored by reference)."""
        action = schedule.action
        args = self.client.codec.payloads.to_payloads(
            action.args, f"schedule action {action.workflow_type!r}"
        )
        args = tuple(await self.client.codec.pack_payloads(list(args)))
        encoded = ScheduleStartWorkflow.of(
            action.workflow_type,
            tuple(args),
            action.id_prefix,
            action.task_queue,
            action.execution_timeout,
        )
        return evolve(schedule, action=encoded)

    async def request(self, message: ScheduleInput) -> None:
        data = self.codec.encode_input(message)
        reply = await self.client._ask(
            self.client.layout.schedule_input("ctl"), data, msg_id=f"ctl:{message.request_id}"
        )
        if reply.ok:
            return
        raise error_for_reply(reply.error_type, reply.message)

    async def state(self, schedule_id: str) -> ScheduleState:
        loaded = await self.store.load(schedule_id)
        if loaded is None:
            raise ScheduleNotFoundError(
                f"no schedule {schedule_id!r} in namespace {self.client.namespace!r}"
            )
        return self.codec.decode_state(loaded[0])

    async def ids(self) -> list[str]:
        return await self.store.ids()


def _request_id() -> str:
    return uuid.uuid4().hex


class ScheduleHandle:
    """A schedule of a namespace (it may not exist any more)."""

    def __init__(self, schedules: Schedules, schedule_id: str) -> None:
        self._s = schedules
        self.id = schedule_id

    def __repr__(self) -> str:
        return f"ScheduleHandle({self.id!r})"

    async def describe(self, next_actions: int = 10) -> ScheduleDescription:
        """The definition, the next ``next_actions`` action times, running and recent actions
        (with run ids and outcomes) and counts of taken, skipped and missed actions."""
        state = await self._s.state(self.id)
        return ScheduleDescription.of(state, next_actions, time.time())

    async def update(self, schedule: Schedule) -> None:
        """Replace the definition (its spec applies from now on; running actions go on)."""
        await self._s.request(
            ScheduleInput(self.id, "update", _request_id(), schedule=await self._s.encode(schedule))
        )

    async def pause(self, note: str = "") -> None:
        await self._s.request(ScheduleInput(self.id, "pause", _request_id(), note=note))

    async def unpause(self, note: str = "") -> None:
        """Resume; actions due while paused are not caught up."""
        await self._s.request(ScheduleInput(self.id, "unpause", _request_id(), note=note))

    async def trigger(self, overlap: Overlap | None = None) -> None:
        """Take one action now (its scheduled time is now), even while paused."""
        await self._s.request(ScheduleInput(self.id, "trigger", _request_id(), overlap=overlap))

    async def backfill(
        self, start: datetime, end: datetime, overlap: Overlap | None = None
    ) -> None:
        """Take the actions the spec has between ``start`` and ``end`` (inclusive) now."""
        for value in (start, end):
            if value.tzinfo is None:
                raise InvalidArgumentError("backfill start and end need a time zone")
        if end < start:
            raise InvalidArgumentError("backfill end is before its start")
        await self._s.request(
            ScheduleInput(
                self.id,
                "backfill",
                _request_id(),
                overlap=overlap,
                start=start.timestamp(),
                end=end.timestamp(),
            )
        )

    async def delete(self) -> None:
        """Delete the schedule (running actions go on)."""
        await self._s.request(ScheduleInput(self.id, "delete", _request_id()))


async def create(
    schedules: Schedules, schedule_id: str, schedule: Schedule, request_id: str | None
) -> ScheduleHandle:
    check_workflow_id(schedule_id, "schedule id")
    message = ScheduleInput(
        schedule_id,
        "create",
        request_id or _request_id(),
        schedule=await schedules.encode(schedule),
    )
    await schedules.request(message)
    return ScheduleHandle(schedules, schedule_id)


async def describe_all(schedules: Schedules, next_actions: int = 3) -> list[ScheduleDescription]:
    ids = await schedules.ids()
    now = time.time()

    async def one(sid: str) -> ScheduleDescription | None:
        try:
            return ScheduleDescription.of(await schedules.state(sid), next_actions, now)
        except ScheduleNotFoundError:
            return None

    found = await asyncio.gather(*(one(sid) for sid in ids))
    return [d for d in found if d is not None]
