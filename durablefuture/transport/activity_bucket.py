"""The per-namespace activity KV bucket (``DF_<ns>_act``) as a worker uses it: an attempt's
last heartbeat, and whether the workflow asked for the activity to be cancelled."""

from __future__ import annotations

import nats.js.errors
from nats.js.kv import KeyValue

from durablefuture.transport.subjects import Layout

__all__ = ["ActivityBucket"]


class ActivityBucket:
    def __init__(self, kv: KeyValue, layout: Layout) -> None:
        self.kv = kv
        self.layout = layout

    async def put_heartbeat(self, run_id: str, seq: int, body: bytes) -> None:
        """Store the encoded last heartbeat of activity ``seq`` of the run."""
        await self.kv.put(self.layout.heartbeat_key(run_id, seq), body)

    async def cancel_requested(self, run_id: str, seq: int) -> bool:
        """Whether the run asked for activity ``seq`` to be cancelled; raises when the bucket
        cannot tell (NATS away)."""
        try:
            await self.kv.get(self.layout.cancel_key(run_id, seq))
        except nats.js.errors.KeyNotFoundError:
            return False
        return True
