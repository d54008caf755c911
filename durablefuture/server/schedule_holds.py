"""The payload objects a schedule holds: marked with each state record, released when the
record stops naming them and when the schedule is deleted.

A schedule marks the objects its state record names (its action's arguments, when large)
under the holder token :func:`~durablefuture.transport.payload_store.schedule_holder` before the
record is written, as a run does before its history (``transport/payload_gc.py``):

- A record written names objects the one before it did not (a create, an update of the
  arguments): each gets a marker under a message id of its own. The usual marker's id
  (``ref:<object>:<holder>``) is deduplicated by JetStream for two minutes even after that
  marker was purged, so an update back to arguments dropped a moment ago, or a schedule
  created again right after its deletion, would otherwise be left with no marker at all.
- Once a record is written, the markers of the objects it no longer names are purged, only
  below its stream sequence: a marker another df-server wrote since, for a record that
  followed this one, stays. (df-server killed in between, or the purge failing: those markers
  stay until the arguments change again or the schedule is deleted.)
- Deleting a schedule purges all its markers (every object a marker of it names, whichever
  record it was written for), then deletes the objects nothing else holds, as a run's removal
  does (one put within the grace period goes with a later sweep); the state record is deleted
  after that, so a deletion stopped part way is done again whole when its input comes back.
"""

from __future__ import annotations

import logging
import time
import uuid

from durablefuture.codec.claims import claim_names
from durablefuture.core.errors import TransportError
from durablefuture.transport.compaction import purge
from durablefuture.transport.payload_gc import collect_released, marked_objects
from durablefuture.transport.payload_store import mark_refs, schedule_holder
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.schedule_store import ScheduleStore
from durablefuture.transport.subjects import Layout

__all__ = ["mark_schedule", "marked_by", "release_schedule", "release_stale", "save_held"]

log = logging.getLogger("durablefuture.schedules")


async def save_held(
    pub: Publisher,
    layout: Layout,
    store: ScheduleStore,
    schedule_id: str,
    data: bytes,
    before: bytes,
    seq: int,
) -> int:
    """Write state record ``data`` in place of ``before`` (expecting stream sequence ``seq``;
    b"": none), marking the objects it names first and releasing those it no longer names
    after; its stream sequence."""
    await mark_schedule(pub, layout, schedule_id, data, before)
    written = await store.save(schedule_id, data, seq)
    try:
        await release_stale(pub, layout, schedule_id, data, before, written)
    except TransportError as exc:  # the record is written: its step goes on
        log.warning("schedule %s: the markers of its former arguments stay: %s", schedule_id, exc)
    return written


async def mark_schedule(
    pub: Publisher, layout: Layout, schedule_id: str, data: bytes, before: bytes
) -> None:
    """Mark the objects state record ``data`` names, before it is written (``before``: the
    record it replaces, b"" for none); raises ``MissingPayloadError`` when one is gone."""
    holder = schedule_holder(schedule_id)
    added = sorted(claim_names(data) - claim_names(before))
    nonce = uuid.uuid4().hex
    sends = [
        await pub.send(layout.payload_ref(name, holder), b"", {MSG_ID: f"ref:{name}:{nonce}"})
        for name in added
    ]
    for sent in sends:
        await sent
    # the usual markers, then the check that each object is there and not being deleted
    await mark_refs(pub, layout, holder, data)


async def release_stale(
    pub: Publisher, layout: Layout, schedule_id: str, data: bytes, before: bytes, seq: int
) -> None:
    """Record ``data`` is written at stream sequence ``seq`` in place of ``before``: purge the
    markers, written before it, of the objects it no longer names (the next sweep deletes
    them if nothing else holds them)."""
    names = claim_names(data)
    if claim_names(before) == names:
        return
    holder = schedule_holder(schedule_id)
    for name in sorted(await marked_by(pub, layout, holder) - names):
        await purge(pub.nc, layout.stream, layout.payload_ref(name, holder), below_seq=seq)


async def release_schedule(
    pub: Publisher, layout: Layout, schedule_id: str, data: bytes, grace: float
) -> int:
    """Schedule ``schedule_id`` (state record ``data``) is being deleted: purge its markers
    and delete the objects nothing else holds; returns how many went."""
    holder = schedule_holder(schedule_id)
    names = claim_names(data) | await marked_by(pub, layout, holder)
    if not names:
        return 0
    await purge(pub.nc, layout.stream, layout.payload_refs_of_run(holder))
    return await collect_released(pub, layout, names, grace=grace, now=time.time())


async def marked_by(pub: Publisher, layout: Layout, holder: str) -> set[str]:
    """The objects ``holder`` has a marker of."""
    return await marked_objects(pub.js, layout, layout.payload_refs_of_run(holder))
