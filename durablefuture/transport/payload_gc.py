"""When a payload object may go: markers, a grace period and a fence.

Who holds an object:

* a run, or a schedule, whose stored messages name it: the marker ``df.<ns>.ref.<name>.<holder>``
  written before the message is stored (:func:`~durablefuture.transport.payload_store.mark_refs`),
  purged when the run is removed;
* a dead letter whose full original was kept as an object (its ``Df-Original-Object`` header),
  or whose body names objects by reference (a refused signal's argument), until the dead
  letter itself is removed (:func:`dead_letter_holds`, bounded);
* a message still on its way: a client or worker that found the object stored did not store it
  again, and df-server marks it only when it handles the message. Nothing marks it yet, so the
  object is kept for a **grace period** (``ServerOptions.payload_grace``, an hour by default)
  after its last put, and a writer that finds its object puts it again (a new meta record, no
  chunks) once its newest put is older than
  :data:`~durablefuture.transport.payload_meta.TOUCH_AFTER`, a quarter of the grace.

The grace period alone cannot cover a message that waits longer than it (df-server down for a
day, a backlog): a **fence** makes that a clear refusal instead of a lost payload. The deleter
(:func:`collect`) finds no marker of the object, reads its newest meta record (its sequence in
the bucket's stream is the deletion's **cut**) and the chunks the records up to it name (the
first :data:`~durablefuture.transport.payload_meta.MAX_RECORDS` and the newest), and
appends a deletion marker ``df.<ns>.ref.<name>._deleting`` holding both (:class:`Deletion`),
only if no marker at all is there (an expected last sequence over ``ref.<name>.>``). It then
purges the records up to the cut and the chunks they name, then its own marker (up to its
sequence: a later deleter's marker stays). A record put after the cut, on chunks the marker
does not list, is a new upload, and no deleter of that marker touches it.

df-server, handling a message, first stores its markers, then reads the deletion marker, then
the object's records (:func:`admits`): with no deletion marker, a live record is needed; with
one, a record the marker **spares** (put after its cut, on chunks of its own); either record's
chunks still stored. Whatever the interleaving, either the deleter sees the new marker and keeps
the object, or the message is refused naming it, or the record it was admitted on is one no
deletion purges:

* the holder's marker comes first: the deleter's expected sequence fails, nothing is deleted;
* the deletion marker comes first and is still there: the message is admitted only on a spared
  record, which the deletion leaves (a copy of a record up to the cut, a touch, names a listed
  nuid: it is not spared);
* the deletion marker came first and is gone: its records and chunks were purged before it
  (a deleter that finishes another's deletion purges first, too), so what is left was put after
  the cut; a touch copying a purged record is found without its chunks.

A writer (``ObjectPayloads.put``) that finds a deletion marker counts only the records it spares
and otherwise uploads the bytes anew (new chunks, a new record past the cut), so a message sent
while a deletion is under way, or stopped, is admitted rather than refused again and again.
A refused message is answered so: a start or signal with the reason (and dead-lettered); a
worker's report is recorded as a failed attempt of its task (``MissingPayloadError``), whose
retry stores the payload anew; a child's outcome sent to its parent is recorded as the child's
failure (``server/missing_payloads.py``).

Only one deletion marker at a time: one younger than :data:`ABANDONED_AFTER` is left to its
deleter. An older one is taken for one a deleter left when it stopped (SIGKILL, or frozen: a
paused VM): a janitor finishes that deletion (up to its cut) and takes the marker away. A
frozen deleter that wakes up afterwards purges only up to its cut again (nothing is left there)
and only its own marker: an object stored and held again meanwhile stays. A marker with no cut
(an older df-server's) purges, and fences, every record.

The chunks a meta record names are purged only if they hold the bytes the object is named by:
anyone who may put objects may write a meta record naming another object's chunks.

Nothing else deletes objects: :func:`sweep` (the janitor, every half grace) collects objects
no one holds, such as those a run stopped naming within the grace, a dead letter's object
after the dead letter was removed, and uploads whose message never arrived; and the chunks no
meta record names (:mod:`durablefuture.transport.payload_sweep`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Collection

import nats.errors
from attrs import frozen
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from durablefuture.codec.claims import claim_names
from durablefuture.codec.jsapi import api_reply, api_request
from durablefuture.core.errors import TransportError
from durablefuture.transport.compaction import purge
from durablefuture.transport.payload_meta import (
    MAX_RECORDS,
    MetaRecord,
    has_chunks,
    newest_record,
    purge_object,
    records,
    stored_seconds,
)
from durablefuture.transport.payload_sweep import ReadLimit, read_all, sweep_chunks
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    Publisher,
    WrongLastSequence,
)
from durablefuture.transport.stored import Stored, leader_get
from durablefuture.transport.subjects import Layout
from durablefuture.transport.usage import stream_subjects

__all__ = [
    "ABANDONED_AFTER",
    "MAX_DEAD_LETTERS",
    "MAX_DEAD_LETTER_BYTES",
    "ORIGINAL_HEADER",
    "Deletion",
    "TooManyDeadLetters",
    "admits",
    "collect",
    "collect_released",
    "dead_letter_holds",
    "deletion",
    "deletions",
    "finish_deletions",
    "marked_objects",
    "sweep",
]

log = logging.getLogger(__name__)

ORIGINAL_HEADER = "Df-Original-Object"
"""On a dead letter cut to size: the payload object holding the whole original message."""
GET_TIMEOUT = 5.0
ABANDONED_AFTER = 300.0
"""Seconds after which a deletion marker is taken for one a deleter left when it stopped (a
deletion takes a few requests)."""
MAX_DEAD_LETTERS = 100_000
"""The most dead letters read for their holds in one sweep."""
MAX_DEAD_LETTER_BYTES = 256 * 1024 * 1024
"""The most bytes of dead letters (bodies and headers) read for their holds in one sweep."""
MAX_MARKER_BYTES = 4096
"""The largest deletion marker body read (its cut and at most MAX_RECORDS nuids)."""
_NAME = re.compile(r"^[0-9a-f]{64}$")
_NUID = re.compile(r"^[0-9A-Za-z]{1,64}$")


@frozen
class Deletion:
    """A deletion marker, as stored (its body checked: a marker is a hostile wire message
    like any other)."""

    seq: int
    stored_at: float
    cut: int | None
    """The last meta record (a sequence of the bucket's stream) the deletion purges; None:
    a marker that does not say (an older df-server's), which purges and fences everything."""
    chunks: frozenset[str]
    """The chunks (nuids) the records up to ``cut`` named when the marker was written."""

    def spares(self, record: MetaRecord) -> bool:
        """Whether ``record`` is a put made after the cut, on chunks of its own: the deleter
        leaves it."""
        return (
            self.cut is not None
            and record.live
            and record.seq > self.cut
            and record.nuid not in self.chunks
        )

    @classmethod
    def parse(cls, msg: Stored) -> Deletion:
        cut: int | None = None
        chunks: frozenset[str] = frozenset()
        try:
            body = api_reply(msg.data) if 0 < len(msg.data) <= MAX_MARKER_BYTES else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            c, n = body.get("cut"), body.get("chunks")
            names = n if isinstance(n, list) and len(n) <= MAX_RECORDS + 1 else [""]
            if isinstance(c, int) and c > 0 and all(_nuid(x) for x in names):
                cut, chunks = c, frozenset(names)
        return cls(msg.seq, stored_seconds(msg.time) or 0.0, cut, chunks)


def _nuid(x: object) -> bool:
    return isinstance(x, str) and _NUID.match(x) is not None


async def deletion(nc: NATS, layout: Layout, name: str) -> Deletion | None:
    """The deletion marker of object ``name`` (a deletion under way, or one stopped by a crash
    and finished by a janitor); None if there is none."""
    found = await leader_get(
        nc,
        layout.stream,
        {"last_by_subj": layout.payload_deleting(name)},
        f"the deletion marker of payload {name[:16]}...",
        GET_TIMEOUT,
    )
    return None if found is None else Deletion.parse(found)


async def admits(pub: Publisher, layout: Layout, name: str) -> bool:
    """Whether a message naming object ``name`` may be stored, its markers stored first: no
    deletion marker is there and the object has a live meta record, or a deletion marker is
    there and a record put after its cut (:meth:`Deletion.spares`); either record's chunks
    still stored. The marker is read before the records (see the module docstring)."""
    marker = await deletion(pub.nc, layout, name)
    bucket = layout.payloads_bucket
    newest = await newest_record(pub.nc, bucket, name)
    if newest is None:
        return False

    async def usable(record: MetaRecord) -> bool:
        kept = record.live if marker is None else marker.spares(record)
        return kept and await has_chunks(pub.nc, bucket, record, name)

    if await usable(newest):
        return True  # most messages: the older records are not read
    for record in await records(pub.nc, bucket, name):
        if record.seq != newest.seq and await usable(record):
            return True
    return False


async def collect(pub: Publisher, layout: Layout, name: str, *, grace: float, now: float) -> bool:
    """Delete object ``name`` if nothing holds it and its last put is older than ``grace``
    seconds (see the module docstring); returns whether it was deleted.

    A deletion marker older than :data:`ABANDONED_AFTER` was left by a deleter that stopped
    (a crash, or frozen): its deletion is finished, whatever marker came since (each belongs
    to a message that was refused, or that found a record put after the cut) and however
    lately the object was put (what was put after the cut stays). A younger one belongs to a
    deletion under way: it is left to its deleter.

    A dead letter's hold is not looked at here: the callers (:func:`sweep`,
    :func:`collect_released`) read those first and leave the objects they keep."""
    marker = await deletion(pub.nc, layout, name)
    if marker is not None:
        if now - marker.stored_at < ABANDONED_AFTER:
            return False  # a deletion under way
        return await _finish(pub, layout, name, marker)
    newest_ref = await leader_get(
        pub.nc,
        layout.stream,
        {"last_by_subj": layout.payload_refs(name)},
        f"the markers of payload {name[:16]}...",
        GET_TIMEOUT,
    )
    if newest_ref is not None:
        return False  # held by a run or a schedule
    bucket = layout.payloads_bucket
    newest = await newest_record(pub.nc, bucket, name)
    if newest is None or (newest.stored_at or 0.0) > now - grace:
        return False  # gone, or put lately: a message naming it may be on its way
    named = {r.nuid for r in await records(pub.nc, bucket, name, newest.seq)}
    chunks = sorted((named | {newest.nuid}) - {""})  # at most MAX_RECORDS + 1
    headers = {
        EXPECTED_LAST_SUBJECT_SEQ: "0",  # no marker at all: no holder, no deletion
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: layout.payload_refs(name),
    }
    body = api_request({"cut": newest.seq, "chunks": chunks})
    try:
        ack = await pub.publish(layout.payload_deleting(name), body, headers)
    except WrongLastSequence:
        return False  # a run marked it in the meantime, or another deleter came first
    return await _finish(pub, layout, name, Deletion(ack.seq, now, newest.seq, frozenset(chunks)))


async def _finish(pub: Publisher, layout: Layout, name: str, marker: Deletion) -> bool:
    """Purge what ``marker`` deletes (the records up to its cut, and their chunks), then the
    marker, and no deletion marker stored after it (another deleter's)."""
    deleted = await purge_object(pub.nc, layout.payloads_bucket, name, marker.cut)
    await purge(pub.nc, layout.stream, layout.payload_deleting(name), below_seq=marker.seq + 1)
    if deleted:
        log.debug("deleted payload object %s", name)
    return deleted


class TooManyDeadLetters(TransportError):
    """More dead letters than :data:`MAX_DEAD_LETTERS`: what they keep is not known."""


async def dead_letter_holds(js: JetStreamContext, layout: Layout) -> set[str]:
    """The objects dead letters keep: the object holding a cut original (its
    ``Df-Original-Object`` header) and those its body names by reference (a refused start's or
    signal's arguments), so that the dead letter can be sent again.

    Every dead letter is read whole (each at most the server's max message size); past
    :data:`MAX_DEAD_LETTERS` of them or :data:`MAX_DEAD_LETTER_BYTES` in all, raises
    :class:`TooManyDeadLetters`: what the others keep is not known, so the callers delete
    nothing (the sweep skips the objects until fewer dead letters are kept)."""
    held: set[str] = set()
    try:
        async for msg in read_all(
            js,
            layout.stream,
            layout.dead_letters(),
            max_msgs=MAX_DEAD_LETTERS,
            max_bytes=MAX_DEAD_LETTER_BYTES,
        ):
            name = (msg.headers or {}).get(ORIGINAL_HEADER, "")
            if _NAME.match(name):
                held.add(name)
            held |= claim_names(msg.data)
    except ReadLimit as exc:
        raise TooManyDeadLetters(
            f"more than {MAX_DEAD_LETTERS:,} dead letters or {MAX_DEAD_LETTER_BYTES:,} bytes of "
            f"them in {layout.stream} ({exc}): payload objects are not swept until fewer are "
            "kept (remove those dealt with)"
        ) from exc
    return held


async def sweep(pub: Publisher, layout: Layout, *, grace: float, now: float) -> int:
    """Delete every object of the namespace's bucket nothing holds (one meta record read and
    one marker read an object), after the chunks no meta record names
    (:func:`~durablefuture.transport.payload_sweep.sweep_chunks`); returns how many objects
    and chunk subjects went."""
    js = pub.js
    bucket = layout.payloads_bucket
    prefix = f"$O.{bucket}.M."
    deleted = await sweep_chunks(pub, layout, grace=grace, now=now)
    try:
        subjects = await stream_subjects(js, f"OBJ_{bucket}", f"{prefix}>")
        held = await dead_letter_holds(js, layout)
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"listing the payload objects of {bucket}: {exc}") from exc
    names = set()
    for subject in subjects:
        try:
            names.add(base64.urlsafe_b64decode(subject[len(prefix) :]).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue
    names |= await deletions(js, layout)  # a crash may have stopped one after the purge
    for name in sorted(names):
        if _NAME.match(name) and name not in held:
            deleted += await collect(pub, layout, name, grace=grace, now=now)
    if deleted:
        log.info("deleted %d payload objects and chunks nothing refers to", deleted)
    return deleted


async def collect_released(
    pub: Publisher, layout: Layout, names: Collection[str], *, grace: float, now: float
) -> int:
    """Delete those of ``names`` (the objects a removed run named) nothing holds any more,
    as :func:`sweep` does: an object a dead letter keeps stays. The dead letters are read once
    for all of ``names``, bounded as the sweep's read; past :data:`MAX_DEAD_LETTERS` of them
    nothing is deleted here (the sweep keeps them too, until fewer are kept). Returns how
    many went."""
    if not names:
        return 0
    try:
        held = await dead_letter_holds(pub.js, layout)
    except TooManyDeadLetters as exc:
        log.warning("%s; the objects of a removed run are kept", exc)
        return 0
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading the dead letters of {layout.stream}: {exc}") from exc
    deleted = 0
    for name in sorted(set(names) - held):
        deleted += await collect(pub, layout, name, grace=grace, now=now)
    return deleted


async def marked_objects(js: JetStreamContext, layout: Layout, markers: str) -> set[str]:
    """The objects named by the marker subjects (``df.<ns>.ref.<name>.<holder>``) that
    ``markers`` matches; names that are no object's left out."""
    subjects = await stream_subjects(js, layout.stream, markers)
    return {name for name in (s.split(".")[-2] for s in subjects) if _NAME.match(name)}


async def deletions(js: JetStreamContext, layout: Layout) -> set[str]:
    """The objects with a deletion marker: deletions under way, or left half-done."""
    return await marked_objects(js, layout, layout.payload_deleting("*"))


async def finish_deletions(pub: Publisher, layout: Layout, *, grace: float, now: float) -> int:
    """Do again the deletions left half-done (their marker is older than
    :data:`ABANDONED_AFTER`); returns how many objects went. The janitor runs it between
    sweeps, so that a crash mid-deletion refuses the messages naming the object for minutes,
    not until the next sweep."""
    deleted = 0
    for name in sorted(await deletions(pub.js, layout)):
        deleted += await collect(pub, layout, name, grace=grace, now=now)
    return deleted
