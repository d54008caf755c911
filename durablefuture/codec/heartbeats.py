"""Wire format of an activity's last heartbeat (KV ``DF_<ns>_act``, key ``hb.<run>.<seq>``):
``{"attempt": n, "at": unix time, "details": [payloads]}``."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from durablefuture.core.types import JsonValue

__all__ = ["encode_heartbeat"]


def encode_heartbeat(attempt: int, at: float, details: Sequence[JsonValue]) -> bytes:
    return orjson.dumps({"attempt": attempt, "at": at, "details": list(details)})
