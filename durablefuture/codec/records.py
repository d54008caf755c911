"""Small JSON records that travel outside the versioned envelope.

* heartbeat (KV ``DF_<ns>_act``, key ``hb.<run>.<seq>``): ``{"attempt", "at", "details"}``,
  written by the worker, read by the server when a heartbeat timeout fires
* activity cancel request (same bucket, key ``cx.<run>.<seq>``): ``{"reason"}``
* removal of a closed run (stream ``df.<ns>.rm.<kind>``): ``{"wid", "run"}``
* removal of closed runs whose expiries share one message (``df.<ns>.rm.expire-list``):
  ``{"runs": [[wid, run], ...]}``, at most ``MAX_EXPIRY_LIST`` runs
* query (core NATS request to ``df.<ns>.q.<queue>``): ``{"wid", "run", "name", "args"}``,
  answered with ``{"ok": true, "result"}`` or ``{"ok": false, "error", "message"}``

Every body read here came from the wire: it is checked before anything uses it, and a bad one
raises :class:`~durablefuture.core.errors.DecodeError`.
"""

from __future__ import annotations

import math

import orjson
from attrs import frozen

from durablefuture.codec.validate import json_list_record, json_object
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.types import JsonValue, check_run_id, check_workflow_id

__all__ = [
    "EXPIRY_LIST_BYTES",
    "MAX_EXPIRY_LIST",
    "REMOVAL_KINDS",
    "Heartbeat",
    "QueryAnswer",
    "Removal",
    "decode_expiry_list",
    "decode_heartbeat",
    "decode_query_answer",
    "decode_removal",
    "encode_cancel_request",
    "encode_expiry_list",
    "encode_query",
    "encode_removal",
    "expiry_list_size",
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


REMOVAL_KINDS = ("expire", "delete", "expire-list")
"""``expire``: the run's retention is over (from its expiry schedule); ``delete``: an
operator asked to delete the closed run now; ``expire-list``: the retention of every run the
message lists is over (one schedule for the runs that closed together)."""

MAX_EXPIRY_LIST = 100
"""Runs one expiry list names at most (each removal is a few JetStream calls: a list is
removed well within a few in-progress acknowledgements)."""
EXPIRY_LIST_BYTES = 32 * 1024
"""Bytes of an expiry list's body at most, far below any stream's largest message."""


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


def expiry_list_size(removal: Removal) -> int:
    """Bytes ``removal`` adds to an expiry list at most (JSON escapes double a character)."""
    return 2 * len(removal.workflow_id.encode()) + len(removal.run_id) + 8


def encode_expiry_list(removals: list[Removal]) -> bytes:
    return orjson.dumps({"runs": [[r.workflow_id, r.run_id] for r in removals]})


def decode_expiry_list(data: bytes) -> list[Removal]:
    """The runs an expiry list names: 1 to ``MAX_EXPIRY_LIST``, each checked."""
    runs = json_list_record(
        data, "an expiry list", "runs", "runs", MAX_EXPIRY_LIST, EXPIRY_LIST_BYTES
    )
    out: list[Removal] = []
    for i, item in enumerate(runs):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
        ):
            raise DecodeError(f"an expiry list's run {i} is not [workflow id, run id]")
        try:
            out.append(Removal(check_workflow_id(item[0]), check_run_id(item[1])))
        except InvalidArgumentError as exc:
            raise DecodeError(f"an expiry list's run {i} is out of bounds: {exc}") from None
    return out
