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
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import orjson
from attrs import define, evolve, field
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.kv import KeyValue

from durablefuture import metrics
from durablefuture.codec.wire import Codec, InputEnvelope, Reply, WorkflowTaskMessage, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ContinueAsNewWorkflow
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    NotifyParent,
    RunStatus,
    RunSummary,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
)
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    DurableFutureError,
    MessageRejectedError,
    StorageFullError,
    TransportError,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    REJECTED,
    Decision,
    LatestRun,
    decide,
    decide_start,
    effects_for,
    start_events,
)
from durablefuture.core.state import RunState, status_of
from durablefuture.server.schedules import ScheduleOptions, ScheduleService
from durablefuture.server.sources import SERVER, refusal
from durablefuture.transport.connection import connect, connection_lost, read_loop_stopped
from durablefuture.transport.consumer import PullConsumer, delivery_count, stream_sequence
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject, max_payload
from durablefuture.transport.headers import RECEIPT_HEADER, REPLY_HEADER, RUN_HEADER, SEQ_HEADER
from durablefuture.transport.history import Batch, HistoryStore, fold
from durablefuture.transport.layout import (
    ConsumerSettings,
    ensure_consumer,
    ensure_namespace,
    open_bucket,
)
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    MSG_ID,
    SCHEDULE,
    SCHEDULE_TARGET,
    Publisher,
    WrongLastSequence,
)
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import Layout
from durablefuture.transport.tls import TlsConfig

__all__ = ["Server", "ServerOptions"]

log = logging.getLogger("durablefuture.server")


MAX_TASK_BYTES = 512 * 1024
"""A workflow task carrying more than this leaves the events out (the worker reads them)."""
FULL_HISTORY_IN_TASK = 400
"""Histories up to this many events travel inside the workflow task (no read needed)."""


def new_run_id() -> str:
    return uuid.uuid4().hex


@define
class ServerOptions:
    """Tuning of a df-server; the defaults suit production."""

    namespace: str = "default"
    input_ack_wait: float = 10.0
    """Seconds before an input a crashed server was handling is redelivered to another."""
    input_max_deliver: int = 10
    cache_size: int = 20_000
    """Runs whose state is kept in memory (a miss reloads the history)."""
    concurrency: int = 1024
    """Inputs processed at once (different runs in parallel, one at a time per run)."""
    replicas: int = 1
    """Stream and bucket replicas (3 in a 3-node cluster)."""
    local_timers: bool = True
    """Fire timers from memory at their due time; the JetStream schedule stays the durable
    backup (it fires up to ~0.25 s late)."""
    schedules: ScheduleOptions | None = field(factory=ScheduleOptions)
    """The schedule component (None: this server does not step schedules)."""


@define
class RunCache:
    workflow_id: str
    state: RunState
    events: list[ev.Event]
    last_seq: int
    first_seq: int  # stream sequence of the run's first batch (its start)
    lock: asyncio.Lock = field(factory=asyncio.Lock)
    wft_sent_upto: int = 0

    def apply(self, seq: int, input_id: str, events: Sequence[ev.Event]) -> None:
        self.state.apply(list(events), input_id)
        self.events.extend(events)
        self.last_seq = seq


class _RunMissing(DurableFutureError):
    pass


def _at(ts: float) -> str:
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"@at {stamp}Z"


