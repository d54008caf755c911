"""Reading and appending run histories.

A run's history lives on subject ``df.<ns>.h.<workflow>.<run>``: one message per recorded batch
(the events one input produced, plus that input's id). Appends carry
``Nats-Expected-Last-Subject-Sequence`` = the stream sequence of the last batch the writer saw,
so two writers can never both extend the same history; a new run is created with the same check
over *all* runs of the workflow id (``...-Subject: df.<ns>.h.<workflow>.>``), which makes "one
running run per workflow id" atomic. ``Nats-Msg-Id`` (``<run>:<first event id>``) makes a
retried append idempotent; when an append's outcome is unknown (timeout), the subject's last
message is read back to decide, never guessed. A PubAck marked ``duplicate`` is read back too:
on a clustered stream the message-id check comes before the expected-sequence check, so a rival
writer at the same position is told "duplicate", not "wrong last sequence".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from attrs import define
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from durablefuture.codec.wire import Codec
from durablefuture.core import events as ev
from durablefuture.core.errors import TransportError
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    Publisher,
    WrongLastSequence,
)
from durablefuture.transport.subjects import Layout

__all__ = ["Batch", "HistoryStore", "LastBatch", "direct_batch"]


@define
class Batch:
    """One stored history message."""

    stream_seq: int
    input_id: str
    events: list[ev.Event]


@define
class LastBatch:
    """The newest history message of a workflow id (any run)."""

    subject: str
    run_id: str
    batch: Batch


class HistoryStore:
    def __init__(self, nc: NATS, publisher: Publisher, layout: Layout, codec: Codec) -> None:
        self.nc = nc
        self.pub = publisher
        self.layout = layout
        self.codec = codec

    # ------------------------------------------------------------------ reading

    async def read(self, workflow_id: str, run_id: str, after_seq: int = 0) -> list[Batch]:
        """All batches of a run stored after stream sequence ``after_seq`` (direct batch get)."""
        subject = self.layout.history(workflow_id, run_id)
        msgs = await self._direct_batch(subject, after_seq + 1)
        return [self._batch(m) for m in msgs]

    async def read_workflow(self, workflow_id: str, after_seq: int = 0) -> list[tuple[str, Batch]]:
        """Every run's batches of ``workflow_id`` stored after ``after_seq``, as (run id, batch)."""
        msgs = await self._direct_batch(self.layout.history_of_workflow(workflow_id), after_seq + 1)
        return [
            ((m.headers or {}).get("Nats-Subject", "").rsplit(".", 1)[-1], self._batch(m))
            for m in msgs
        ]

    async def find_input(self, workflow_id: str, input_id: str, after_seq: int) -> str | None:
        """The run of ``workflow_id`` with a batch recorded for ``input_id`` after stream
        sequence ``after_seq`` (None if there is none). Reads only what was stored since."""
        for run_id, batch in await self.read_workflow(workflow_id, after_seq):
            if batch.input_id == input_id:
                return run_id
        return None

    async def _direct_batch(self, subject: str, start_seq: int, batch: int = 1000) -> list[Msg]:
        return await direct_batch(
            self.nc, self.layout.stream, subject, start_seq, self.pub.timeout, batch=batch
        )

    def _batch(self, m: Msg) -> Batch:
        seq = int((m.headers or {}).get("Nats-Sequence", "0"))
        input_id, events = self.codec.decode_batch(m.data)
        return Batch(seq, input_id, events)

    async def last_of_workflow(self, workflow_id: str) -> LastBatch | None:
        """The newest batch over every run of ``workflow_id`` (None if the id is unused)."""
        subject = self.layout.history_of_workflow(workflow_id)
        m = await self._direct_last(subject)
        if m is None:
            return None
        stored_subject = (m.headers or {}).get("Nats-Subject", "")
        run_id = stored_subject.rsplit(".", 1)[-1]
        return LastBatch(stored_subject, run_id, self._batch(m))

    async def last_seq(self, workflow_id: str, run_id: str) -> int:
        """Stream sequence of the run's newest batch (0 if the run has none)."""
        m = await self._direct_last(self.layout.history(workflow_id, run_id))
        return 0 if m is None else int((m.headers or {}).get("Nats-Sequence", "0"))

    async def last_event_id(self, workflow_id: str, run_id: str) -> int:
        """Id of the run's newest event, i.e. how many events it has (0 if none); one get."""
        m = await self._direct_last(self.layout.history(workflow_id, run_id))
        if m is None:
            return 0
        events = self._batch(m).events
        return events[-1].event_id if events else 0

    async def first_batch(self, workflow_id: str, run_id: str) -> Batch | None:
        msgs = await self._direct_batch(self.layout.history(workflow_id, run_id), 1, batch=1)
        return self._batch(msgs[0]) if msgs else None

    async def _direct_last(self, subject: str) -> Msg | None:
        api = f"$JS.API.DIRECT.GET.{self.layout.stream}"
        try:
            m = await self.nc.request(
                api, orjson.dumps({"last_by_subj": subject}), timeout=self.pub.timeout
            )
        except Exception as exc:
            raise TransportError(f"reading the last message of {subject} failed: {exc}") from exc
        status = m.headers.get("Status") if m.headers else None
        if status == "404":
            return None
        if status:
            desc = (m.headers or {}).get("Description", "")
            raise TransportError(f"reading the last message of {subject}: {status} {desc}")
        return m

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
        """Append a batch if the history's last sequence is still ``expected_seq``.

        With ``whole_workflow`` the check covers every run of the workflow id (used to create
        a run). Returns the stored stream sequence; raises :class:`WrongLastSequence`.
        """
        if not events:
            raise ValueError("append needs at least one event")
        subject = self.layout.history(workflow_id, run_id)
        msg_id = f"{run_id}:{events[0].event_id}"
        headers = {MSG_ID: msg_id, EXPECTED_LAST_SUBJECT_SEQ: str(expected_seq)}
        if whole_workflow:
            headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = self.layout.history_of_workflow(
                workflow_id
            )
        data = self.codec.encode_batch(input_id, list(events))
        try:
            ack = await self.pub.publish(subject, data, headers)
            if ack.duplicate:
                # On a clustered (R3) stream JetStream checks the message id before the
                # expected sequence: a rival's append at the same position comes back as a
                # duplicate of the winner's message, not as a conflict. Only our own bytes at
                # that sequence mean "already appended".
                if await self._stored_at(int(ack.seq), subject, data):
                    return int(ack.seq)
                raise WrongLastSequence(subject, expected_seq, int(ack.seq))
            return int(ack.seq)
        except WrongLastSequence:
            landed = await self._landed(subject, msg_id, data)
            if landed is not None:
                return landed  # a retry of our own append that had succeeded
            raise
        except TransportError:
            # Outcome unknown: read back instead of guessing.
            landed = await self._landed(subject, msg_id, data)
            if landed is not None:
                return landed
            raise

    async def _stored_at(self, seq: int, subject: str, data: bytes) -> bool:
        """Whether the stream holds exactly ``data`` on ``subject`` at ``seq``.

        Asked of the stream leader (not a direct get, which any replica may answer, one that is
        behind included), so a message the PubAck just named is found.
        """
        try:
            m = await self.pub.js.get_msg(self.layout.stream, seq)
        except Exception as exc:
            raise TransportError(
                f"reading message {seq} of {self.layout.stream} back after a duplicate append to "
                f"{subject} failed: {exc}"
            ) from exc
        return m.subject == subject and (m.data or b"") == data

    async def _landed(self, subject: str, msg_id: str, data: bytes) -> int | None:
        """The stream sequence of our append if it is the subject's last message, else None.

        The message id names a position (run and first event id), which another writer may
        have filled with different events: only the exact same bytes count as ours.
        """
        try:
            m = await self._direct_last(subject)
        except TransportError:
            return None
        if m is None:
            return None
        if (m.headers or {}).get(MSG_ID) == msg_id and m.data == data:
            return int((m.headers or {}).get("Nats-Sequence", "0"))
        return None


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

        sub = await nc.subscribe(inbox, cb=_cb)
        try:
            req = orjson.dumps({"seq": seq, "next_by_subj": subject, "batch": batch})
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
            await sub.unsubscribe()
        if not more or got == 0:
            return out
        seq = last + 1
