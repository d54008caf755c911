"""df-server: the only writer of histories.

For every input (a start request, a worker's report, a timer firing, a signal, ...) it loads the
run's history (cached, checked against the stream sequence), asks the pure core what the input
adds (``core.orchestration.decide``), appends that with optimistic concurrency, then performs
the effects (dispatch tasks, arm timers, update the status index, notify other runs), and only
then acks the input. A crash at any point leaves the input unacked: it is redelivered, found
already recorded, and its effects are derived again (they are idempotent). Any number of
servers may run on one NATS; they share the input consumer and coordinate only through the
stream's sequence checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from attrs import evolve

from durablefuture import metrics
from durablefuture.codec.wire import InputEnvelope, Reply
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    RequestRejectedError,
    StorageFullError,
    TransportError,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.server.checks import EagerChecks
from durablefuture.server.inputs import (  # imported from here before the package split
    _instead_of_too_large as _instead_of_too_large,
)
from durablefuture.server.janitor import Janitor
from durablefuture.server.options import ServerOptions
from durablefuture.server.receipts import UNANSWERED_ASK, eager_ask
from durablefuture.server.removals import Removals
from durablefuture.server.report_requests import ReportRequests
from durablefuture.server.schedules import ScheduleService
from durablefuture.server.sources import REPORT, refusal
from durablefuture.server.start_requests import StartRequests
from durablefuture.server.sticky import StickyFallback
from durablefuture.server.visibility import VisibilityIndex
from durablefuture.transport.buckets import read_key
from durablefuture.transport.connection import connect, connection_lost, read_loop_stopped
from durablefuture.transport.consumer import Msg, PullConsumer, delivery_count, stream_sequence
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.headers import (
    EAGER_ASK_HEADER,
    RECEIPT_HEADER,
    REPLY_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.layout import (
    ConsumerSettings,
    ensure_consumer,
    ensure_namespace,
    open_bucket,
)
from durablefuture.transport.namespace_settings import write_settings
from durablefuture.transport.payload_store import MissingPayloadError, ObjectPayloads
from durablefuture.transport.redelivery import lost_reason
from durablefuture.transport.startup import until_ready
from durablefuture.transport.tls import TlsConfig
from durablefuture.transport.translate import translated

__all__ = ["Server", "ServerOptions"]

log = logging.getLogger("durablefuture.server")


class Server(ReportRequests, StartRequests, EagerChecks, Removals, Janitor, StickyFallback):
    """One df-server process (or an in-process server in tests and ``df dev``).

    The parts it is made of are listed in :mod:`durablefuture.server.base`.
    """

    @classmethod
    async def connect(
        cls,
        url: str,
        options: ServerOptions | None = None,
        *,
        connect_timeout: float = 20.0,
        creds: str | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> Server:
        # own_inbox: the server user's replies stay in its account (the short prefix will do)
        nc = await connect(
            url, timeout=connect_timeout, name="df-server", creds=creds, tls=tls, own_inbox=False
        )
        server = cls(nc, options)
        server._own_nc = True
        return server

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 60.0) -> None:
        """Create the namespace layout and start the services beside the inputs (inputs are
        pulled once :meth:`run` handles them).

        JetStream may be slow to answer right after a cluster starts, or while a NATS node
        fails over: transient errors are retried (with a log line) for up to ``timeout``
        seconds, then :class:`TransportError` says what did not work.
        """
        ns = self.layout.namespace
        await until_ready(f"setting up namespace {ns!r}", self._setup, timeout, logger=log)
        self._consumer = PullConsumer(
            self.nc,
            self.layout.stream,
            self.layout.server_consumer,
            credits=self.options.concurrency,
        )
        # client starts are pulled apart, with places of their own (``admission``): the
        # inputs of the runs already going never wait behind a burst of them
        self._start_consumer = PullConsumer(
            self.nc,
            self.layout.stream,
            self.layout.start_consumer,
            credits=self.options.concurrency,
        )
        if self.visibility is None and self._runs_kv is not None:
            self.visibility = VisibilityIndex(self.nc, self.layout, self.codec)
            await self.visibility.start(self._runs_kv)
        if self.options.schedules is not None and self.schedules is None:
            self.schedules = ScheduleService(
                self.pub,
                self.layout,
                self.codec,
                self.history,
                evolve(self.options.schedules, payload_grace=self.options.payload_grace),
                start=self.start_scheduled,
                retention=lambda: self.settings.retention,
            )
            await self.schedules.start()
        self._start_janitor()
        await self._start_removals()
        self._start_sticky()
        self._remove_health = metrics.add_health_check(
            f"df-server {self.layout.namespace} {id(self):x}", self._health
        )
        log.info(
            "df-server serving namespace %s",
            self.layout.namespace,
            extra={"namespace": self.layout.namespace},
        )

    async def _setup(self) -> None:
        """The namespace's JetStream objects (each step idempotent: retried as a whole)."""
        with translated(f"setting up namespace {self.layout.namespace!r}"):
            await ensure_namespace(self.js, self.layout, self.options.replicas)
            settings = ConsumerSettings(self.options.input_ack_wait, self.options.input_max_deliver)
            await ensure_consumer(
                self.js,
                self.layout,
                self.layout.server_consumer,
                self.layout.run_inputs,
                settings,
                update=True,
            )
            await ensure_consumer(
                self.js,
                self.layout,
                self.layout.start_consumer,
                self.layout.input("start"),
                settings,
                update=True,
            )
            changes: dict[str, float | int] = dict(self.options.history_limits)
            if self.options.retention is not None:
                changes["retention"] = self.options.retention
            self.settings = await write_settings(self.js, self.layout, changes)
            await self._prepare_removals()
            self._runs_kv = await open_bucket(self.js, self.layout.runs_bucket)
            self._act_kv = await open_bucket(self.js, self.layout.activity_bucket)
            if self.options.schedules is not None:
                await ScheduleService.prepare(self.pub, self.layout, self.options.schedules)

    async def run(self) -> None:
        """Process inputs until :meth:`shutdown`."""
        if self._consumer is None:
            await self.start()
        consumer, starts = self._consumer, self._start_consumer
        assert consumer is not None and starts is not None
        # inputs are pulled only by a server that handles them: one that is started but not
        # running would hold what it pulled until its ack wait ran out
        if self._stopping.is_set():
            return  # shut down before it ran: nothing to pull
        await consumer.start()
        await starts.start()
        await self._start_report_requests()
        await self._start_start_requests()
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(connection_lost(self.nc, self._stopping))
        pulls = {
            asyncio.ensure_future(consumer.next()): consumer,
            asyncio.ensure_future(starts.next()): starts,
        }
        try:
            while not self._stopping.is_set():
                done, _ = await asyncio.wait(
                    {*pulls, stop, lost}, return_when=asyncio.FIRST_COMPLETED
                )
                if lost in done:
                    raise lost.result()
                for nxt in [f for f in pulls if f in done]:
                    source = pulls.pop(nxt)
                    task = asyncio.create_task(self._process(nxt.result(), source))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    pulls[asyncio.ensure_future(source.next())] = source
                if stop in done:
                    break
        finally:
            stop.cancel()
            lost.cancel()
            for nxt in pulls:
                nxt.cancel()

    def in_progress(self) -> int:
        """Inputs being handled and local timers being fired right now."""
        return len(self._tasks)

    def _health(self) -> str | None:
        if self._stopping.is_set():
            return "shutting down"
        if read_loop_stopped(self.nc):
            return "the NATS client stopped reading from its connection"
        if not self.nc.is_connected:
            return (
                "not connected to NATS (reconnecting)"
                if self.nc.is_reconnecting
                else ("the connection to NATS is closed")
            )
        return None

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking inputs, finish the ones in progress, then disconnect (if we own NATS)."""
        self._stopping.set()
        self._remove_health()
        await self._stop_report_requests()
        await self._stop_start_requests()
        await self._stop_janitor()
        await self._stop_removals()
        await self._stop_sticky()
        for pull in (self._consumer, self._start_consumer):
            if pull is not None:
                await pull.stop()
        if self.schedules is not None:
            await self.schedules.stop(timeout)
        if self.visibility is not None:
            await self.visibility.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        await self._status_flush(timeout)
        self._local_timers.clear()
        if self._own_nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # ------------------------------------------------------------------ input handling

    async def _process(self, msg: Msg, consumer: PullConsumer) -> None:
        self.stats["inputs"] += 1
        began = time.perf_counter()
        try:  # whatever the message is, its credit is released in `finally`
            delivered = delivery_count(msg)
            if delivered > 1:
                metrics.REDELIVERIES.inc("server")
            if self.options.redelivery.abandoned(delivered):
                await self._abandoned(msg, delivered)
                return
            try:
                env = self.codec.decode_input(msg.data)
            except DecodeError as exc:
                await self._dead_letter(msg, "server-input", str(exc))
                return
            refused = refusal(msg.subject.rpartition(".")[2], env)
            if refused is not None:
                log.error("refused an input on %s: %s", msg.subject, refused)
                await self._dead_letter(msg, "server-input", refused)
                return
            headers = msg.headers or {}
            reply_to = headers.get(REPLY_HEADER, "")
            receipt_to = headers.get(RECEIPT_HEADER, "")
            sticky = (
                headers.get(STICKY_HEADER, "") if msg.subject == self.layout.input("report") else ""
            )
            if env.input is not None and self.schedules is not None:
                await self.schedules.give_way(env.workflow_id)  # due starts first
            kind = msg.subject.rpartition(".")[2]
            # a report its worker stored after asking: it ran none of that request's grants
            asked = eager_ask(headers.get(EAGER_ASK_HEADER, "")) if kind == REPORT else ""
            token = UNANSWERED_ASK.set(asked)
            try:
                async with self._ordered(kind, msg):
                    await self._handle_kept(msg, env, reply_to, receipt_to, sticky)
            finally:
                UNANSWERED_ASK.reset(token)
        finally:
            metrics.SERVER_INPUT_SECONDS.observe(time.perf_counter() - began, self.layout.namespace)
            consumer.release()

    def _ordered(self, kind: str, msg: Msg) -> contextlib.AbstractAsyncContextManager[None]:
        """Where an input waits its turn (``admission``): client starts after the runs going."""
        if kind == "start":
            return self._gate.start(msg.in_progress)
        return contextlib.nullcontext()

    async def _handle_kept(
        self, msg: Msg, env: InputEnvelope, reply_to: str, receipt_to: str, sticky: str
    ) -> None:
        """Handle an input until it is recorded (then ack it), dead-lettered or left to be
        redelivered."""
        attempt = 0
        while True:
            tried = time.monotonic()
            try:
                await self._handle(env, reply_to, receipt_to, stream_sequence(msg), sticky)
                await msg.ack()
                self._storage.stored()
                return
            except asyncio.CancelledError:
                raise
            except StorageFullError as exc:
                # keep the input (no nak: redeliveries count towards max_deliver) and
                # handle it again once JetStream has room; handling it twice is harmless
                self.stats["storage_waits"] += 1
                if not await self._storage.wait(exc, msg, attempt, tried):
                    return  # stopping: redelivered after its ack wait
                attempt += 1
            except CorruptHistoryError as exc:
                await self._corrupt(exc, reply_to)
                await self._dead_letter(msg, "server-input", str(exc))
                return
            except DecodeError as exc:  # e.g. an input for a run that does not exist
                await self._dead_letter(msg, "server-input", str(exc))
                return
            except MissingPayloadError as exc:  # its payload went before it was handled
                rejected = RequestRejectedError.__name__
                await self._reply(reply_to, Reply(False, error_type=rejected, message=str(exc)))
                await self._dead_letter(msg, "server-input", str(exc))
                return
            except Exception as exc:
                await self._failed(msg, exc)
                return

    async def _handle(
        self, env: InputEnvelope, reply_to: str, receipt_to: str, input_seq: int, sticky: str = ""
    ) -> None:
        if env.start is not None:
            await self._handle_start(env.start, reply_to)
        elif env.input is not None:
            await self._handle_run_input(
                env.workflow_id,
                env.input,
                reply_to,
                receipt_to,
                input_seq=input_seq,
                sticky=sticky,
            )

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        """A run's history cannot be read: record that in its status entry (so describe,
        list and waiting callers see it) and answer the requester with the reason."""
        await self._reply(
            reply_to,
            Reply(
                False, run_id=exc.run_id, error_type=CorruptHistoryError.__name__, message=str(exc)
            ),
        )
        wid, run_id = exc.workflow_id, exc.run_id
        cached = self._cache.pop(run_id, None)
        if not wid or not run_id:
            return
        if self._corrupt_runs.get(run_id) != exc.stream_seq:
            self.stats["corrupt_histories"] += 1
            log.error("%s", exc, extra={"workflow_id": wid, "run_id": run_id})
            self._corrupt_runs[run_id] = exc.stream_seq
            while len(self._corrupt_runs) > 10_000:
                self._corrupt_runs.popitem(last=False)
        failure = Failure(
            message=str(exc),
            type="CorruptHistoryError",
            kind=FailureKind.SERVER,
            details=(exc.stream_seq, exc.reason),
        )
        key = self.layout.status_key(wid, run_id)
        summary: RunSummary | None = None
        try:
            if self._runs_kv is not None:
                value = await read_key(self._runs_kv, key)
                if value:
                    summary = self.codec.decode_summary(value)
        except Exception as read_exc:  # not found or unreadable: write a new one
            log.debug("status entry of %s run %s: %s", wid, run_id, read_exc)
        if (
            summary is not None
            and summary.status == RunStatus.CORRUPT
            and summary.failure == failure
        ):
            return  # recorded already
        if summary is None:  # no entry yet (written late, ``status_later``): the start's
            summary = await self._status_base(wid, run_id, cached)
        if summary is None:
            summary = RunSummary(wid, run_id, "", "", RunStatus.CORRUPT, 0.0)
        summary = evolve(summary, status=RunStatus.CORRUPT, failure=failure)
        body = self.codec.encode_summary(summary)
        try:
            await self.pub.publish(f"$KV.{self.layout.runs_bucket}.{key}", body)
            await self.pub.notify(self.layout.closed_notice(wid, run_id), body)
        except TransportError as write_exc:  # the next input for the run tries again
            log.warning("could not record that run %s is corrupt: %s", run_id, write_exc)

    async def _failed(self, msg: Msg, exc: Exception) -> None:
        delivered = delivery_count(msg)
        policy = self.options.redelivery
        if policy.exhausted(delivered):
            log.error("giving up on an input after %d deliveries: %s", delivered, exc, exc_info=exc)
            await self._dead_letter(msg, "server-input", f"failed {delivered} times: {exc}")
            return
        log.warning(
            "input processing failed (delivery %d), retrying in %.1fs: %s",
            delivered,
            policy.delay(delivered),
            exc,
            exc_info=not isinstance(exc, TransportError),
        )
        await policy.retry_later(msg, delivered)

    async def _abandoned(self, msg: Msg, delivered: int) -> None:
        """An input delivered more often than it is retried, never given up on: each server
        that took it died before an outcome (an input that crashes df-server, exhausts its
        memory or exits it). It is not handled again: dead-lettered with the reason."""
        reason = lost_reason("input", delivered)
        log.error("giving up on an input on %s: %s", msg.subject, reason)
        await self._dead_letter(msg, "server-input", reason)

    async def _dead_letter(self, msg: Msg, source: str, reason: str) -> None:
        """Store ``msg`` as a dead letter, then terminate it (kept and retried if the store
        fails: a refused input is never lost without a trace)."""
        subject = self.layout.dead_letter(source)
        payloads = ObjectPayloads(self.pub.js, self.layout)
        if await dead_letter(self.pub, subject, msg, source, reason, payloads=payloads):
            self.stats["dead_letters"] += 1
            metrics.DEAD_LETTERS.inc("server")
