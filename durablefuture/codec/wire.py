"""Wire format of every message DurableFuture stores or sends (schema version 1).

Every message is one JSON object with ``"v"`` (the schema version). Bodies:

* history batch (``df.<ns>.h.<workflow>.<run>``): ``{"v", "in": input id, "ev": [events]}``
* workflow task: ``{"v", "task": WorkflowTask, "ev": [events], "hseq": stream seq}``
* activity task: ``{"v", "task": ActivityTask}``
* server input: ``{"v", "wid": workflow id, "in": RunInput}`` or ``{"v", "start": request}``
* reply (core NATS, to a request's reply subject): ``{"v", "ok", "run_id", "error"}``
* worker record (KV ``DF_<ns>_workers``, key ``<queue>.<identity>``): ``{"v", WorkerRecord}``.
  Readers ignore fields they do not know and default the ones a record lacks, so workers of
  different versions can share a bucket.
* attempt claim (KV ``DF_<ns>_act``, key ``lease.<run>.<seq>.<attempt>``):
  ``{"v", AttemptClaim}``, read the same tolerant way.

Events, commands and inputs are tagged unions: ``"t"`` is the class name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import orjson
from attrs import field, frozen
from cattrs import Converter

from durablefuture.codec.claims import (
    CLAIM_MARK,
    CLAIM_THRESHOLD,
    Claims,
    PayloadStore,
    has_claims,
    is_claim,
)
from durablefuture.codec.converter import make_converter
from durablefuture.codec.envelope import DecodedCache, PayloadCodec, transform_tree
from durablefuture.codec.payloads import JsonPayloads
from durablefuture.codec.validate import check_message_fields, json_object
from durablefuture.core import events as ev
from durablefuture.core.effects import ActivityTask, RunSummary, WorkflowTask
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.inputs import RunInput, StartWorkflowRequest
from durablefuture.core.liveness import AttemptClaim, WorkerRecord
from durablefuture.core.types import JsonValue, check_workflow_id

__all__ = [
    "SCHEMA_VERSION",
    "BatchPayloads",
    "Codec",
    "InputEnvelope",
    "Reply",
    "WorkflowTaskMessage",
    "default_codec",
]

SCHEMA_VERSION = 1
T = TypeVar("T")
BatchPayloads = Literal["all", "last", "none"]
"""Whose payloads :meth:`Codec.decode_batch` decodes."""


def _events(value: object) -> tuple[ev.Event, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected events, got {type(value).__name__}")


@frozen
class WorkflowTaskMessage:
    task: WorkflowTask
    events: tuple[ev.Event, ...] = field(default=(), converter=_events)
    history_seq: int = 0


@frozen
class InputEnvelope:
    """A server input: a start request, or an input for a run of ``workflow_id``."""

    workflow_id: str
    input: RunInput | None = None
    start: StartWorkflowRequest | None = None


@frozen
class Reply:
    ok: bool
    run_id: str = ""
    error_type: str = ""
    message: str = ""


class Codec:
    """Encodes and decodes every engine message with the one converter.

    With a ``payload_codec`` (clients and workers only, never the df-server), the payloads of
    every message it encodes go through the codec, and those of every message it decodes come
    back from it: see :mod:`durablefuture.codec.envelope`.
    """

    def __init__(
        self,
        converter: Converter | None = None,
        payload_codec: PayloadCodec | None = None,
        claims: Claims | None = None,
    ) -> None:
        self.converter = converter or make_converter()
        self.payloads = JsonPayloads(self.converter)
        self.payload_codec = payload_codec
        self.claims = claims
        self._decoded = DecodedCache()
        c = self.converter
        self._un_event = c.get_unstructure_hook(ev.Event)
        self._st_event = c.get_structure_hook(ev.Event)

    # ------------------------------------------------------------------ helpers

    def with_payload_codec(self, payload_codec: PayloadCodec | None) -> Codec:
        """A codec sharing this one's converter, with ``payload_codec``."""
        return Codec(self.converter, payload_codec, self.claims)

    def with_store(self, store: PayloadStore, threshold: int = CLAIM_THRESHOLD) -> Codec:
        """A codec sharing this one's converter and payload codec, that sends payloads over
        ``threshold`` by reference to ``store`` (:meth:`pack_input`) and fetches them back
        (:meth:`resolve`)."""
        return Codec(self.converter, self.payload_codec, Claims(store, threshold))

    async def pack_input(self, env: InputEnvelope) -> bytes:
        """:meth:`encode_input`, with large payloads stored by reference first."""
        body = self._input_body(env)
        data = orjson.dumps(body)
        if self.claims is None or len(data) <= self.claims.threshold:
            return data
        await self.claims.pack(body, len(data))
        return orjson.dumps(body)

    def refers(self, data: bytes) -> bool:
        """Whether message ``data`` may hold payloads stored by reference (a fast check on the
        bytes, before :meth:`resolve`; most messages have none)."""
        return self.claims is not None and CLAIM_MARK in data

    async def resolve(self, obj: T, cls: Any) -> T:
        """``obj`` (of type ``cls``) with its payloads stored by reference fetched."""
        if self.claims is None or not has_claims(obj):
            return obj
        tree = self.converter.unstructure(obj, cls)
        await self.claims.resolve(tree, self.payload_codec)
        out: T = self.converter.structure(tree, cls)
        return out

    async def resolve_events(self, events: Sequence[ev.Event]) -> list[ev.Event]:
        return [await self.resolve(e, ev.Event) for e in events]

    def _seal(self, tree: object) -> object:
        if self.payload_codec is not None:
            transform_tree(tree, self.payload_codec, encode=True, cache=self._decoded)
        return tree

    def _open(self, tree: object) -> object:
        if self.payload_codec is not None:
            transform_tree(tree, self.payload_codec, encode=False, cache=self._decoded)
        return tree

    def encode_payloads(self, values: list[JsonValue]) -> list[JsonValue]:
        """``values`` (a query's arguments or answer, heartbeat details) through the codec."""
        out = list(values)
        self._seal({"args": out})
        return out

    def decode_payloads(self, values: list[JsonValue]) -> list[JsonValue]:
        """``values`` back from the codec (plain values pass through)."""
        out = list(values)
        self._open({"args": out})
        return out

    async def pack_payloads(self, values: list[JsonValue]) -> list[JsonValue]:
        """:meth:`encode_payloads`, then those that make the list too large for one message
        stored by reference (a query's arguments or answer, a schedule's arguments)."""
        body = {"args": self.encode_payloads(values)}
        if self.claims is not None:
            size = len(orjson.dumps(body))
            if size > self.claims.threshold:
                await self.claims.pack(body, size)
        return body["args"]

    async def unpack_payloads(self, values: list[JsonValue]) -> list[JsonValue]:
        """:meth:`decode_payloads`, fetching those stored by reference first."""
        tree = {"args": list(values)}
        if self.claims is not None and any(is_claim(v) for v in tree["args"]):
            await self.claims.resolve(tree, self.payload_codec)
        return self.decode_payloads(tree["args"])

    def _load(self, data: bytes, what: str) -> dict[str, Any]:
        obj = json_object(data, what)
        v = obj.get("v")
        if v != SCHEMA_VERSION:
            raise DecodeError(
                f"{what} has schema version {v!r}; this DurableFuture reads version "
                f"{SCHEMA_VERSION} (upgrade the component that wrote it, or this one)"
            )
        return obj

    def _structure(self, obj: object, cls: Any, what: str) -> Any:
        _check_shape(obj, what)
        try:
            return self.converter.structure(obj, cls)
        except RecursionError:
            raise DecodeError(f"{what} is nested too deeply") from None
        except Exception as exc:
            try:
                reason = _reason(exc)
            except RecursionError:
                reason = "nested too deeply"
            raise DecodeError(f"{what} does not match the schema: {reason}") from None

    # ------------------------------------------------------------------ events

    def encode_event(self, event: ev.Event) -> dict[str, Any]:
        out: dict[str, Any] = self._un_event(event)
        return out

    def decode_event(self, obj: object) -> ev.Event:
        try:
            event: ev.Event = self._st_event(obj, ev.Event)
        except Exception as exc:
            raise DecodeError(f"event does not match the schema: {_reason(exc)}") from None
        return event

    def encode_batch(self, input_id: str, events: list[ev.Event] | tuple[ev.Event, ...]) -> bytes:
        body = {"v": SCHEMA_VERSION, "in": input_id, "ev": [self._un_event(e) for e in events]}
        return orjson.dumps(self._seal(body))

    def decode_batch(
        self, data: bytes, payloads: BatchPayloads = "all"
    ) -> tuple[str, list[ev.Event]]:
        """The input id and events of a history message. ``payloads``: whose payloads to
        decode (the others keep their envelopes): every event's, only the last one's (a
        reader that wants how a run ended), or none (one that counts events)."""
        obj = self._load(data, "history message")
        raw = obj.get("ev")
        if not isinstance(raw, list) or not raw:
            raise DecodeError("history message has no events")
        if payloads == "all":
            self._open(raw)
        elif payloads == "last":
            self._open(raw[-1])
        input_id = obj.get("in", "")
        if not isinstance(input_id, str):
            raise DecodeError("history message has a non-string input id")
        return input_id, [self.decode_event(e) for e in raw]

    # ------------------------------------------------------------------ tasks

    def encode_workflow_task(self, msg: WorkflowTaskMessage) -> bytes:
        body = {
            "v": SCHEMA_VERSION,
            "task": self.converter.unstructure(msg.task),
            "ev": [self._un_event(e) for e in msg.events],
            "hseq": msg.history_seq,
        }
        return orjson.dumps(self._seal(body))

    def decode_workflow_task(self, data: bytes, payloads: bool = True) -> WorkflowTaskMessage:
        """The task in ``data``; with ``payloads=False`` its payloads are left encoded."""
        obj = self._load(data, "workflow task")
        if payloads:
            self._open(obj)
        task = self._structure(obj.get("task"), WorkflowTask, "workflow task")
        check_message_fields(task, "workflow task")
        raw = obj.get("ev") or []
        if not isinstance(raw, list):
            raise DecodeError("workflow task events are not a list")
        hseq = obj.get("hseq", 0)
        if not isinstance(hseq, int):
            raise DecodeError("workflow task hseq is not an integer")
        return WorkflowTaskMessage(task, tuple(self.decode_event(e) for e in raw), hseq)

    def encode_activity_task(self, task: ActivityTask) -> bytes:
        body = {"v": SCHEMA_VERSION, "task": self.converter.unstructure(task)}
        return orjson.dumps(self._seal(body))

    def decode_activity_task(self, data: bytes, payloads: bool = True) -> ActivityTask:
        """The task in ``data``; with ``payloads=False`` its payloads are left encoded."""
        obj = self._load(data, "activity task")
        if payloads:
            self._open(obj)
        task: ActivityTask = self._structure(obj.get("task"), ActivityTask, "activity task")
        check_message_fields(task, "activity task")
        return task

    # ------------------------------------------------------------------ server inputs

    def encode_input(self, env: InputEnvelope) -> bytes:
        return orjson.dumps(self._input_body(env))

    def _input_body(self, env: InputEnvelope) -> dict[str, Any]:
        body: dict[str, Any] = {"v": SCHEMA_VERSION, "wid": env.workflow_id}
        if env.start is not None:
            body["start"] = self.converter.unstructure(env.start)
        if env.input is not None:
            body["in"] = self.converter.unstructure(env.input, RunInput)
        self._seal(body)
        return body

    def decode_input(self, data: bytes) -> InputEnvelope:
        obj = self._load(data, "server input")
        self._open(obj)
        wid = obj.get("wid")
        if not isinstance(wid, str) or not wid:
            raise DecodeError("server input has no workflow id")
        try:
            check_workflow_id(wid, "server input.wid")
        except InvalidArgumentError as exc:
            raise DecodeError(f"server input refused: {exc}") from None
        start = None
        run_input = None
        if "start" in obj:
            start = self._structure(obj["start"], StartWorkflowRequest, "start request")
            check_message_fields(start, "start request")
            if start.workflow_id != wid:
                raise DecodeError(
                    f"start request is for workflow {start.workflow_id[:80]!r} but its "
                    f"envelope names {wid[:80]!r}"
                )
        if "in" in obj:
            run_input = self._structure(obj["in"], RunInput, "server input")
            check_message_fields(run_input, type(run_input).__name__)
        if start is None and run_input is None:
            raise DecodeError("server input carries neither a start request nor a run input")
        return InputEnvelope(wid, run_input, start)

    # ------------------------------------------------------------------ replies and summaries

    def encode_reply(self, reply: Reply) -> bytes:
        body = self.converter.unstructure(reply)
        body["v"] = SCHEMA_VERSION
        return orjson.dumps(body)

    def decode_reply(self, data: bytes) -> Reply:
        obj = self._load(data, "reply")
        obj.pop("v", None)
        reply: Reply = self._structure(obj, Reply, "reply")
        return reply

    def encode_summary(self, summary: RunSummary) -> bytes:
        body = self.converter.unstructure(summary)
        body["v"] = SCHEMA_VERSION
        return orjson.dumps(self._seal(body))

    def decode_summary(self, data: bytes) -> RunSummary:
        obj = self._load(data, "status entry")
        self._open(obj)
        obj.pop("v", None)
        summary: RunSummary = self._structure(obj, RunSummary, "status entry")
        return summary

    # ------------------------------------------------------------------ worker records

    def encode_worker(self, record: WorkerRecord) -> bytes:
        body = self.converter.unstructure(record)
        body["v"] = SCHEMA_VERSION
        return orjson.dumps(body)

    def decode_worker(self, data: bytes) -> WorkerRecord:
        obj = self._load(data, "worker record")
        obj.pop("v", None)
        record: WorkerRecord = self._structure(obj, WorkerRecord, "worker record")
        return record

    # ------------------------------------------------------------------ attempt claims

    def encode_claim(self, claim: AttemptClaim) -> bytes:
        body = self.converter.unstructure(claim)
        body["v"] = SCHEMA_VERSION
        return orjson.dumps(body)

    def decode_claim(self, data: bytes) -> AttemptClaim:
        obj = self._load(data, "attempt claim")
        obj.pop("v", None)
        claim: AttemptClaim = self._structure(obj, AttemptClaim, "attempt claim")
        return claim


