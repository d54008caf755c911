"""Small JSON records that travel outside the versioned envelope.

* heartbeat (KV ``DF_<ns>_act``, key ``hb.<run>.<seq>``): ``{"attempt", "at", "details"}``,
  written by the worker, read by the server when a heartbeat timeout fires
* activity cancel request (same bucket, key ``cx.<run>.<seq>``): ``{"reason"}``
* removal of a closed run (stream ``df.<ns>.rm.<kind>``): ``{"wid", "run"}``
* query (core NATS request to ``df.<ns>.q.<queue>``): ``{"wid", "run", "name", "args"}``,
  answered with ``{"ok": true, "result"}`` or ``{"ok": false, "error", "message"}``

Every body read here came from the wire: it is checked before anything uses it, and a bad one
raises :class:`~durablefuture.core.errors.DecodeError`.
"""

from __future__ import annotations

import math

import orjson
from attrs import frozen

from durablefuture.codec.validate import json_object
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.types import JsonValue, check_run_id, check_workflow_id

__all__ = [
    "REMOVAL_KINDS",
    "Heartbeat",
    "QueryAnswer",
    "Removal",
    "decode_heartbeat",
    "decode_query_answer",
    "decode_removal",
    "encode_cancel_request",
    "encode_query",
    "encode_removal",
]


@frozen
class Heartbeat:
    """The last heartbeat an activity attempt recorded."""

    at: float
    details: tuple[JsonValue, ...] = ()


@frozen
class QueryAnswer:
    """A worker's answer to a query: ``result`` if ``ok``, else ``message`` says why not."""

    ok: bool
    result: JsonValue = None
    message: str = ""


def decode_heartbeat(data: bytes) -> Heartbeat:
    obj: dict[str, object] = json_object(data, "a heartbeat record")
    at = obj.get("at", 0.0)
    details = obj.get("details", ())
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise DecodeError(f"a heartbeat record has a bad time {at!r:.80}")
    if not isinstance(details, list | tuple):
        raise DecodeError("a heartbeat record's details are not a list")
    return Heartbeat(float(at), tuple(details))


def encode_cancel_request(reason: str) -> bytes:
    return orjson.dumps({"reason": reason})


def encode_query(
    workflow_id: str, run_id: str, name: str, args: list[JsonValue], *, update: bool = False
) -> bytes:
    body: dict[str, object] = {"wid": workflow_id, "run": run_id, "name": name, "args": args}
    if update:  # validate update ``name`` (its validator runs; nothing is recorded)
        body["update"] = True
    return orjson.dumps(body)


def decode_query_answer(data: bytes) -> QueryAnswer:
    obj: dict[str, object] = json_object(data, "a query answer")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise DecodeError("a query answer has no boolean 'ok'")
    if ok:
        result: JsonValue = obj.get("result")  # type: ignore[assignment]
        return QueryAnswer(True, result)
    message = obj.get("message")
    return QueryAnswer(False, message=str(message)[:2000] if message is not None else "")


REMOVAL_KINDS = ("expire", "delete")
"""``expire``: the run's retention is over (from its expiry schedule); ``delete``: an
operator asked to delete the closed run now."""


@frozen
class Removal:
    """A request to remove a closed run (its history, status entry and payloads)."""

    workflow_id: str
    run_id: str


def encode_removal(removal: Removal) -> bytes:
    return orjson.dumps({"wid": removal.workflow_id, "run": removal.run_id})


def decode_removal(data: bytes) -> Removal:
    obj: dict[str, object] = json_object(data, "a removal request")
    wid, run = obj.get("wid"), obj.get("run")
    if not isinstance(wid, str) or not isinstance(run, str):
        raise DecodeError("a removal request needs string 'wid' and 'run'")
    try:
        return Removal(check_workflow_id(wid), check_run_id(run))
    except InvalidArgumentError as exc:
        raise DecodeError(f"a removal request is out of bounds: {exc}") from None
