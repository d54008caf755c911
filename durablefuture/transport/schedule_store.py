"""Storing schedule state records and arming schedule timers in the namespace's stream.

A schedule's state is one message on ``df.<ns>.sch.<schedule>``. Every write carries
``Nats-Expected-Last-Subject-Sequence`` (the sequence the writer read; 0 creates) and
``Nats-Rollup: sub`` (older records are dropped), so two writers can never both advance a
schedule and the subject never grows. Its timer is one ``@at`` JetStream message schedule on
``df.<ns>.sct.<schedule>``; publishing there again replaces it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import nats.js.errors
from nats.aio.client import Client as NATS

from durablefuture.core.errors import TransportError
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    MSG_ID,
    SCHEDULE,
    SCHEDULE_TARGET,
    Publisher,
)
from durablefuture.transport.subjects import Layout, decode_token
from durablefuture.transport.translate import translated

__all__ = ["ScheduleStore", "at_header"]

ROLLUP = "Nats-Rollup"
SCHEDULE_TTL = "Nats-Schedule-TTL"
TIMER_TTL = "24h"
"""Fired ticks are garbage-collected after this (a lost tick is re-created at server start)."""


def at_header(ts: float) -> str:
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"@at {stamp}Z"


class ScheduleStore:
    def __init__(self, nc: NATS, pub: Publisher, layout: Layout) -> None:
        self.nc = nc
        self.pub = pub
        self.layout = layout

    async def load(self, schedule_id: str) -> tuple[bytes, int] | None:
        """The newest state record and its stream sequence (None: no such schedule)."""
        subject = self.layout.schedule_state(schedule_id)
        api = f"$JS.API.DIRECT.GET.{self.layout.stream}"
        try:
            m = await self.nc.request(
                api, json.dumps({"last_by_subj": subject}).encode(), timeout=self.pub.timeout
            )
        except Exception as exc:
            raise TransportError(f"reading schedule {schedule_id!r} failed: {exc}") from exc
        headers = m.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise TransportError(
                f"reading schedule {schedule_id!r}: {status} {headers.get('Description', '')}"
            )
        if not m.data:  # a purge marker or an empty record: deleted
            return None
        return m.data, int(headers.get("Nats-Sequence", "0"))

    async def save(self, schedule_id: str, data: bytes, expected_seq: int) -> int:
        """Write a new state record; raises WrongLastSequence if another writer came first."""
        headers = {EXPECTED_LAST_SUBJECT_SEQ: str(expected_seq), ROLLUP: "sub"}
        ack = await self.pub.publish(self.layout.schedule_state(schedule_id), data, headers)
        return ack.seq

    async def delete(self, schedule_id: str) -> None:
        for subject in (
            self.layout.schedule_state(schedule_id),
            self.layout.schedule_timer(schedule_id),
        ):
            try:
                await self.pub.js.purge_stream(self.layout.stream, subject=subject)
            except nats.js.errors.Error as exc:
                raise TransportError(f"deleting schedule {schedule_id!r}: {exc}") from exc

    async def arm(self, schedule_id: str, at: float, data: bytes) -> None:
        """(Re)arm the schedule's one timer to put ``data`` on the tick input at ``at``."""
        headers = {
            SCHEDULE: at_header(at),
            SCHEDULE_TARGET: self.layout.schedule_input("tick"),
            SCHEDULE_TTL: TIMER_TTL,
        }
        await self.pub.publish(self.layout.schedule_timer(schedule_id), data, headers)

    async def send_input(self, kind: str, data: bytes, msg_id: str = "", **extra: str) -> None:
        headers = dict(extra)
        if msg_id:
            headers[MSG_ID] = msg_id
        await self.pub.publish(self.layout.schedule_input(kind), data, headers)

    async def ids(self) -> list[str]:
        """Every schedule id of the namespace."""
        with translated("listing schedules"):  # also a timeout while NATS fails over
            info = await self.pub.js.stream_info(
                self.layout.stream, subjects_filter=self.layout.schedule_states()
            )
        subjects = info.state.subjects or {}
        prefix = self.layout.schedule_states()[:-1]
        return sorted(decode_token(s[len(prefix) :]) for s, n in subjects.items() if n)