class Server:
    """One df-server process (or an in-process server in tests and ``df dev``)."""

    def __init__(self, nc: NATS, options: ServerOptions | None = None, codec: Codec | None = None):
        self.nc = nc
        self.options = options or ServerOptions()
        self.codec = codec or default_codec()
        self.layout = Layout(self.options.namespace)
        self.pub = Publisher(nc)
        self.js = self.pub.js
        self.history = HistoryStore(nc, self.pub, self.layout, self.codec)
        self._cache: OrderedDict[str, RunCache] = OrderedDict()
        self._start_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._consumer: PullConsumer | None = None
        self._runs_kv: KeyValue | None = None
        self._act_kv: KeyValue | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._own_nc = False
        self._remove_health: Callable[[], None] = lambda: None
        self.schedules: ScheduleService | None = None
        self._storage = StorageWait(
            f"df-server (namespace {self.layout.namespace})",
            keepalive=max(0.1, min(1.0, self.options.input_ack_wait / 3)),
            stopping=self._stopping,
        )
        self._corrupt_runs: OrderedDict[str, int] = OrderedDict()
        self.stats: dict[str, int] = {
            "inputs": 0,
            "conflicts": 0,
            "duplicates": 0,
            "ignored": 0,
            "rejected": 0,
            "dead_letters": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "storage_waits": 0,
            "corrupt_histories": 0,
        }

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
        nc = await connect(url, timeout=connect_timeout, name="df-server", creds=creds, tls=tls)
        server = cls(nc, options)
        server._own_nc = True
        return server

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 30.0) -> None:
        """Create the namespace layout and start consuming inputs.

        JetStream may be slow to answer right after a cluster starts: transient errors are
        retried (with a log line) for up to ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                await self._setup()
                return
            except (TimeoutError, TransportError, nats.errors.Error) as exc:
                if time.monotonic() + delay > deadline:
                    raise TransportError(
                        f"could not set up namespace {self.layout.namespace!r} on JetStream "
                        f"within {timeout:g}s: {exc}"
                    ) from exc
                log.warning("setting up the namespace failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _setup(self) -> None:
        await ensure_namespace(self.js, self.layout, self.options.replicas)
        settings = ConsumerSettings(self.options.input_ack_wait, self.options.input_max_deliver)
        await ensure_consumer(
            self.js,
            self.layout,
            self.layout.server_consumer,
            self.layout.inputs,
            settings,
            update=True,
        )
        self._runs_kv = await open_bucket(self.js, self.layout.runs_bucket)
        self._act_kv = await open_bucket(self.js, self.layout.activity_bucket)
        self._consumer = PullConsumer(
            self.nc,
            self.layout.stream,
            self.layout.server_consumer,
            credits=self.options.concurrency,
        )
        await self._consumer.start()
        if self.options.schedules is not None and self.schedules is None:
            self.schedules = ScheduleService(
                self.nc, self.pub, self.layout, self.codec, self.history, self.options.schedules
            )
            await self.schedules.start()
        self._remove_health = metrics.add_health_check(
            f"df-server {self.layout.namespace} {id(self):x}", self._health
        )
        log.info(
            "df-server serving namespace %s",
            self.layout.namespace,
            extra={"namespace": self.layout.namespace},
        )

    async def run(self) -> None:
        """Process inputs until :meth:`shutdown`."""
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(connection_lost(self.nc, self._stopping))
        try:
            while not self._stopping.is_set():
                nxt = asyncio.ensure_future(consumer.next())
                done, _ = await asyncio.wait({nxt, stop, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    nxt.cancel()
                    raise lost.result()
                if nxt not in done:
                    nxt.cancel()
                    break
                msg = nxt.result()
                task = asyncio.create_task(self._process(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            stop.cancel()
            lost.cancel()

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
        if self._consumer is not None:
            await self._consumer.stop()
        if self.schedules is not None:
            await self.schedules.stop(timeout)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._own_nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # ------------------------------------------------------------------ input handling

    async def _process(self, msg: Msg) -> None:
        consumer = self._consumer
        self.stats["inputs"] += 1
        began = time.perf_counter()
        try:  # whatever the message is, its credit is released in `finally`
            if delivery_count(msg) > 1:
                metrics.REDELIVERIES.inc("server")
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
            attempt = 0
            while True:
                tried = time.monotonic()
                try:
                    await self._handle(env, reply_to, receipt_to, stream_sequence(msg))
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
                except Exception as exc:
                    await self._failed(msg, exc)
                    return
        finally:
            metrics.SERVER_INPUT_SECONDS.observe(time.perf_counter() - began, self.layout.namespace)
            if consumer is not None:
                consumer.release()

    async def _handle(
        self, env: InputEnvelope, reply_to: str, receipt_to: str, input_seq: int
    ) -> None:
        if env.start is not None:
            await self._handle_start(env.start, reply_to)
        elif env.input is not None:
            await self._handle_run_input(
                env.workflow_id, env.input, reply_to, receipt_to, input_seq=input_seq
            )

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        """A run's history cannot be read: record that in its status entry (so describe,
        list and waiting callers see it) and answer the requester with the reason."""
        await self._reply(
            reply_to,
            Reply(False, run_id=exc.run_id, error_type="CorruptHistoryError", message=str(exc)),
        )
        wid, run_id = exc.workflow_id, exc.run_id
        self._cache.pop(run_id, None)
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
                entry = await self._runs_kv.get(key)
                if entry.value:
                    summary = self.codec.decode_summary(entry.value)
        except Exception as read_exc:  # not found or unreadable: write a new one
            log.debug("status entry of %s run %s: %s", wid, run_id, read_exc)
        if (
            summary is not None
            and summary.status == RunStatus.CORRUPT
            and summary.failure == failure
        ):
            return  # recorded already
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
        if delivered >= self.options.input_max_deliver - 1:
            log.error("giving up on an input after %d deliveries: %s", delivered, exc, exc_info=exc)
            await self._dead_letter(msg, "server-input", f"failed {delivered} times: {exc}")
            return
        delay = min(30.0, 0.5 * 2 ** (delivered - 1))
        log.warning(
            "input processing failed (delivery %d), retrying in %.1fs: %s",
            delivered,
            delay,
            exc,
            exc_info=not isinstance(exc, TransportError),
        )
        with contextlib.suppress(Exception):
            await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, source: str, reason: str) -> None:
        """Store ``msg`` as a dead letter, then terminate it (kept and retried if the store
        fails: a refused input is never lost without a trace)."""
        if await dead_letter(self.pub, self.layout.dead_letter(source), msg, source, reason):
            self.stats["dead_letters"] += 1
            metrics.DEAD_LETTERS.inc("server")

    async def _reply(self, reply_to: str, reply: Reply) -> None:
        if not reply_to:
            return
        try:
            await self.pub.notify(check_reply_subject(reply_to), self.codec.encode_reply(reply))
        except TransportError as exc:
            log.warning("could not answer %s: %s", reply_to[:100], exc)

    # ------------------------------------------------------------------ runs and the cache

    def _cached(self, run_id: str) -> RunCache | None:
        cache = self._cache.get(run_id)
        if cache is not None:
            self._cache.move_to_end(run_id)
        return cache

    def _remember(self, run_id: str, cache: RunCache) -> None:
        self._cache[run_id] = cache
        self._cache.move_to_end(run_id)
        while len(self._cache) > self.options.cache_size:
            oldest_id, oldest = next(iter(self._cache.items()))
            if oldest.lock.locked():
                break
            del self._cache[oldest_id]

    async def _load(self, workflow_id: str, run_id: str) -> RunCache:
        cache = self._cached(run_id)
        if cache is not None:
            self.stats["cache_hits"] += 1
            metrics.CACHE_LOOKUPS.inc("server", "hit")
            return cache
        self.stats["cache_misses"] += 1
        metrics.CACHE_LOOKUPS.inc("server", "miss")
        batches = await self.history.read(workflow_id, run_id)
        if not batches:
            raise _RunMissing(f"no history for workflow {workflow_id!r} run {run_id}")
        cache = self._from_batches(workflow_id, run_id, batches)
        existing = self._cache.get(run_id)
        if existing is not None:  # loaded concurrently
            return existing
        self._remember(run_id, cache)
        return cache

    def _from_batches(self, workflow_id: str, run_id: str, batches: list[Batch]) -> RunCache:
        state = fold(workflow_id, run_id, batches)
        events = [e for b in batches for e in b.events]
        return RunCache(workflow_id, state, events, batches[-1].stream_seq, batches[0].stream_seq)

    async def _refresh(self, cache: RunCache) -> bool:
        """Read batches appended by others; returns True if there were any."""
        run_id = cache.state.run_id
        try:
            batches = await self.history.read(cache.workflow_id, run_id, cache.last_seq)
            fold(cache.workflow_id, run_id, batches, cache.state)
        except CorruptHistoryError:
            self._cache.pop(run_id, None)  # partly folded: never use it again
            raise
        for b in batches:
            cache.events.extend(b.events)
            cache.last_seq = b.stream_seq
        return bool(batches)

    async def _handle_run_input(
        self,
        workflow_id: str,
        message: inp.RunInput,
        reply_to: str = "",
        receipt_to: str = "",
        input_seq: int = 0,
    ) -> Decision | None:
        # An input for "the latest run" that lands on a run which has just continued as new
        # follows the chain to the next run (a signal sent during the switch is not lost).
        follow = not message.run_id
        for attempt in range(200):  # bounded: about 10 s for the next run to appear
            try:
                decision, cache, message = await self._run_input_once(
                    workflow_id, message, receipt_to, input_seq
                )
            except DecodeError as exc:
                if not isinstance(exc, CorruptHistoryError):  # that one is answered by _process
                    await self._reply(
                        reply_to, Reply(False, error_type="WorkflowNotFoundError", message=str(exc))
                    )
                raise
            if (
                decision is not None
                and follow
                and decision.outcome == IGNORED
                and cache is not None
                and cache.state.status == RunStatus.CONTINUED_AS_NEW
            ):
                message = evolve(message, run_id="")
                if attempt:
                    await asyncio.sleep(0.05)  # the next run is being started
                continue
            break
        if decision is None or cache is None:
            await self._reply(
                reply_to,
                Reply(
                    False,
                    error_type="WorkflowNotFoundError",
                    message=f"no workflow with id {workflow_id!r} in namespace "
                    f"{self.layout.namespace!r}",
                ),
            )
            return decision
        if reply_to:
            if decision.outcome in (APPLIED, DUPLICATE):
                await self._reply(reply_to, Reply(True, run_id=message.run_id))
            else:
                status = cache.state.status
                error = "WorkflowNotRunningError" if status != RunStatus.RUNNING else "Rejected"
                await self._reply(
                    reply_to,
                    Reply(
                        False,
                        run_id=message.run_id,
                        error_type=error,
                        message=f"workflow {workflow_id!r} run {message.run_id} is {status}: "
                        f"{decision.reason}",
                    ),
                )
        return decision

    async def _run_input_once(
        self, workflow_id: str, message: inp.RunInput, receipt_to: str, input_seq: int = 0
    ) -> tuple[Decision | None, RunCache | None, inp.RunInput]:
        latest = not message.run_id
        if latest:
            last = await self.history.last_of_workflow(workflow_id)
            if last is None:
                return None, None, message
            message = evolve(message, run_id=last.run_id)
        try:
            cache = await self._load(workflow_id, message.run_id)
        except _RunMissing as exc:
            raise DecodeError(f"input for an unknown run: {exc}") from None
        if latest and input_seq and cache.first_seq > input_seq:
            # The latest run began after this input was stored: an earlier delivery may have
            # been recorded on a run that has continued as new since (a df-server or
            # nats-server that died before the acknowledgement). Duplicates are detected per
            # run, so send it to the run that holds it.
            holder = await self.history.find_input(workflow_id, message.input_id, input_seq)
            if holder is not None and holder != cache.state.run_id:
                message = evolve(message, run_id=holder)
                try:
                    cache = await self._load(workflow_id, holder)
                except _RunMissing as exc:
                    raise DecodeError(f"input for an unknown run: {exc}") from None
        message = await self._enrich(message)
        async with cache.lock:
            decision = await self._decide_and_record(cache, message, receipt_to)
        return decision, cache, message

    async def _enrich(self, message: inp.RunInput) -> inp.RunInput:
        """Add what the core needs but the input cannot carry (the last heartbeat)."""
        if isinstance(message, inp.FireTimer) and message.key.endswith(".hb"):
            seq = int(message.key[1:].split(".")[0])
            kv = self._act_kv
            if kv is not None:
                try:
                    entry = await kv.get(self.layout.heartbeat_key(message.run_id, seq))
                except nats.js.errors.KeyNotFoundError:
                    return message
                data = orjson.loads(entry.value or b"{}")
                return evolve(
                    message,
                    heartbeat_at=float(data.get("at", 0.0)),
                    heartbeat_details=tuple(data.get("details", ())),
                )
        return message

    async def _decide_and_record(
        self, cache: RunCache, message: inp.RunInput, receipt_to: str = ""
    ) -> Decision:
        verified = False
        for _ in range(50):
            now = time.time()
            run_id = _new_run_id_if_needed(message)
            decision = decide(cache.state, message, now, new_run_id=run_id)
            if decision.outcome in (IGNORED, REJECTED) and not verified:
                verified = True
                latest = await self.history.last_seq(cache.workflow_id, cache.state.run_id)
                if latest != cache.last_seq:
                    await self._refresh(cache)
                    continue
            if decision.outcome == APPLIED and decision.events:
                try:
                    seq = await self.history.append(
                        cache.workflow_id,
                        cache.state.run_id,
                        message.input_id,
                        decision.events,
                        cache.last_seq,
                    )
                except WrongLastSequence:
                    self.stats["conflicts"] += 1
                    metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                    await self._refresh(cache)
                    continue
                except MessageRejectedError as exc:
                    instead = _instead_of_too_large(cache.state, message, exc)
                    if instead is None:
                        raise
                    log.warning(
                        "the events of %s for run %s cannot be stored (%s); recording %s instead",
                        type(message).__name__,
                        cache.state.run_id,
                        exc,
                        type(instead).__name__,
                        extra={"run_id": cache.state.run_id, "workflow_id": cache.workflow_id},
                    )
                    message = instead
                    continue
                cache.apply(seq, message.input_id, decision.events)
                self._count_events(cache, decision.events)
                if receipt_to:
                    # tell the worker what was recorded, so its cached generator stays current
                    try:
                        await self.pub.notify(
                            check_reply_subject(receipt_to, "receipt subject"),
                            self.codec.encode_batch(message.input_id, decision.events),
                            headers={RUN_HEADER: cache.state.run_id, SEQ_HEADER: str(seq)},
                        )
                    except TransportError as exc:  # the worker's cache catches up by reading
                        log.debug("no receipt sent to %s: %s", receipt_to[:100], exc)
                effects = effects_for(
                    cache.state, decision.events, decided_through=decision.decided_through
                ) + list(decision.effects)
            elif decision.outcome == DUPLICATE:
                self.stats["duplicates"] += 1
                # re-derive the recorded batch's effects from the run as it is now, not as this
                # server last saw it: another server may have moved it on since (an old view
                # would dispatch finished activities again, or write an old status)
                await self._refresh(cache)
                effects = list(decision.effects)
                if decision.recorded is not None:
                    first, last = decision.recorded
                    effects = effects_for(cache.state, cache.events[first - 1 : last]) + effects
            else:
                effects = list(decision.effects)
                if decision.outcome == REJECTED:
                    self.stats["rejected"] += 1
                    log.warning(
                        "rejected %s for run %s: %s",
                        type(message).__name__,
                        cache.state.run_id,
                        decision.reason,
                        extra={"run_id": cache.state.run_id, "workflow_id": cache.workflow_id},
                    )
                else:
                    self.stats["ignored"] += 1
                    log.debug("ignored %s: %s", message.input_id, decision.reason)
            await self._execute(cache, effects)
            metrics.SERVER_INPUTS.inc(
                self.layout.namespace, type(message).__name__, decision.outcome
            )
            return decision
        raise TransportError(
            f"run {cache.state.run_id}: gave up after 50 optimistic-concurrency conflicts"
        )

    def _count_events(self, cache: RunCache, events: Sequence[ev.Event]) -> None:
        """Metrics and one log line per recorded event (debug; failures and closes at info)."""
        ns = self.layout.namespace
        for e in events:
            self._log_event(cache, e)
            if isinstance(e, ev.ActivityCompleted):
                metrics.ACTIVITY_OUTCOMES.inc(ns, "completed")
            elif isinstance(e, ev.ActivityRetryScheduled):
                metrics.ACTIVITY_OUTCOMES.inc(ns, "retried")
                if e.failure.timeout_type:
                    metrics.ACTIVITY_TIMEOUTS.inc(ns, e.failure.timeout_type)
            elif isinstance(e, ev.ActivityFailed):
                metrics.ACTIVITY_OUTCOMES.inc(ns, "failed")
            elif isinstance(e, ev.ActivityTimedOut):
                metrics.ACTIVITY_OUTCOMES.inc(ns, "timed_out")
                metrics.ACTIVITY_TIMEOUTS.inc(ns, e.timeout_type)
            elif isinstance(e, ev.TERMINAL_EVENTS):
                metrics.WORKFLOWS_CLOSED.inc(ns, status_of(e))

    def _log_event(self, cache: RunCache, e: ev.Event) -> None:
        important = isinstance(e, _NOTEWORTHY)
        level = logging.INFO if important else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        extra: dict[str, object] = {
            "workflow_id": cache.workflow_id,
            "run_id": cache.state.run_id,
            "event_id": e.event_id,
            "event": type(e).__name__,
        }
        seq = getattr(e, "seq", None)
        if seq is not None:
            extra["command_id"] = seq
            if isinstance(e, ev.ACTIVITY_EVENTS):
                extra["activity_id"] = seq
        attempt = getattr(e, "attempt", None)
        if attempt is not None:
            extra["attempt"] = attempt
        failure = getattr(e, "failure", None)
        if failure is not None:
            extra["error"] = failure.describe()
        log.log(level, "recorded %s", type(e).__name__, extra=extra)

    # ------------------------------------------------------------------ starting runs

    def _start_lock(self, workflow_id: str) -> asyncio.Lock:
        lock = self._start_locks.get(workflow_id)
        if lock is None:
            lock = self._start_locks[workflow_id] = asyncio.Lock()
        return lock

    async def _latest_run(self, workflow_id: str) -> tuple[LatestRun | None, int]:
        last = await self.history.last_of_workflow(workflow_id)
        if last is None:
            return None, 0
        cache = self._cached(last.run_id)
        if cache is not None and cache.last_seq == last.batch.stream_seq:
            st = cache.state
            return LatestRun(st.run_id, st.status, st.started.request_id), last.batch.stream_seq
        status = RunStatus.RUNNING
        for e in last.batch.events:
            if isinstance(e, ev.TERMINAL_EVENTS):
                status = status_of(e)
        first = last.batch.events[0]
        if isinstance(first, ev.WorkflowStarted):
            request_id = first.request_id
        else:
            head = await self.history.first_batch(workflow_id, last.run_id)
            started = head.events[0] if head else None
            request_id = started.request_id if isinstance(started, ev.WorkflowStarted) else ""
        return LatestRun(last.run_id, status, request_id), last.batch.stream_seq

    async def _handle_start(self, request: inp.StartWorkflowRequest, reply_to: str) -> None:
        wid = request.workflow_id
        async with self._start_lock(wid):
            await self._start_locked(request, reply_to)

    async def _start_locked(self, request: inp.StartWorkflowRequest, reply_to: str) -> None:
        wid = request.workflow_id
        for attempt in range(50):
            if attempt == 0 and request.continued_from is None and request.signal_name is None:
                # Most ids are new: try to create the run without looking first. If the id has
                # history, the sequence check fails and the next round looks it up.
                latest, latest_seq = None, 0
            else:
                latest, latest_seq = await self._latest_run(wid)
            d = decide_start(request, latest)
            if d.action == "existing":
                cache = await self._load(wid, d.run_id)
                async with cache.lock:
                    # the run as it is now (another server may have moved it on): effects
                    # re-derived from an old view would redo finished work
                    await self._refresh(cache)
                    lo, hi = cache.state.applied_inputs.get("start", (1, 1))
                    await self._execute(cache, effects_for(cache.state, cache.events[lo - 1 : hi]))
                await self._reply(reply_to, Reply(True, run_id=d.run_id))
                return
            if d.action == "reject":
                await self._reply(
                    reply_to,
                    Reply(
                        False,
                        run_id=d.run_id,
                        error_type="WorkflowAlreadyStartedError",
                        message=d.message,
                    ),
                )
                if request.parent is not None:
                    await await_ack(
                        self._send_input(
                            request.parent.workflow_id,
                            inp.RecordChildStartFailed(
                                request.parent.run_id,
                                request.parent.seq,
                                Failure(d.message, type="WorkflowAlreadyStartedError"),
                            ),
                        )
                    )
                return
            if d.action == "signal":
                await self._handle_run_input(
                    wid,
                    inp.SignalWorkflow(
                        d.run_id,
                        request.signal_name or "",
                        f"{request.request_id}:signal",
                        request.signal_args,
                    ),
                )
                await self._reply(reply_to, Reply(True, run_id=d.run_id))
                return
            run_id = request.run_id or new_run_id()
            events = start_events(
                request, namespace=self.layout.namespace, run_id=run_id, now=time.time()
            )
            try:
                seq = await self.history.append(
                    wid, run_id, "start", events, latest_seq, whole_workflow=True
                )
            except WrongLastSequence:
                self.stats["conflicts"] += 1
                metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                continue
            metrics.WORKFLOWS_STARTED.inc(self.layout.namespace)
            metrics.SERVER_INPUTS.inc(self.layout.namespace, "StartWorkflowRequest", "applied")
            first = events[0]
            assert isinstance(first, ev.WorkflowStarted)
            state = RunState(started=first)
            state.apply(events, "start")
            cache = RunCache(wid, state, list(events), seq, seq)
            self._remember(run_id, cache)
            await self._reply(reply_to, Reply(True, run_id=run_id))
            async with cache.lock:
                await self._execute(cache, effects_for(state, events))
            log.info(
                "started workflow %s run %s (%s)",
                wid,
                run_id,
                request.workflow_type,
                extra={"workflow_id": wid, "run_id": run_id},
            )
            return
        raise TransportError(f"could not start {wid!r}: too many concurrent conflicting starts")

    # ------------------------------------------------------------------ effects

    async def _send_input(
        self, workflow_id: str, message: inp.RunInput, msg_id: str = ""
    ) -> asyncio.Future[PubAck]:
        data = self.codec.encode_input(InputEnvelope(workflow_id, input=message))
        headers = {MSG_ID: msg_id or f"{message.run_id}:{message.input_id}"}
        return await self.pub.send(self.layout.input(SERVER), data, headers)

    async def _execute(self, cache: RunCache, effects: Sequence[Effect]) -> None:
        """Send every effect's messages (pipelined), then wait for all their PubAcks."""
        if not effects:
            return
        pending: list[Awaitable[object]] = []
        for e in effects:
            await self._effect(cache, e, pending)
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    async def _effect(self, cache: RunCache, e: Effect, pending: list[Awaitable[object]]) -> None:
        layout = self.layout
        pub = self.pub
        run_id = cache.state.run_id
        if isinstance(e, DispatchWorkflowTask):
            task = e.task
            events = cache.events
            if cache.wft_sent_upto:
                delta: Sequence[ev.Event] = events[cache.wft_sent_upto :]
            elif len(events) <= FULL_HISTORY_IN_TASK:
                delta = events
            else:
                delta = ()
            cache.wft_sent_upto = len(events)
            data = self.codec.encode_workflow_task(
                WorkflowTaskMessage(task, tuple(delta), cache.last_seq)
            )
            if len(data) > min(MAX_TASK_BYTES, max_payload(self.nc) // 2):
                # too big to carry: the worker reads the history
                data = self.codec.encode_workflow_task(
                    WorkflowTaskMessage(task, (), cache.last_seq)
                )
            pending.append(
                await pub.send(
                    layout.workflow_tasks(task.task_queue),
                    data,
                    {MSG_ID: f"wt:{run_id}:{task.trigger}:{task.attempt}"},
                )
            )
        elif isinstance(e, DispatchActivityTask):
            atask = e.task
            data = self.codec.encode_activity_task(atask)
            target = layout.activity_tasks(atask.task_queue)
            msg_id = f"at:{run_id}:{atask.seq}:{atask.attempt}"
            if e.deliver_at is None or e.deliver_at <= time.time() + 0.01:
                pending.append(await pub.send(target, data, {MSG_ID: msg_id}))
            else:
                # the same Msg-Id on the schedule: if this dispatch is derived again (a timer's
                # durable copy arrives after its local fast path) once the retry is due, the
                # direct publish above is a duplicate instead of a second delivery
                headers = {SCHEDULE: _at(e.deliver_at), SCHEDULE_TARGET: target, MSG_ID: msg_id}
                subject = layout.timer(run_id, f"r{atask.seq}.{atask.attempt}")
                pending.append(await pub.send(subject, data, headers))
        elif isinstance(e, ArmTimer):
            await self._arm(cache, e, pending)
        elif isinstance(e, StartRun):
            data = self.codec.encode_input(InputEnvelope(e.request.workflow_id, start=e.request))
            headers = {MSG_ID: f"start:{e.request.request_id}"}
            pending.append(await pub.send(layout.input("start"), data, headers))
        elif isinstance(e, NotifyParent):
            p = e.parent
            msg: inp.RunInput
            if e.started:
                msg = inp.RecordChildStarted(p.run_id, p.seq, e.child_run_id)
            else:
                msg = inp.RecordChildClosed(p.run_id, p.seq, e.child_run_id, e.result, e.failure)
            pending.append(await self._send_input(p.workflow_id, msg))
        elif isinstance(e, CancelChildRun):
            cancel = inp.RequestCancel(e.run_id or "", e.request_id, e.reason)
            pending.append(
                await self._send_input(e.workflow_id, cancel, msg_id=f"cxl:{e.request_id}")
            )
        elif isinstance(e, TerminateChildRun):
            term = inp.TerminateWorkflow(e.run_id or "", e.request_id, e.reason)
            pending.append(
                await self._send_input(e.workflow_id, term, msg_id=f"trm:{e.request_id}")
            )
        elif isinstance(e, CancelActivities):
            raw = orjson.dumps({"reason": e.reason})
            for seq in e.seqs:
                key = f"$KV.{layout.activity_bucket}.{layout.cancel_key(run_id, seq)}"
                pending.append(await pub.send(key, raw))
        elif isinstance(e, UpdateStatus):
            summary = e.summary
            body = self.codec.encode_summary(summary)
            key = (
                f"$KV.{layout.runs_bucket}.{layout.status_key(summary.workflow_id, summary.run_id)}"
            )
            if summary.status in RunStatus.CLOSED:
                pending.append(await pub.send(key, body))
            else:
                # "running" is a run's first status, written once: a copy derived again later
                # (a start delivered twice, another server's older view) must never overwrite
                # its close, or clients wait for a result that is long there
                created = await pub.send(key, body, {EXPECTED_LAST_SUBJECT_SEQ: "0"})
                pending.append(_unless_present(created))
            if summary.status in RunStatus.CLOSED:
                self._cancel_local_timers(run_id)
                # The close is in history already; waiting clients get the outcome right away
                # (the notice carries it), while the status entry is being stored.
                with contextlib.suppress(TransportError):
                    await self.pub.notify(
                        layout.closed_notice(summary.workflow_id, summary.run_id), body
                    )

    async def _arm(self, cache: RunCache, e: ArmTimer, pending: list[Awaitable[object]]) -> None:
        run_id = cache.state.run_id
        wid = cache.workflow_id
        fire = inp.FireTimer(run_id, e.key)
        now = time.time()
        data = self.codec.encode_input(InputEnvelope(wid, input=fire))
        key = (run_id, e.key)
        old = self._timers.pop(key, None)
        if old is not None:  # re-armed (a heartbeat moved the deadline)
            old.cancel()
        if e.fire_at <= now + 0.001:
            # Already due (a workflow-time timer recorded late, a zero delay): straight to the
            # input stream. A local timer alone would be lost with this process, and nothing
            # else would fire it.
            headers = {MSG_ID: f"tmr:{run_id}:{e.key}:{e.fire_at!r}"}
            pending.append(await self.pub.send(self.layout.input("timer"), data, headers))
            return
        headers = {SCHEDULE: _at(e.fire_at), SCHEDULE_TARGET: self.layout.input("timer")}
        pending.append(await self.pub.send(self.layout.timer(run_id, e.key), data, headers))
        if not self.options.local_timers:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, e.fire_at - now)
        self._timers[key] = loop.call_later(delay, self._fire_local, wid, fire)

    def _fire_local(self, workflow_id: str, fire: inp.FireTimer) -> None:
        self._timers.pop((fire.run_id, fire.key), None)
        if self._stopping.is_set():
            return
        task = asyncio.create_task(self._fire_local_async(workflow_id, fire))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire_local_async(self, workflow_id: str, fire: inp.FireTimer) -> None:
        try:
            await self._storage.retry(lambda: self._handle_run_input(workflow_id, fire))
        except Exception as exc:  # the durable schedule fires anyway
            log.warning("local timer %s of run %s failed: %s", fire.key, fire.run_id, exc)

    def _cancel_local_timers(self, run_id: str) -> None:
        for key in [k for k in self._timers if k[0] == run_id]:
            self._timers.pop(key).cancel()


