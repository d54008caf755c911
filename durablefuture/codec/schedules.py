"""Wire format of schedules: the state record and the inputs df-server's schedule component
reads (ticks from the schedule's timer, control requests from clients).

Both are JSON objects with ``"v"`` (the schema version), built by the one converter.
"""

from __future__ import annotations

from typing import Any

import orjson
from attrs import field, frozen

from durablefuture.codec.wire import SCHEMA_VERSION, Codec
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.schedules import Overlap, Schedule, ScheduleStartWorkflow, ScheduleState

__all__ = ["KINDS", "ScheduleCodec", "ScheduleInput"]

KINDS = frozenset({"tick", "create", "update", "pause", "unpause", "trigger", "backfill", "delete"})


def _kind(_inst: object, _attr: object, value: str) -> None:
    if value not in KINDS:
        raise InvalidArgumentError(f"unknown schedule input kind {value!r}")


@frozen
class ScheduleInput:
    """A tick (the schedule's timer fired, or something asks it to look again) or a control
    request from a client (``request_id`` makes a redelivered request a no-op)."""

    schedule_id: str
    kind: str = field(validator=_kind)
    request_id: str = ""
    schedule: Schedule | None = None
    note: str = ""
    overlap: Overlap | None = None
    start: float | None = None
    end: float | None = None
    due: float | None = None
    """For a tick from the timer: the time it was armed for (for lateness)."""


class ScheduleCodec:
    def __init__(self, codec: Codec) -> None:
        self.converter = c = codec.converter
        c.register_structure_hook(ScheduleStartWorkflow, self._structure_action)

    @staticmethod
    def _structure_action(obj: Any, _t: object) -> ScheduleStartWorkflow:
        return ScheduleStartWorkflow.of(
            obj["workflow_type"],
            tuple(obj.get("args", ())),
            obj.get("id_prefix"),
            obj.get("task_queue", "default"),
            obj.get("execution_timeout"),
        )

    def _load(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"{what} is not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION:
            raise DecodeError(f"{what} is not a version-{SCHEMA_VERSION} JSON object")
        return obj

    def _structure(self, obj: object, cls: Any, what: str) -> Any:
        try:
            return self.converter.structure(obj, cls)
        except Exception as exc:
            raise DecodeError(f"{what} does not match the schema: {exc}") from None

    def encode_state(self, state: ScheduleState) -> bytes:
        return orjson.dumps({"v": SCHEMA_VERSION, "state": self.converter.unstructure(state)})

    def decode_state(self, data: bytes) -> ScheduleState:
        obj = self._load(data, "schedule state")
        state: ScheduleState = self._structure(obj.get("state"), ScheduleState, "schedule state")
        return state

    def encode_input(self, message: ScheduleInput) -> bytes:
        return orjson.dumps({"v": SCHEMA_VERSION, "in": self.converter.unstructure(message)})

    def decode_input(self, data: bytes) -> ScheduleInput:
        obj = self._load(data, "schedule input")
        message: ScheduleInput = self._structure(obj.get("in"), ScheduleInput, "schedule input")
        return message

    def encode_schedule(self, schedule: Schedule) -> Any:
        return self.converter.unstructure(schedule)
