"""The visibility request/reply (core NATS, ``dfev.<ns>.visibility``) and page tokens.

* request: ``{"op": "list" | "count", "query": str, "page_size": int, "token": str | null}``
* reply: ``{"ok": true, "runs": [status entry, ...], "next": token | null, "count": int}``, or
  ``{"ok": false, "error": "<error class name>", "message": str, "position": int}``
* page token: base64url of ``[query fingerprint, sort key of the page's last run]``; a token
  given with another query is refused.

Every body here came from the wire: it is checked before anything uses it, and a bad one
raises :class:`~durablefuture.core.errors.DecodeError` (or ``InvalidArgumentError`` for a
token, which the user passed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import sys

import orjson
from attrs import frozen

from durablefuture.codec.validate import json_object
from durablefuture.codec.wire import Codec
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.query import MAX_QUERY_LENGTH, SortPart

__all__ = [
    "MAX_PAGE_SIZE",
    "VisibilityReply",
    "VisibilityRequest",
    "decode_page_token",
    "decode_visibility_reply",
    "decode_visibility_request",
    "encode_page_token",
    "encode_visibility_error",
    "encode_visibility_reply",
    "encode_visibility_request",
    "listed",
]

MAX_PAGE_SIZE = 1000
MAX_TOKEN = 8192


@frozen
class VisibilityRequest:
    op: str
    query: str = ""
    page_size: int = 100
    token: str | None = None


@frozen
class VisibilityReply:
    runs: tuple[RunSummary, ...] = ()
    next_page_token: str | None = None
    count: int = 0


def encode_visibility_request(req: VisibilityRequest) -> bytes:
    return orjson.dumps(
        {"op": req.op, "query": req.query, "page_size": req.page_size, "token": req.token}
    )


def decode_visibility_request(data: bytes) -> VisibilityRequest:
    obj = json_object(data, "a visibility request")
    op, query, size, token = (
        obj.get("op"),
        obj.get("query", ""),
        obj.get("page_size"),
        obj.get("token"),
    )
    if op not in ("list", "count"):
        raise DecodeError(f"a visibility request has an unknown op {op!r:.40}")
    if not isinstance(query, str) or len(query) > MAX_QUERY_LENGTH:
        raise DecodeError(
            f"a visibility request's query is not a string of at most {MAX_QUERY_LENGTH}"
        )
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise DecodeError(f"a visibility request's page_size is not 1..{MAX_PAGE_SIZE}")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN):
        raise DecodeError("a visibility request's token is not a short string")
    return VisibilityRequest(op, query, size, token)


def listed(summary: RunSummary) -> RunSummary:
    """A status entry as the index keeps and lists it: without the result, failure, parent and
    request id (``describe()`` has them), the few distinct strings shared between runs."""
    # built directly (``evolve`` looks the class's fields up on every call: 2 us more)
    return RunSummary(
        workflow_id=summary.workflow_id,
        run_id=summary.run_id,
        workflow_type=sys.intern(summary.workflow_type),
        task_queue=sys.intern(summary.task_queue),
        status=sys.intern(summary.status),
        start_time=summary.start_time,
        close_time=summary.close_time,
        history_length=summary.history_length,
        new_run_id=summary.new_run_id,
        search_attributes=summary.search_attributes,
        memo=summary.memo,
        expires_at=summary.expires_at,
    )


def encode_visibility_reply(codec: Codec, reply: VisibilityReply) -> bytes:
    runs = [codec.converter.unstructure(s, RunSummary) for s in reply.runs]
    return orjson.dumps(
        {"ok": True, "runs": runs, "next": reply.next_page_token, "count": reply.count}
    )


def encode_visibility_error(error_type: str, message: str, position: int = -1) -> bytes:
    return orjson.dumps(
        {"ok": False, "error": error_type, "message": message, "position": position}
    )


def decode_visibility_reply(codec: Codec, data: bytes) -> VisibilityReply | tuple[str, str, int]:
    """The reply, or ``(error class name, message, position)`` for a refusal."""
    obj = json_object(data, "a visibility reply")
    if obj.get("ok") is not True:
        error, message, position = obj.get("error"), obj.get("message"), obj.get("position", -1)
        if not isinstance(error, str) or not isinstance(message, str):
            raise DecodeError("a visibility refusal does not name its error")
        return error[:100], message[:2000], position if isinstance(position, int) else -1
    runs, nxt, count = obj.get("runs"), obj.get("next"), obj.get("count")
    if not isinstance(runs, list) or len(runs) > MAX_PAGE_SIZE:
        raise DecodeError("a visibility reply's runs are not a list of at most 1000")
    if nxt is not None and (not isinstance(nxt, str) or len(nxt) > MAX_TOKEN):
        raise DecodeError("a visibility reply's next page token is not a short string")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DecodeError("a visibility reply's count is not a number")
    try:
        summaries = tuple(codec.converter.structure(r, RunSummary) for r in runs)
    except Exception as exc:
        raise DecodeError(f"a visibility reply holds an unreadable run: {exc}") from None
    # (structured like a status entry read from the bucket: a corrupt run's entry has no type
    # or request id, so the input checks of ``validate`` do not apply)
    return VisibilityReply(summaries, nxt, count)


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def encode_page_token(query: str, cursor: list[SortPart]) -> str:
    raw = orjson.dumps([_fingerprint(query), [list(p) for p in cursor]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, query: str) -> object:
    """The cursor a token holds (still to be checked with ``core.query.cursor_of``)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(
            "next_page_token is not a page token; pass the one a page returned"
        ) from None
    if not isinstance(obj, list) or len(obj) != 2 or obj[0] != _fingerprint(query):
        raise InvalidArgumentError(
            "next_page_token belongs to another query; pass the same query as for the first page"
        )
    cursor: object = obj[1]
    return cursor