_NOTEWORTHY = (
    ev.ActivityRetryScheduled,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.WorkflowTaskFailed,
    *ev.TERMINAL_EVENTS,
)
"""Events logged at info level; every other recorded event is logged at debug."""


def _instead_of_too_large(
    state: RunState, message: inp.RunInput, exc: MessageRejectedError
) -> inp.RunInput | None:
    """What to record when the events ``message`` produces are too large to store: its
    failure, so the run shows why instead of waiting for a report that can never land."""
    limit = f"{exc.limit:,}" if exc.limit else "max_payload"
    size = f"{exc.size:,} bytes" if exc.size else "too large"
    advice = (
        "Pass large values by reference (store the data elsewhere, e.g. a JetStream object "
        "store, and pass its key), or raise max_payload in the nats-server config"
    )
    if isinstance(message, inp.CompleteWorkflowTask):
        last = state.last_wft_failure
        attempt = last.attempt + 1 if last is not None else 1
        failure = Failure(
            message=(
                f"the decisions of this workflow task cannot be recorded: their events are "
                f"{size}, and the NATS server stores at most {limit} bytes per message "
                f"(max_payload). {advice}"
            ),
            type="MessageRejectedError",
        )
        return inp.FailWorkflowTask(
            message.run_id, message.based_on, failure, attempt, message.worker
        )
    if isinstance(message, inp.CompleteActivityTask):
        if message.commands:  # record the result alone; a workflow task decides again
            return evolve(message, commands=(), event_id=0, completed_at=None, more=False)
        failure = Failure(
            message=(
                f"the result of activity #{message.seq} (attempt {message.attempt}) cannot be "
                f"recorded: its history message is {size}, and the NATS server stores at most "
                f"{limit} bytes per message (max_payload). {advice}; not retried, as another "
                "attempt would return as much"
            ),
            type="MessageRejectedError",
            non_retryable=True,
        )
        return inp.FailActivityTask(message.run_id, message.seq, message.attempt, failure)
    return None


def _new_run_id_if_needed(message: inp.RunInput) -> str:
    if isinstance(message, inp.CompleteWorkflowTask) and any(
        isinstance(c, ContinueAsNewWorkflow) for c in message.commands
    ):
        return new_run_id()
    return ""


def _unless_present(sent: asyncio.Future[PubAck]) -> asyncio.Future[PubAck | None]:
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


async def await_ack(send: Awaitable[asyncio.Future[PubAck]]) -> PubAck:
    return await (await send)
