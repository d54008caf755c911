"""Publishing to JetStream: pipelined (many in flight), each with a timeout, errors translated.

Each publish carries a reply subject of the publisher's reply multiplexer
(:class:`~durablefuture.transport.replies.ReplyInbox`, one wildcard subscription), so a PubAck
resolves a future without a subscription, task or timer per message; a sweeper fails publishes
whose PubAck did not come in time.

A ``503`` status instead of a PubAck means no stream leader took the message (nothing was
stored): in a NATS cluster that is what a publish gets while a stream elects its leader after a
node died or froze, so the sweeper sends it again every ``_RESEND`` seconds until its deadline,
unchanged (safe: it was not stored; ``Nats-Msg-Id`` and the expected-sequence header, if any,
travel with it). Only a 503 that lasts until the deadline fails the publish (no stream stores
the subject, or none has a leader). ``Nats-Expected-Last-Subject-Sequence`` conflicts
become :class:`WrongLastSequence`, a full store ("insufficient resources") becomes
:class:`~durablefuture.core.errors.StorageFullError`; every other failure becomes a
:class:`~durablefuture.core.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck

from durablefuture.codec.jsapi import api_reply
from durablefuture.core.errors import StorageFullError, TransportError
from durablefuture.transport.guard import check_message
from durablefuture.transport.replies import ReplyInbox

__all__ = [
    "EXPECTED_LAST_SUBJECT_SEQ",
    "EXPECTED_LAST_SUBJECT_SEQ_SUBJECT",
    "MSG_ID",
    "SCHEDULE",
    "SCHEDULE_TARGET",
    "PubAck",
    "Publisher",
    "SequenceInFlight",
    "WrongLastSequence",
    "schedule_at",
    "settled",
    "unless_present",
]

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"

_WRONG_SEQ = re.compile(r"wrong last sequence:\s*(\d+)")
STORAGE_FULL_CODES = frozenset({10023, 10002})
"""JetStream's "insufficient resources" (the server's store limit or a full disk) and "resource
limits exceeded for account": nothing is stored until space is freed."""
_RESEND = 0.25  # seconds between two sends of a publish no stream leader took (503)


def schedule_at(ts: float) -> str:
    """The ``Nats-Schedule`` value of a message schedule firing once, at ``ts``."""
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"@at {stamp}Z"