MAX_COMMANDS = 2_000
"""Most commands one report may carry (workers send at most 1,000)."""
MAX_EVENTS = 20_000
"""Most events one message may carry."""
MAX_FAILURE_DEPTH = 64
"""Longest chain of failure causes."""
_LISTS = {"commands": MAX_COMMANDS, "ev": MAX_EVENTS, "events": MAX_EVENTS}


def _check_shape(obj: object, what: str) -> None:
    """Refuse engine lists longer, and failure chains deeper, than any real message has, before
    the converter spends time on them (300,000 empty commands cost seconds of CPU). Payloads
    (arguments, results) are not walked: they pass through untouched."""
    stack: list[tuple[object, int]] = [(obj, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > 4 * MAX_COMMANDS:
            raise DecodeError(f"{what} has more engine records than any real message")
        if not isinstance(node, dict):
            continue
        for key, limit in _LISTS.items():
            items = node.get(key)
            if isinstance(items, list):
                if len(items) > limit:
                    raise DecodeError(f"{what} carries {len(items)} {key}; the limit is {limit}")
                stack.extend((item, depth) for item in items)
        for key in ("failure", "cause", "task", "in", "start"):
            child = node.get(key)
            if isinstance(child, dict):
                deeper = depth + 1 if key == "cause" else depth
                if deeper > MAX_FAILURE_DEPTH:
                    raise DecodeError(
                        f"{what} has a chain of more than {MAX_FAILURE_DEPTH} failure causes"
                    )
                stack.append((child, deeper))


def _reason(exc: BaseException) -> str:
    subs = getattr(exc, "exceptions", None)
    if subs:
        return "; ".join(_reason(s) for s in subs[:3])
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None)
    if notes:
        text += f" ({'; '.join(notes[:2])})"
    return text


_DEFAULT: Codec | None = None


def default_codec() -> Codec:
    """The process-wide codec (one converter, hooks compiled once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Codec()
    return _DEFAULT
