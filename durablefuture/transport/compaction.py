"""Removing acknowledged work from a namespace's stream.

The stream keeps histories (limits retention) next to work messages: server inputs
(``in.*``), workflow and activity tasks (``wt.*``, ``at.*``), schedule inputs (``sci.*``) and
removals of closed runs (``rm.*``).
Each work subject is read by exactly one durable consumer, shared by every process that serves
it. Once that consumer's acknowledgement floor has passed a message, the message has been
handled for good (persist, then ack), nobody reads it again, and it is only residue: it is
purged, per consumer filter, up to the floor.

What makes it safe:

* only subjects of the work kinds are ever purged (never a history, a schedule's state or a
  dead letter), whatever consumers exist;
* the floor of a subject is the lowest floor of *every* consumer whose filter overlaps it (a
  consumer on the whole stream, or someone's extra consumer on a task queue, holds it back);
* the floor only counts messages acknowledged (or terminated after being dead-lettered); a
  message in flight, waiting for redelivery or never delivered is above it. A crash of
  df-server at any moment leaves at most a purge undone; a purge is idempotent and any number
  of servers may run it at once.

What nats-server reports is not taken on trust: a purge past an unacknowledged task would lose
it for good, with nothing left to redeliver, and replicated consumers have misreported across
leader changes (a leader's floor skipped ahead of the replicated one, nats-server PR 6232;
deliveries a new leader never learnt of, PR 6469; both fixed in 2.11):

* a consumer's floor counts only as far as what it reports delivered: an acknowledgement
  floor above its delivered sequence is inconsistent, and only the delivered part of it can
  have been acknowledged;
* a floor is purged up to only once it has been reported in two rounds in a row, and then up
  to the lower of the two (``confirmed``). A floor that jumps ahead for a moment (a consumer
  leader answering from a state the next leader does not have) is not acted on; a floor
  that drops (a consumer deleted and created again, a leader with an older state) stops the
  purges at once. Acknowledged work is removed one round (``compact_interval``, 1 s) later
  than it would be otherwise: the stream stays bounded by the same work, one round more.

Message ids stay in JetStream's duplicate window after a purge, so a publish derived again
within the window is still recognised as a duplicate, by the servers that saw it stored: a
nats-server restarted since rebuilds its window from the messages still stored, and may store
such a publish again (a second copy of a finished task, which its worker finds closed).
"""

from __future__ import annotations

import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo

from durablefuture.core.errors import TransportError
from durablefuture.transport.guard import check_subject
from durablefuture.transport.stored import call_api, error_text
from durablefuture.transport.subjects import Layout

__all__ = [
    "WORK_KINDS",
    "Compactor",
    "acknowledged",
    "confirmed",
    "filters_of",
    "floors",
    "is_work_subject",
    "overlaps",
    "purge",
]

log = logging.getLogger(__name__)

WORK_KINDS = frozenset({"in", "wt", "at", "sci", "rm"})
"""The subject kinds (third token, ``df.<ns>.<kind>``) whose acknowledged messages are residue."""


def overlaps(a: str, b: str) -> bool:
    """Whether some subject matches both NATS subject patterns ``a`` and ``b``."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return False
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return True


def is_work_subject(layout: Layout, pattern: str) -> bool:
    """Whether every subject ``pattern`` matches is a work subject of the namespace."""
    tokens = pattern.split(".")
    head = layout.prefix.split(".")
    if len(tokens) < len(head) + 2 or tokens[: len(head)] != head:
        return False
    return tokens[len(head)] in WORK_KINDS


def filters_of(info: ConsumerInfo) -> list[str]:
    """A consumer's filter subjects (``[">"]``: the whole stream)."""
    config = info.config
    many = list(getattr(config, "filter_subjects", None) or [])
    one = config.filter_subject
    out = many + ([one] if one else [])
    return out or [">"]


def acknowledged(info: ConsumerInfo) -> int:
    """The stream sequence up to which a consumer has acknowledged every message it reads:
    its acknowledgement floor, but never above what it reports delivered (0: not known)."""
    floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
    return min(floor, delivered)


def floors(layout: Layout, consumers: list[ConsumerInfo]) -> dict[str, int]:
    """Per work filter, the stream sequence up to which every overlapping consumer has
    acknowledged (pure: what :meth:`Compactor.run_once` purges, once ``confirmed``)."""
    per_consumer = [(filters_of(c), acknowledged(c)) for c in consumers]
    out: dict[str, int] = {}
    for filters, floor in per_consumer:
        for f in filters:
            if not is_work_subject(layout, f):
                continue
            lowest = floor
            for others, other_floor in per_consumer:
                if any(overlaps(f, o) for o in others):
                    lowest = min(lowest, other_floor)
            out[f] = min(out.get(f, lowest), lowest)
    return {f: n for f, n in out.items() if n > 0}


def confirmed(previous: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    """The floors of this round that the previous round reported too, each at the lower of
    the two (pure; see the module docstring)."""
    out = {f: min(n, previous[f]) for f, n in now.items() if f in previous}
    return {f: n for f, n in out.items() if n > 0}


class Compactor:
    """Purges acknowledged work messages of one namespace (see the module docstring)."""

    def __init__(self, nc: NATS, layout: Layout) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.layout = layout
        self._done: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        """The floors the previous round read."""
        self.purged = 0

    async def consumers(self) -> list[ConsumerInfo]:
        out: list[ConsumerInfo] = []
        try:
            for _ in range(10_000):  # bounded: 256 per page
                page = await self.js.consumers_info(self.layout.stream, offset=len(out))
                if not page:
                    break
                out += page
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"listing the consumers of {self.layout.stream}: {exc}") from exc
        return out

    async def run_once(self) -> int:
        """Purge what every consumer has acknowledged; returns how many messages went."""
        total = 0
        now = floors(self.layout, await self.consumers())
        ready, self._seen = confirmed(self._seen, now), now
        for subject, floor in ready.items():
            if self._done.get(subject, 0) >= floor:
                continue
            # purge the messages *below* floor + 1: up to and including the floor
            total += await purge(self.nc, self.layout.stream, subject, below_seq=floor + 1)
            self._done[subject] = floor
        self.purged += total
        if total:
            log.debug("purged %d acknowledged work messages", total)
        return total


async def purge(
    nc: NATS, stream: str, subject: str, *, below_seq: int = 0, timeout: float = 10.0
) -> int:
    """Purge ``subject`` (wildcards allowed) from ``stream``, only below stream sequence
    ``below_seq`` when given; returns how many messages went."""
    api = check_subject(f"$JS.API.STREAM.PURGE.{stream}", "stream name")
    request: dict[str, object] = {"filter": subject}
    if below_seq:
        request["seq"] = below_seq
    body, _ = await call_api(nc, api, request, f"purging {subject}", timeout)
    error = body.get("error")
    if error is not None:
        raise TransportError(f"purging {subject}: {error_text(error)}")
    return int(body.get("purged", 0) or 0)
