"""Check lists of activity attempts run eagerly, a JSON record outside the versioned envelope.

An attempt df-server granted to the worker that decided it (eager activity dispatch,
``server/checks.py``) has no stored activity task; instead it is listed, with the attempts
granted with it, in one ``@at`` message schedule (``df.<ns>.ck.<list>``) firing onto
``df.<ns>.rm.check-list``: ``{"attempts": [[wid, run, seq, attempt], ...]}``, at most
``MAX_CHECK_LIST`` attempts and ``CHECK_LIST_BYTES`` bytes.

Every body read here came from the wire: it is checked before anything uses it, and a bad one
raises :class:`~durablefuture.core.errors.DecodeError`.
"""

from __future__ import annotations

import orjson
from attrs import frozen

from durablefuture.codec.validate import json_list_record
from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.types import check_run_id, check_workflow_id

__all__ = [
    "CHECK_LIST_BYTES",
    "MAX_CHECK_LIST",
    "CheckedAttempt",
    "check_list_size",
    "decode_check_list",
    "encode_check_list",
]

MAX_CHECK_LIST = 200
"""Attempts one check list names at most (each is a history read and a lease read at most)."""
CHECK_LIST_BYTES = 64 * 1024
"""Bytes of a check list's body at most, far below any stream's largest message."""
_MAX_NUMBER = 2**31 - 1
"""The largest activity seq or attempt number a list may name."""


@frozen
class CheckedAttempt:
    """An activity attempt granted to a worker: its task is published if nobody ran it."""

    workflow_id: str
    run_id: str
    seq: int
    attempt: int


def check_list_size(item: CheckedAttempt) -> int:
    """Bytes ``item`` adds to a check list at most (JSON escapes double a character)."""
    return 2 * len(item.workflow_id.encode()) + len(item.run_id) + 30


def encode_check_list(items: list[CheckedAttempt]) -> bytes:
    return orjson.dumps({"attempts": [[a.workflow_id, a.run_id, a.seq, a.attempt] for a in items]})


def _number(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= _MAX_NUMBER else None


def decode_check_list(data: bytes) -> list[CheckedAttempt]:
    """The attempts a check list names: 1 to ``MAX_CHECK_LIST``, each checked."""
    attempts = json_list_record(
        data, "a check list", "attempts", "attempts", MAX_CHECK_LIST, CHECK_LIST_BYTES
    )
    out: list[CheckedAttempt] = []
    for i, item in enumerate(attempts):
        if not isinstance(item, list) or len(item) != 4:
            raise DecodeError(
                f"a check list's attempt {i} is not [workflow id, run id, seq, attempt]"
            )
        wid, run, seq, attempt = item
        number, tries = _number(seq), _number(attempt)
        if not isinstance(wid, str) or not isinstance(run, str) or number is None or not tries:
            raise DecodeError(
                f"a check list's attempt {i} is not [workflow id, run id, seq, attempt]"
            )
        try:
            out.append(CheckedAttempt(check_workflow_id(wid), check_run_id(run), number, tries))
        except InvalidArgumentError as exc:
            raise DecodeError(f"a check list's attempt {i} is out of bounds: {exc}") from None
    return out
