"""Reading and appending run histories.

A run's history lives on subject ``df.<ns>.h.<workflow>.<run>``: one message per recorded batch (the
events one input produced, plus that input's id). Appends carry the stream sequence of the last
batch the writer saw as ``Nats-Expected-Last-Subject-Sequence``, so two writers can never both
extend the same history; a new run is created with the same check over *all* runs of the workflow id
(``...-Subject: df.<ns>.h.<workflow>.>``), which makes "one running run per workflow id" atomic.
``Nats-Msg-Id`` (``<run>:<first event id>``) makes a retried append idempotent; an append whose
outcome is unknown (a timeout) is decided by reading the subject's last message back, never guessed.
A PubAck marked ``duplicate`` is read back too: on a clustered stream the message-id check comes
before the expected-sequence check, so a rival writer at the same position is told "duplicate", not
"wrong last sequence"; and a message id that someone else used first, elsewhere in the stream, is
"duplicate" too (nothing was appended: it is sent again under a fresh id, ``transport/dedup.py``).

Reads never skip a message. One that is not a valid batch, or whose events do not follow from
the ones before it, raises :class:`CorruptHistoryError` naming its stream sequence and why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from attrs import define
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from durablefuture.codec.claims import PayloadStore
from durablefuture.codec.jsapi import api_request
from durablefuture.codec.wire import BatchPayloads, Codec
from durablefuture.core import events as ev
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    InvalidArgumentError,
    PayloadError,
    TransportError,
    WorkflowNotFoundError,
)
from durablefuture.core.state import RunState
from durablefuture.transport.dedup import TRIES, fresh_id, is_copy, log_taken, stored_at, taken
from durablefuture.transport.payload_store import mark_refs
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    Publisher,
    WrongLastSequence,
)
from durablefuture.transport.stored import Stored, leader_get, newest
from durablefuture.transport.subjects import Layout
from durablefuture.transport.translate import translated

__all__ = ["Batch", "HistoryStore", "LastBatch", "Stored", "corrupt", "direct_batch", "fold"]


@define
class Batch:
    """One stored history message."""

    stream_seq: int
    input_id: str
    events: list[ev.Event]
    size: int = 0  # bytes of the stored message


@define
class LastBatch:
    """The newest history message of a workflow id (any run)."""

    subject: str
    run_id: str
    batch: Batch


def corrupt(workflow_id: str, run_id: str, stream_seq: int, reason: str) -> CorruptHistoryError:
    """The error for a history message that cannot be used, with what to do about it."""
    return CorruptHistoryError(
        f"the history of workflow {workflow_id!r} run {run_id} is corrupt at stream sequence "
        f"{stream_seq}: {reason}. History is never skipped, so the run stops here and inputs "
        "for it are dead-lettered. df-server did not write that message in this form (something "
        "else published on the run's history subject, or the store is damaged); remove it "
        f"(`nats stream rmm <stream> {stream_seq}`) to make the run readable again",
        workflow_id=workflow_id,
        run_id=run_id,
        stream_seq=stream_seq,
        reason=reason,
    )


def fold(
    workflow_id: str, run_id: str, batches: Sequence[Batch], state: RunState | None = None
) -> RunState:
    """Fold ``batches`` into ``state`` (a new state if None), batch by batch.

    A batch whose events do not follow from the ones before raises CorruptHistoryError naming
    its stream sequence. ``state`` is left partly folded then: drop it. No batches and no
    ``state``: WorkflowNotFoundError.
    """
    for b in batches:
        try:
            if state is None:
                state = RunState.from_history([(b.input_id, b.events)])
            else:
                state.apply(b.events, b.input_id)
        except Exception as exc:
            raise corrupt(workflow_id, run_id, b.stream_seq, _reason(exc)) from None
    if state is None:
        raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run_id}")
    return state


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"an event names command #{exc.args[0]!r}, which history never issued"
    return str(exc) or type(exc).__name__


class HistoryStore:
    def __init__(self, nc: NATS, publisher: Publisher, layout: Layout, codec: Codec) -> None:
        self.nc = nc
        self.pub = publisher
        self.layout = layout
        self.codec = codec

    # ------------------------------------------------------------------ reading
    # Direct gets are fast and batched, but any replica of an R3 stream may answer them, one
    # that has not applied the newest writes yet included (measured: ~1% of reads right after
    # a write on a healthy 3-node cluster; more while a node catches up). A replica's store is
    # a prefix of the leader's, so a direct read is complete only if it reaches a sequence
    # known to exist; whatever it misses is read from the stream leader (STREAM.MSG.GET).
    # Single "last message" reads always ask the leader. Decisions are only ever made on
    # complete reads: a stale one made df-server refuse to start the next run of a
    # continue-as-new, and workers acknowledge workflow tasks they replayed without their
    # trigger event.

    async def read(
        self, workflow_id: str, run_id: str, after_seq: int = 0, *, through: int | None = None
    ) -> list[Batch]:
        """All batches of a run stored after stream sequence ``after_seq``.

        ``through`` is a stream sequence the caller knows the run's history reaches (say, the
        one a workflow task was dispatched at); without it, the leader is asked for it first.
        """
        subject = self.layout.history(workflow_id, run_id)
        stored = await self._read(subject, after_seq, through)
        batches = [self._batch(m) for m in stored]
        _check_order(workflow_id, run_id, batches, from_start=after_seq == 0)
        for b, m in zip(batches, stored, strict=True):
            if self.codec.refers(m.data):  # a client's or worker's read: fetch large payloads
                b.events = await self.codec.resolve_events(b.events)
        return batches

    async def raw(self, workflow_id: str, run_id: str) -> list[bytes]:
        """The run's history messages as stored (for an archive)."""
        stored = await self._read(self.layout.history(workflow_id, run_id), 0, None)
        return [m.data for m in stored]

    async def decode_raw(
        self,
        workflow_id: str,
        run_id: str,
        raw: list[bytes],
        objects: PayloadStore | None = None,
    ) -> list[ev.Event]:
        """The events of history messages read from an archive, checked as a stream read is.

        References are fetched from ``objects`` (the archive's payload objects: a missing or
        altered one raises ``PayloadError``), else from the payload bucket while they last."""
        subject = self.layout.history(workflow_id, run_id)
        batches = [self._batch(Stored(subject, i + 1, {}, b)) for i, b in enumerate(raw)]
        _check_order(workflow_id, run_id, batches, from_start=True)
        events = [e for b in batches for e in b.events]
        if objects is not None:
            return await self.codec.with_store(objects).resolve_events(events)
        with contextlib.suppress(PayloadError):
            events = await self.codec.resolve_events(events)
        return events

    async def read_workflow(self, workflow_id: str, after_seq: int = 0) -> list[tuple[str, Batch]]:
        """Every run's batches of ``workflow_id`` stored after ``after_seq``, as (run id, batch)."""
        msgs = await self._read(self.layout.history_of_workflow(workflow_id), after_seq, None)
        return [(m.subject.rsplit(".", 1)[-1], self._batch(m)) for m in msgs]

    async def find_input(self, workflow_id: str, input_id: str, after_seq: int) -> str | None:
        """The run of ``workflow_id`` with a batch recorded for ``input_id`` after stream
        sequence ``after_seq`` (None if there is none). Reads only what was stored since."""
        for run_id, batch in await self.read_workflow(workflow_id, after_seq):
            if batch.input_id == input_id:
                return run_id
        return None

    async def _read(self, subject: str, after_seq: int, through: int | None) -> list[Stored]:
        if through is None:
            last = await self._leader_get({"last_by_subj": subject}, subject)
            through = 0 if last is None else last.seq
        if through <= after_seq:
            return []
        msgs = [
            Stored.of(m)
            for m in await direct_batch(
                self.nc, self.layout.stream, subject, after_seq + 1, self.pub.timeout
            )
        ]
        have = msgs[-1].seq if msgs else after_seq
        if have < through:  # answered by a replica that is behind: the rest from the leader
            msgs += await self._leader_after(subject, have)
        return msgs

    async def _leader_after(self, subject: str, seq: int) -> list[Stored]:
        out: list[Stored] = []
        for _ in range(1_000_000):  # bounded: a history is far shorter
            m = await self._leader_get({"seq": seq + 1, "next_by_subj": subject}, subject)
            if m is None:
                return out
            out.append(m)
            seq = m.seq
        raise TransportError(f"reading {subject}: more than 1,000,000 messages")

    async def _leader_get(self, request: dict[str, object], subject: str) -> Stored | None:
        """One message from the stream leader (STREAM.MSG.GET); None if there is none."""
        nc, pub, stream = self.nc, self.pub, self.layout.stream  # answered on pub's inbox
        return await leader_get(nc, stream, request, subject, pub.timeout, pub.replies)

    def _batch(self, m: Stored, payloads: BatchPayloads = "all") -> Batch:
        try:
            input_id, events = self.codec.decode_batch(m.data, payloads)
        except DecodeError as exc:
            workflow_id, run_id = self.layout.parse_history(m.subject)
            raise corrupt(workflow_id, run_id, m.seq, str(exc)) from None
        return Batch(m.seq, input_id, events, len(m.data))

    async def last_of_workflow(self, workflow_id: str) -> LastBatch | None:
        """The newest batch over every run of ``workflow_id`` (None if the id is unused)."""
        subject = self.layout.history_of_workflow(workflow_id)
        m = await self._leader_get({"last_by_subj": subject}, subject)
        if m is None:
            return None
        return LastBatch(m.subject, m.subject.rsplit(".", 1)[-1], self._batch(m))

    async def last_seq(self, workflow_id: str, run_id: str) -> int:
        """Stream sequence of the run's newest batch (0 if the run has none)."""
        subject = self.layout.history(workflow_id, run_id)
        m = await self._leader_get({"last_by_subj": subject}, subject)
        return 0 if m is None else m.seq

    async def last_event_id(self, workflow_id: str, run_id: str) -> int:
        """Id of the run's newest event, i.e. how many events it has (0 if none); one get."""
        subject = self.layout.history(workflow_id, run_id)
        m = await self._leader_get({"last_by_subj": subject}, subject)
        events = self._batch(m, payloads="none").events if m is not None else []
        return events[-1].event_id if events else 0

    async def last_batch(
        self, workflow_id: str, run_id: str, payloads: BatchPayloads = "all", direct: bool = False
    ) -> Batch | None:
        """The run's newest batch, in one get (None if none); payloads as ``decode_batch``."""
        subject = self.layout.history(workflow_id, run_id)
        m = await newest(self.pub, self.layout.stream, subject, direct)
        return None if m is None else self._batch(m, payloads)

    async def first_batch(self, workflow_id: str, run_id: str) -> Batch | None:
        subject = self.layout.history(workflow_id, run_id)
        m = await self._leader_get({"seq": 1, "next_by_subj": subject}, subject)
        return None if m is None else self._batch(m)

    # ------------------------------------------------------------------ appending

    async def append(
        self,
        workflow_id: str,
        run_id: str,
        input_id: str,
        events: Sequence[ev.Event],
        expected_seq: int,
        *,
        whole_workflow: bool = False,
    ) -> int:
        """Append a batch (see :meth:`append_sized`); returns its stream sequence."""
        seq, _ = await self.append_sized(
            workflow_id, run_id, input_id, events, expected_seq, whole_workflow=whole_workflow
        )
        return seq

    async def append_sized(
        self,
        workflow_id: str,
        run_id: str,
        input_id: str,
        events: Sequence[ev.Event],
        expected_seq: int,
        *,
        whole_workflow: bool = False,
        sent: Callable[[], Awaitable[None]] | None = None,
        refs_marked: bool = False,
        data: bytes | None = None,
    ) -> tuple[int, int]:
        """Append a batch if the history's last sequence is still ``expected_seq``.

        ``whole_workflow``: checked over every run of the workflow id (creates a run);
        ``refs_marked``: :func:`mark_refs` was run; ``sent``: run once sent, before the PubAck;
        ``data``: ``codec.encode_batch(input_id, events)`` if the caller has it. Returns (stream
        sequence, bytes); raises :class:`WrongLastSequence`, or ``MessageIdTakenError`` when
        others keep taking its message ids (nothing appended)."""
        if not events:
            raise InvalidArgumentError("append needs at least one event")
        subject = self.layout.history(workflow_id, run_id)
        msg_id = f"{run_id}:{events[0].event_id}"
        headers = {MSG_ID: msg_id, EXPECTED_LAST_SUBJECT_SEQ: str(expected_seq)}
        if whole_workflow:
            every_run = self.layout.history_of_workflow(workflow_id)
            headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = every_run
        data = self.codec.encode_batch(input_id, list(events)) if data is None else data
        if not refs_marked:
            await mark_refs(self.pub, self.layout, run_id, data)
        for _ in range(TRIES):  # a fresh message id only after the last one was taken
            try:
                pending = await self.pub.send(subject, data, headers)
                if sent is not None:
                    await sent()
                sent, ack = None, await pending
                if not ack.duplicate:
                    return int(ack.seq), len(data)
                stored = await stored_at(self.pub, ack)
                if is_copy(stored, subject, data, headers):
                    return int(ack.seq), len(data)  # our own append, sent again
                if stored is not None and stored.subject == subject:
                    # On a clustered (R3) stream JetStream checks the message id before the
                    # expected sequence: a rival's append at the same position comes back as
                    # a duplicate of the winner's message, not as a conflict.
                    raise WrongLastSequence(subject, expected_seq, int(ack.seq))
                # The id is held by a message elsewhere in the stream (squatted) or by none:
                # nothing was appended. The expected-sequence header keeps the append single
                # under any id, so append again under a fresh one.
                log_taken("a history append", subject, headers[MSG_ID], ack, stored)
                headers[MSG_ID] = fresh_id(msg_id)
            except WrongLastSequence:
                landed = await self._landed(subject, msg_id, data)
                if landed is not None:
                    return landed, len(data)  # a retry of our own append that had succeeded
                raise
            except TransportError:
                # Outcome unknown: read back instead of guessing.
                landed = await self._landed(subject, msg_id, data)
                if landed is not None:
                    return landed, len(data)
                raise
        raise taken("a history append", subject, msg_id)

    async def _landed(self, subject: str, msg_id: str, data: bytes) -> int | None:
        """The stream sequence of our append if it is the subject's last message, else None.

        The message id names a position (run and first event id), which another writer may
        have filled with different events: only the exact same bytes count as ours (under
        ``msg_id`` or, after it was taken by someone else, ``msg_id`` with a fresh suffix).
        """
        try:
            m = await self._leader_get({"last_by_subj": subject}, subject)
        except TransportError:
            return None
        if m is None:
            return None
        stored_id = m.headers.get(MSG_ID, "")
        if (stored_id == msg_id or stored_id.startswith(msg_id + ":")) and m.data == data:
            return m.seq
        return None