class WrongLastSequence(TransportError):
    """Another writer appended first (optimistic concurrency conflict)."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"{subject}: expected last sequence {expected}, the stream has {actual}; "
            "reload and decide again"
        )
        self.subject = subject
        self.expected = expected
        self.actual = actual


class SequenceInFlight(TransportError):
    """A clustered stream refused an expected-sequence check while an earlier message
    checked on the same subjects was still being replicated (err_code 10164): nothing was
    stored; the check can be made again once that message is stored."""


class _Pending:
    __slots__ = ("data", "deadline", "future", "headers", "resend_at", "subject", "timeout")

    def __init__(
        self,
        future: asyncio.Future[PubAck],
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.future = future
        self.subject = subject
        self.data = data
        self.headers = headers
        self.timeout = 0.0
        self.deadline = 0.0
        self.resend_at: float | None = None  # set after a 503: no stream leader took it yet


class Publisher:
    """Publishes with PubAcks, many in flight at once."""

    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.timeout = timeout
        self.replies = ReplyInbox(nc)
        """The reply multiplexer PubAcks come back on; others may wait for replies on it too."""
        self._pending: dict[str, _Pending] = {}  # by reply subject
        self._sweeper: asyncio.Task[None] | None = None
        self._ready: asyncio.Lock | None = None

    async def _start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._sweeper is not None:
                return
            await self.replies.start()
            self._sweeper = asyncio.create_task(self._sweep(), name="df-publish-sweeper")

    def _forget(self, token: str) -> _Pending | None:
        self.replies.close(token)
        return self._pending.pop(token, None)

    def _on_ack(self, msg: Msg) -> None:
        token = msg.subject
        pending = self._pending.get(token)
        if pending is None or pending.future.done():
            self._forget(token)
            return
        if msg.headers and msg.headers.get("Status") == "503":
            # not stored: send it again soon (the sweeper does), unless time is up
            if time.monotonic() + _RESEND < pending.deadline:
                pending.resend_at = time.monotonic() + _RESEND
            else:
                self._forget(token)
                pending.future.set_exception(_no_stream(pending.subject, pending.timeout))
            return
        self._forget(token)
        try:
            resp = api_reply(msg.data)
        except ValueError:
            pending.future.set_exception(
                TransportError(f"unreadable PubAck for {pending.subject}: {msg.data[:200]!r}")
            )
            return
        err = resp.get("error")
        if err is not None:
            pending.future.set_exception(_api_error(pending, err))
            return
        pending.future.set_result(
            PubAck(
                stream=resp.get("stream", ""),
                seq=int(resp.get("seq", 0)),
                domain=resp.get("domain"),
                duplicate=resp.get("duplicate"),
            )
        )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_RESEND)
            now = time.monotonic()
            expired = [k for k, p in self._pending.items() if p.deadline <= now]
            for key in expired:
                pending = self._forget(key)
                if pending is None or pending.future.done():
                    continue
                if pending.resend_at is not None:  # every send so far got a 503
                    pending.future.set_exception(_no_stream(pending.subject, pending.timeout))
                    continue
                pending.future.set_exception(
                    TransportError(
                        f"no PubAck for {pending.subject} within {pending.timeout:g}s; the "
                        "outcome is unknown"
                    )
                )
            due = [(k, p) for k, p in self._pending.items() if p.resend_at and p.resend_at <= now]
            for key, pending in due:
                pending.resend_at = None
                try:
                    await self.nc.publish(
                        pending.subject,
                        pending.data,
                        reply=key,
                        headers=dict(pending.headers) if pending.headers else None,
                    )
                except Exception as exc:  # e.g. the connection is closed: fail this one
                    if self._forget(key) is not None and not pending.future.done():
                        pending.future.set_exception(
                            TransportError(f"publishing to {pending.subject} failed: {exc}")
                        )

    async def send(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> asyncio.Future[PubAck]:
        """Write a publish now; the returned future resolves to its PubAck (or raises).

        A message nats-server would refuse (too large, malformed subject or header) raises
        :class:`~durablefuture.core.errors.MessageRejectedError` here, before it is sent.

        Awaiting ``send`` only hands the message to the connection; await the returned future
        for the PubAck. Sending several messages and then gathering their futures pipelines them.
        """
        check_message(self.nc, subject, data, headers)
        if self._sweeper is None:
            await self._start()
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        token = self.replies.open(self._on_ack)
        pending = _Pending(future, subject, data, headers)
        pending.timeout = timeout or self.timeout
        pending.deadline = time.monotonic() + pending.timeout
        self._pending[token] = pending
        try:
            await self.nc.publish(
                subject,
                data,
                reply=token,
                headers=dict(headers) if headers else None,
            )
        except Exception as exc:
            self._forget(token)
            raise TransportError(f"publishing to {subject} failed: {exc}") from exc
        return future

    async def publish(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> PubAck:
        """Store ``data`` on ``subject``; returns the PubAck (``duplicate`` set on a dedup hit)."""
        return await (await self.send(subject, data, headers, timeout=timeout))

    async def notify(
        self,
        subject: str,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        reply: str = "",
    ) -> None:
        """Core-NATS publish (not stored, no PubAck), checked like :meth:`send`."""
        check_message(self.nc, subject, data, headers, reply)
        try:
            await self.nc.publish(
                subject, data, reply=reply, headers=dict(headers) if headers else None
            )
        except Exception as exc:
            raise TransportError(f"publishing to {subject} failed: {exc}") from exc

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper


def _no_stream(subject: str, waited: float) -> TransportError:
    return TransportError(
        f"no JetStream stream took {subject} within {waited:g}s: no stream stores it (has "
        "df-server created the namespace? start df-server, or `df dev`), or its stream has no "
        "leader (a NATS cluster without a quorum of its nodes)"
    )


def _api_error(pending: _Pending, err: dict[str, object]) -> TransportError:
    code = err.get("err_code")
    description = str(err.get("description", ""))
    if code == 10071:
        m = _WRONG_SEQ.search(description)
        expected = int((pending.headers or {}).get(EXPECTED_LAST_SUBJECT_SEQ, "0"))
        return WrongLastSequence(pending.subject, expected, int(m.group(1)) if m else None)
    if code == 10164:
        return SequenceInFlight(
            f"JetStream rejected a message on {pending.subject}: {description} (err_code "
            f"{code}): a clustered stream still had an earlier message checked on the same "
            "subjects in flight; send it again once that one is stored"
        )
    if code in STORAGE_FULL_CODES:
        return StorageFullError(
            f"JetStream has no room to store a message on {pending.subject}: {description} "
            f"(err_code {code}); free space (or raise max_file_store / the account's storage "
            "limit) and it is stored on a retry"
        )
    return TransportError(
        f"JetStream rejected a message on {pending.subject}: {description} (err_code {code})"
    )


async def settled(pending: Sequence[Awaitable[object]]) -> list[object]:
    """``asyncio.gather(*pending, return_exceptions=True)``, for PubAck futures (an input's
    effects): every outcome in order, a failure as its exception, once all are done.

    Awaited one by one instead: most are done by the time the first is (their PubAcks come
    back in one read), and a task awaiting a future it holds is woken once without the
    gathering future, its callbacks and its result list (3-5 us less per input, measured).
    A coroutine among them (a status re-index) still runs alongside the rest, as under
    ``gather``; and, as ``gather`` does, cancelling the waiting task cancels them all.
    """
    futures = [p if isinstance(p, asyncio.Future) else asyncio.ensure_future(p) for p in pending]
    for f in futures:
        if f.done():
            continue
        try:
            await f
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # this wait is being cancelled
                for other in futures:
                    other.cancel()
                raise
        except Exception:  # its outcome is read below, in its turn
            continue
    return [_outcome(f) for f in futures]


def _outcome(f: asyncio.Future[object]) -> object:
    if f.cancelled():
        return asyncio.CancelledError()
    exc = f.exception()
    return f.result() if exc is None else exc


def unless_present(sent: asyncio.Future[PubAck]) -> asyncio.Future[PubAck | None]:
    """The PubAck of a create-only write, or None if the subject already had a message."""
    out: asyncio.Future[PubAck | None] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[PubAck]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif isinstance(f.exception(), WrongLastSequence):
            out.set_result(None)
        elif (exc := f.exception()) is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    sent.add_done_callback(done)
    return out
