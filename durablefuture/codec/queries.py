"""Wire format of workflow queries (core NATS request/reply on ``df.<ns>.q.<queue>``).

Request: ``{"wid": workflow id, "run": run id, "name": query name, "args": [payloads]}``, with
``"update": true`` to check update ``name`` (its validator runs; the answer's result is null).
Answer: ``{"ok": true, "result": payload}`` or ``{"ok": false, "error": type, "message": text}``.
"""

from __future__ import annotations

import orjson
from attrs import frozen

from durablefuture.core.types import JsonValue, check_run_id, check_type_name, check_workflow_id

__all__ = ["QueryRequest", "decode_query", "encode_query_answer", "encode_query_error"]


@frozen
class QueryRequest:
    workflow_id: str
    run_id: str
    name: str
    args: tuple[JsonValue, ...]
    update: bool = False
    """Validate update ``name`` with these arguments (nothing is recorded), not a query."""


def decode_query(data: bytes) -> QueryRequest:
    """The query in ``data``; raises (any exception, saying what is wrong) when it is not one,
    or when its workflow id, run id or name is out of bounds."""
    req = orjson.loads(data)
    wid, run_id, name = req["wid"], req["run"], req["name"]
    for field, value in (("wid", wid), ("run", run_id), ("name", name)):
        if not isinstance(value, str):
            raise TypeError(f"{field!r} must be a string, not {type(value).__name__}")
    # the run id is a subject token of the history read: never a wildcard, never unbounded
    check_workflow_id(wid)
    check_run_id(run_id)
    check_type_name(name, "query name")
    args = req.get("args") or ()
    if not isinstance(args, list | tuple):
        raise TypeError(f"'args' must be a list, not {type(args).__name__}")
    update = req.get("update", False)
    if not isinstance(update, bool):
        raise TypeError(f"'update' must be a boolean, not {type(update).__name__}")
    return QueryRequest(wid, run_id, name, tuple(args), update)


def encode_query_answer(result: JsonValue) -> bytes:
    return orjson.dumps({"ok": True, "result": result})


def encode_query_error(exc: BaseException) -> bytes:
    return orjson.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)})