def _check_order(
    workflow_id: str, run_id: str, batches: Sequence[Batch], *, from_start: bool
) -> None:
    """Event ids must run on by one, from 1 (WorkflowStarted) when read from the start."""
    expected = 1 if from_start else None
    for b in batches:
        for e in b.events:
            if expected is not None and e.event_id != expected:
                raise corrupt(
                    workflow_id,
                    run_id,
                    b.stream_seq,
                    f"expected event {expected}, found event {e.event_id} "
                    f"({type(e).__name__}); the history is out of order",
                )
            if e.event_id == 1 and not isinstance(e, ev.WorkflowStarted):
                raise corrupt(
                    workflow_id,
                    run_id,
                    b.stream_seq,
                    f"event 1 is {type(e).__name__}, not WorkflowStarted",
                )
            expected = e.event_id + 1


async def direct_batch(
    nc: NATS,
    stream: str,
    subject: str,
    start_seq: int,
    timeout: float,
    *,
    batch: int = 1000,
    what: str = "reading history",
) -> list[Msg]:
    """Every message of ``stream`` on ``subject`` (wildcards allowed) from ``start_seq`` on,
    read with batched direct gets (no consumer)."""
    out: list[Msg] = []
    seq = start_seq
    api = f"$JS.API.DIRECT.GET.{stream}"
    while True:
        inbox = nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def _cb(m: Msg, queue: asyncio.Queue[Msg] = queue) -> None:
            queue.put_nowait(m)

        with translated(f"{what} {subject}"):
            sub = await nc.subscribe(inbox, cb=_cb)
        try:
            req = api_request({"seq": seq, "next_by_subj": subject, "batch": batch})
            with translated(f"{what} {subject}"):
                await nc.publish(api, req, reply=inbox)
            more = False
            got = 0
            last = seq - 1
            while True:
                try:
                    m = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise TransportError(
                        f"{what} {subject}: no answer from JetStream within {timeout:g}s"
                    ) from None
                status = m.headers.get("Status") if m.headers else None
                if status == "204":  # end of batch
                    more = (m.headers or {}).get("Nats-Num-Pending", "0") not in ("", "0")
                    break
                if status == "404":
                    break
                if status:
                    desc = (m.headers or {}).get("Description", "")
                    raise TransportError(f"{what} {subject}: {status} {desc}")
                out.append(m)
                got += 1
                last = int((m.headers or {}).get("Nats-Sequence", last))
        finally:
            with contextlib.suppress(Exception):  # a closed connection dropped it already
                await sub.unsubscribe()
        if not more or got == 0:
            return out
        seq = last + 1
