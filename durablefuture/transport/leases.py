"""Attempt leases: which worker runs an activity attempt, kept in the namespace's activity bucket.

Before it starts attempt ``a`` of activity ``seq`` of a run, a worker creates the key
``lease.<run>.<seq>.<a>`` create-only (``Nats-Expected-Last-Subject-Sequence: 0``): of all the
deliveries of that attempt's task, only one creation succeeds, so the attempt starts once. A
task can be delivered again while its attempt runs or after it finished: nats-server keeps a
consumer's state on disk lazily, and after a SIGKILL it may hand out again, as new, tasks whose
delivery or ack it had not written yet.

The holder rewrites the entry while the attempt runs: each write is a sign of life. Whoever
finds the entry of another holder waits while the holder is alive; once the holder stopped
rewriting it, the attempt's outcome is in history (it finished), or the holder is gone. That
costs one write per attempt on the hot path (the claim) and nothing once it finished. Entries
carry a per-message TTL, far longer than any redelivery of the task, so nothing accumulates.
"""

from __future__ import annotations

import asyncio
import math

import nats.js.errors
from attrs import frozen
from nats.js.api import PubAck
from nats.js.kv import KeyValue

from durablefuture.codec.wire import Codec
from durablefuture.core.errors import DecodeError, TransportError
from durablefuture.core.liveness import AttemptClaim
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    Publisher,
    WrongLastSequence,
)
from durablefuture.transport.subjects import Layout

__all__ = ["LEASE_TTL", "AttemptLease", "AttemptLeases"]

LEASE_TTL = 24 * 3600.0
"""Seconds an entry outlives its last write: longer than any redelivery of a task."""

_TTL = "Nats-TTL"


@frozen
class AttemptLease:
    """Who holds an attempt, and when the holder last wrote."""

    holder: str
    at: float
    lease: float
    """Seconds within which a live holder writes again."""
    revision: int = 0


class AttemptLeases:
    """Claim, renew, finish and read attempt leases of one namespace."""

    def __init__(self, publisher: Publisher, kv: KeyValue, layout: Layout, codec: Codec) -> None:
        self.pub = publisher
        self.kv = kv
        self.layout = layout
        self.codec = codec
        self._prefix = f"$KV.{layout.activity_bucket}."

    def _body(self, holder: str, at: float, lease: float) -> bytes:
        return self.codec.encode_claim(AttemptClaim(holder, at, lease))

    async def claim(
        self, run_id: str, seq: int, attempt: int, holder: str, lease: float, now: float
    ) -> AttemptLease | None:
        """Take the attempt for ``holder``: None if it is ours now, else the current lease."""
        key = self.layout.lease_key(run_id, seq, attempt)
        headers = {EXPECTED_LAST_SUBJECT_SEQ: "0", _TTL: _ttl(LEASE_TTL)}
        for _ in range(3):  # an entry that expires between our create and our read: again
            try:
                await self.pub.publish(self._prefix + key, self._body(holder, now, lease), headers)
                return None
            except WrongLastSequence:
                pass
            current = await self.read(run_id, seq, attempt)
            if current is not None:
                return current
        raise TransportError(f"attempt lease {key}: cannot create it nor read it")

    async def renew(
        self, run_id: str, seq: int, attempt: int, holder: str, lease: float, now: float
    ) -> asyncio.Future[PubAck]:
        """Rewrite our lease (we are alive); the returned future resolves when it is stored."""
        key = self.layout.lease_key(run_id, seq, attempt)
        return await self.pub.send(
            self._prefix + key, self._body(holder, now, lease), {_TTL: _ttl(LEASE_TTL)}
        )

    async def read(self, run_id: str, seq: int, attempt: int) -> AttemptLease | None:
        key = self.layout.lease_key(run_id, seq, attempt)
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.NotFoundError:  # never claimed, or expired
            return None
        except Exception as exc:
            raise TransportError(f"cannot read attempt lease {key}: {exc}") from exc
        try:
            claim = self.codec.decode_claim(entry.value or b"")
        except DecodeError as exc:
            raise TransportError(f"attempt lease {key} is unreadable: {exc}") from exc
        return AttemptLease(claim.holder, claim.at, claim.lease, int(entry.revision or 0))


def _ttl(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"
