"""df-worker as a library: runs workflow tasks and/or activity tasks of one task queue.

Workflow tasks: the run's generator is rebuilt from history (or resumed from the worker's cache
of live generators) by the pure replayer; the new commands go back to the server as a report,
and the task is acked only after that report is stored. Activity tasks: the function runs (sync
ones in a thread pool, async ones on the loop) with its timeouts enforced locally, heartbeats
recorded, and the result or structured failure reported, again before the ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats.js.errors
import orjson
from attrs import define, evolve
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from durablefuture import metrics, tracing
from durablefuture.activity_context import (
    ActivityContext,
    ActivityInfo,
    info_for,
    reset_activity_context,
    set_activity_context,
)
from durablefuture.client import Client
from durablefuture.codec.wire import InputEnvelope, WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import Command
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition
from durablefuture.core.effects import ActivityTask, WorkflowTask
from durablefuture.core.errors import (
    CancelledError,
    CorruptHistoryError,
    DecodeError,
    InvalidArgumentError,
    MessageRejectedError,
    NonDeterminismError,
    NotRegisteredError,
    PayloadError,
    QueryFailedError,
    StorageFullError,
    TransportError,
    WorkflowError,
)
from durablefuture.core.failure import Failure, FailureKind, failure_from_exception
from durablefuture.core.liveness import MAX_RUNNING, RunningAttempt, WorkerRecord, capped
from durablefuture.core.replay import Activation, WorkflowExecution, describe_command
from durablefuture.core.state import RunState
from durablefuture.core.types import JsonValue, check_name
from durablefuture.transport.connection import connection_lost, read_loop_stopped
from durablefuture.transport.consumer import PullConsumer, delivery_count
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject, max_payload
from durablefuture.transport.headers import RECEIPT_HEADER, RUN_HEADER, SEQ_HEADER
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer, open_bucket
from durablefuture.transport.leases import AttemptLease, AttemptLeases
from durablefuture.transport.publisher import MSG_ID
from durablefuture.transport.storage import StorageWait

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("durablefuture.worker")

MAX_TASK_DELIVERIES = 18
"""A task that fails this often on workers is recorded as failed and dead-lettered (the
consumers allow 20 deliveries)."""
MAX_REPORT_COMMANDS = 1000
MAX_REPORT_BYTES = 256 * 1024
MAX_FAILURE_CHARS = 4000
"""A failure report too large to send is cut to this many characters of message."""
REPORT_TRIES = 40
"""Tries to store an attempt's outcome (a few minutes) before its task is left to redelivery."""
MAX_KNOWN_ATTEMPTS = 10_000
"""Finished activity attempts a worker remembers (a late delivery of one is not run again)."""


@define
class WorkerOptions:
    """Settings of the task-queue consumers a worker creates when they do not exist yet."""

    workflow_task_timeout: float = 10.0
    """A workflow task not acked within this is redelivered (its worker died)."""
    drain_timeout: float = 60.0
    """On shutdown (SIGTERM for df-worker), how long running activity attempts and workflow
    tasks may take to finish and be reported before the worker stops anyway. An attempt still
    running then is abandoned: another worker retries it once its lease runs out."""
    activity_lease: float = 30.0
    """An activity task whose worker stops extending its lease for this long is redelivered;
    the next worker finds the attempt's lease abandoned, reports the attempt as timed out
    (worker lost) and it is retried. A live worker renews the lease every quarter of this."""
    started_report_after: float = 1.0
    """An attempt running longer than this is reported as started, so the server enforces
    its start-to-close and heartbeat timeouts with durable timers."""
    liveness_interval: float = 2.0
    """Seconds between two liveness records (registrations, running attempts, last seen)."""
    liveness_ttl: float | None = None
    """A worker's record expires this long after its last write (default: three intervals,
    at least 2 s); `df why` then reports the worker as gone."""

    def record_ttl(self) -> float:
        if self.liveness_ttl is not None:
            return max(1.0, self.liveness_ttl)
        return max(2.0, 3 * self.liveness_interval)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a future nobody awaits (a lost lease renewal is tolerated)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a lease renewal failed: %s", future.exception())


def _identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _CachedRun:
    """A live generator, the stream sequence it reflects, and events it assumed.

    ``provisional`` holds activity completions this worker fed to the generator before the
    server recorded them (fused reports). Each is checked against the history the next time
    history is read; any difference means the server decided otherwise, and the cache is
    dropped for a full replay.
    """

    __slots__ = ("diverged", "execution", "inflight_at", "inflight_seq", "last_seq", "provisional")

    def __init__(self, execution: WorkflowExecution, last_seq: int) -> None:
        self.execution = execution
        self.last_seq = last_seq
        self.provisional: dict[int, ev.Event] = {}
        self.diverged = False
        self.inflight_seq: int | None = None
        self.inflight_at = 0.0

    def sent(self, commands: Sequence[Command]) -> None:
        """Remember the first command of a report on its way to the server."""
        first = next((c.seq for c in commands if hasattr(c, "seq")), None)
        self.inflight_seq = first
        self.inflight_at = time.monotonic()

    def awaiting_server(self) -> bool:
        """A report of ours is not recorded yet (and not so old that it may have been lost)."""
        seq = self.inflight_seq
        if seq is None:
            return False
        if not self.execution.is_pending(seq) or time.monotonic() - self.inflight_at > 5.0:
            self.inflight_seq = None
            return False
        return True

    def confirm(self, events: Sequence[ev.Event]) -> bool:
        """Check recorded ``events`` against assumed ones; False (for good) if any differs."""
        if self.diverged:
            return False
        if not self.provisional:
            return True
        for e in events:
            assumed = self.provisional.pop(e.event_id, None)
            if assumed is not None and assumed != e:
                self.diverged = True
                return False
        return True

    def unverifiable(self, first_event_id: int) -> bool:
        """Assumed events before ``first_event_id`` cannot be checked against these events."""
        return any(i < first_event_id for i in self.provisional)

    def catch_up(self, events: Sequence[ev.Event]) -> bool:
        """Feed recorded ``events`` the generator has not seen; False if they do not fit."""
        have = self.execution.last_event_id
        if not events or events[0].event_id > have + 1:
            return False
        if self.unverifiable(events[0].event_id):
            # receipts arrive in order: an assumed event not confirmed by now was not recorded
            # as assumed
            self.diverged = True
            return False
        seen = [e for e in events if e.event_id <= have]
        if not self.confirm(seen):
            return False
        new = [e for e in events if e.event_id > have]
        if new:
            try:
                self.execution.feed(new)
            except Exception:
                self.diverged = True
                return False
        return True


class _AttemptRecord:
    """What this process knows of one activity attempt it took a delivery of.

    While ``done`` is not set a handler is on it (running it, or waiting for the worker that
    holds its lease). Then ``report`` is its outcome, ``reported`` once that is stored (or
    nothing needs reporting). Another delivery of the same attempt waits for ``done`` and
    never starts the attempt again.
    """

    __slots__ = ("done", "report", "reported")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.report: inp.RunInput | None = None
        self.reported = False


class Worker:
    """Runs the workflows and activities it is given, for one task queue.

    ``async with df.Worker(client, task_queue="orders", workflows=[...], activities=[...]):``
    or ``await worker.run()`` until cancelled / ``await worker.shutdown()``.
    """

    def __init__(
        self,
        client: Client,
        task_queue: str = "default",
        workflows: Sequence[Callable[..., object]] = (),
        activities: Sequence[Callable[..., object]] = (),
        *,
        max_concurrent_activities: int = 100,
        max_concurrent_workflow_tasks: int = 100,
        max_cached_workflows: int = 10_000,
        identity: str | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        if not workflows and not activities:
            raise InvalidArgumentError(
                "a worker needs at least one workflow or activity: Worker(client, "
                "task_queue=..., workflows=[...], activities=[...])"
            )
        if max_concurrent_activities < 1 or max_concurrent_workflow_tasks < 1:
            raise InvalidArgumentError("max_concurrent_* must be >= 1")
        if options is not None and not options.liveness_interval > 0:
            raise InvalidArgumentError(
                f"liveness_interval must be > 0 seconds, got {options.liveness_interval!r}"
            )
        self.client = client
        self.task_queue = check_name(task_queue)
        self.identity = identity or _identity()
        self.options = options or WorkerOptions()
        self.workflows: dict[str, WorkflowDefinition] = {}
        for fn in workflows:
            d = WorkflowDefinition.from_fn(fn)
            if d.name in self.workflows:
                raise InvalidArgumentError(f"workflow name {d.name!r} is registered twice")
            self.workflows[d.name] = d
        self.activities: dict[str, ActivityDefinition] = {}
        for fn in activities:
            a = ActivityDefinition.from_fn(fn)
            if a.name in self.activities:
                raise InvalidArgumentError(f"activity name {a.name!r} is registered twice")
            self.activities[a.name] = a
        self.max_concurrent_activities = max_concurrent_activities
        self.max_concurrent_workflow_tasks = max_concurrent_workflow_tasks
        self.max_cached_workflows = max_cached_workflows
        self.codec = client.codec
        self.layout = client.layout
        self.pub = client.pub
        self._cache: OrderedDict[str, _CachedRun] = OrderedDict()
        self._closed_runs: OrderedDict[str, None] = OrderedDict()
        self._run_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent_activities, thread_name_prefix="df-activity"
        )
        self._consumers: list[PullConsumer] = []
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._act_kv: KeyValue | None = None
        self._leases: AttemptLeases | None = None
        self._attempts: OrderedDict[tuple[str, int, int], _AttemptRecord] = OrderedDict()
        self._query_sub: Any = None
        self._receipts = ""
        self._receipt_sub: Any = None
        self._stopping = asyncio.Event()
        self._remove_health: Callable[[], None] = lambda: None
        self._draining: asyncio.Future[None] | None = None
        self.abandoned = 0
        """Tasks still running when the last drain timed out (abandoned to their leases)."""
        self._started = False
        self._started_at = time.time()
        self._registry = client.registry
        self._liveness_task: asyncio.Task[None] | None = None
        self._liveness_failing = False
        self._running: dict[tuple[str, int, int], RunningAttempt] = {}
        self._run_task: asyncio.Task[None] | None = None
        lease = min(self.options.workflow_task_timeout, self.options.activity_lease)
        self._storage = StorageWait(
            f"df-worker {self.identity}", keepalive=max(0.1, min(1.0, lease / 3))
        )
        self.stats: dict[str, int] = {
            "workflow_tasks": 0,
            "activity_tasks": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "replays": 0,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, namespace_timeout: float = 60.0) -> None:
        """Create/bind the task queue consumers and start polling.

        If the namespace does not exist yet (df-server not started), keep retrying with a log
        line for up to ``namespace_timeout`` seconds.
        """
        if self._started:
            return
        deadline = time.monotonic() + namespace_timeout
        while True:
            try:
                await self._bind()
                break
            except TransportError as exc:
                if "does not exist" not in str(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("%s; retrying", exc)
                await asyncio.sleep(1.0)
        self._started = True
        await self._start_liveness()

    async def _bind(self) -> None:
        js = self.pub.js
        opts = self.options
        if self.activities:
            self._act_kv = await open_bucket(js, self.layout.activity_bucket)
            self._leases = AttemptLeases(self.pub, self._act_kv, self.layout, self.codec)
        if self.workflows:
            name = self.layout.workflow_consumer(self.task_queue)
            await ensure_consumer(
                js,
                self.layout,
                name,
                self.layout.workflow_tasks(self.task_queue),
                ConsumerSettings(opts.workflow_task_timeout, 20),
            )
            consumer = PullConsumer(
                self.client.nc,
                self.layout.stream,
                name,
                credits=self.max_concurrent_workflow_tasks,
            )
            await consumer.start()
            self._consumers.append(consumer)
            self._loops.append(
                asyncio.create_task(self._loop(consumer, self._workflow_task), name="df-wft")
            )
            self._query_sub = await self.client.nc.subscribe(
                self.layout.query(self.task_queue), queue="workers", cb=self._on_query
            )
            self._receipts = self.client.nc.new_inbox()
            self._receipt_sub = await self.client.nc.subscribe(self._receipts, cb=self._on_receipt)
        if self.activities:
            name = self.layout.activity_consumer(self.task_queue)
            await ensure_consumer(
                js,
                self.layout,
                name,
                self.layout.activity_tasks(self.task_queue),
                ConsumerSettings(opts.activity_lease, 20),
            )
            consumer = PullConsumer(
                self.client.nc,
                self.layout.stream,
                name,
                credits=self.max_concurrent_activities,
            )
            await consumer.start()
            self._consumers.append(consumer)
            self._loops.append(
                asyncio.create_task(self._loop(consumer, self._activity_task), name="df-act")
            )
        self._remove_health = metrics.add_health_check(f"worker {self.identity}", self._health)
        log.info(
            "worker %s polling task queue %s (workflows: %s; activities: %s)",
            self.identity,
            self.task_queue,
            sorted(self.workflows),
            sorted(self.activities),
            extra={"task_queue": self.task_queue},
        )

    async def run(self) -> None:
        """Run until cancelled or :meth:`shutdown` is called."""
        await self.start()
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(connection_lost(self.client.nc, self._stopping))
        try:
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                raise lost.result()
        finally:
            stop.cancel()
            lost.cancel()
            await self._drain()

    def _health(self) -> str | None:
        nc = self.client.nc
        if self._stopping.is_set():
            return "shutting down"
        if read_loop_stopped(nc):
            return "the NATS client stopped reading from its connection"
        if not nc.is_connected:
            return (
                "not connected to NATS (reconnecting)"
                if nc.is_reconnecting
                else ("the connection to NATS is closed")
            )
        return None

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking tasks; wait for running ones to finish and be reported, for up to
        ``timeout`` seconds (``WorkerOptions.drain_timeout`` by default)."""
        self._stopping.set()
        self._remove_health()
        await self._drain(self.options.drain_timeout if timeout is None else timeout)

    async def _drain(self, timeout: float | None = None) -> None:
        """Stop consuming and wait for running tasks; one drain, however many callers."""
        if self._draining is None or (self._draining.done() and self._consumers):
            self._draining = asyncio.ensure_future(
                self._drain_once(self.options.drain_timeout if timeout is None else timeout)
            )
        await asyncio.shield(self._draining)

    async def _drain_once(self, timeout: float) -> None:
        if self._query_sub is not None:
            with contextlib.suppress(Exception):
                await self._query_sub.unsubscribe()
            self._query_sub = None
        for consumer in self._consumers:
            await consumer.stop()
        for loop_task in self._loops:
            loop_task.cancel()
        for loop_task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
        self._loops.clear()
        self._consumers.clear()
        if self._tasks:
            running = len(self._tasks)
            log.info(
                "draining: waiting up to %gs for %d running task(s) to finish and be reported",
                timeout,
                running,
            )
            _, left = await asyncio.wait(set(self._tasks), timeout=timeout)
            self.abandoned = len(left)
            if left:
                log.warning(
                    "%d task(s) still running after the %gs drain timeout are abandoned; "
                    "their activity attempts are retried by another worker when their lease "
                    "(%gs) runs out",
                    len(left),
                    timeout,
                    self.options.activity_lease,
                )
        await self._stop_liveness()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ liveness

    def liveness_record(self) -> WorkerRecord:
        """What this worker publishes about itself now (registrations, running attempts)."""
        workflows, workflows_more = capped(self.workflows)
        activities, activities_more = capped(self.activities)
        running = sorted(self._running.values(), key=lambda a: a.since)
        return WorkerRecord(
            identity=self.identity,
            namespace=self.layout.namespace,
            task_queue=self.task_queue,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            last_seen=time.time(),
            interval=self.options.liveness_interval,
            ttl=self.options.record_ttl(),
            workflows=workflows,
            workflows_more=workflows_more,
            activities=activities,
            activities_more=activities_more,
            running=tuple(running[:MAX_RUNNING]),
            running_more=max(0, len(running) - MAX_RUNNING),
        )

    async def _start_liveness(self) -> None:
        try:
            available = await self._registry.available()
        except TransportError as exc:
            log.warning("cannot publish worker liveness: %s", exc)
            available = False
        if not available:
            log.warning(
                "the workers bucket %s does not exist (df-server is older than this worker); "
                "this worker's registrations and liveness are not published",
                self.layout.workers_bucket,
            )
            return
        await self._publish_liveness()
        self._liveness_task = asyncio.create_task(self._liveness_loop(), name="df-liveness")

    async def _liveness_loop(self) -> None:
        interval = self.options.liveness_interval
        while True:  # until cancelled, after running tasks have drained
            await asyncio.sleep(interval)
            await self._publish_liveness()

    async def _publish_liveness(self) -> None:
        try:
            await self._registry.put(self.liveness_record(), self.options.record_ttl())
        except Exception as exc:  # a lost record is retried on the next beat
            if not self._liveness_failing:
                log.warning("cannot publish worker liveness: %s", exc)
            self._liveness_failing = True
            return
        if self._liveness_failing:
            log.info("worker liveness published again")
        self._liveness_failing = False

    async def _stop_liveness(self) -> None:
        task, self._liveness_task = self._liveness_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        try:
            await self._registry.remove(self.task_queue, self.identity, self.options.record_ttl())
        except Exception as exc:  # it expires on its own
            log.debug("cannot remove the liveness record: %s", exc)

    async def __aenter__(self) -> Worker:
        await self.start()
        self._run_task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._run_task

    async def _loop(self, consumer: PullConsumer, handler: Callable[[Msg], Any]) -> None:
        while not self._stopping.is_set():
            msg = await consumer.next()
            task = asyncio.create_task(self._guard(consumer, handler, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guard(self, consumer: PullConsumer, handler: Callable[[Msg], Any], msg: Msg) -> None:
        try:  # whatever the message is, its credit is released in `finally`
            if delivery_count(msg) > 1:
                metrics.REDELIVERIES.inc("worker")
            await handler(msg)
        except asyncio.CancelledError:
            raise
        except StorageFullError:
            # not the task's fault: never given up on; StorageWait has said why, once
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._storage.max_delay)
        except Exception as exc:
            delivered = delivery_count(msg)
            log.warning(
                "task on %s failed (delivery %d): %s",
                msg.subject,
                delivered,
                exc,
                exc_info=not isinstance(exc, TransportError),
            )
            with contextlib.suppress(Exception):
                if delivered >= MAX_TASK_DELIVERIES:
                    await self._give_up(msg, delivered, exc)
                else:
                    await msg.nak(delay=min(30.0, 0.5 * 2 ** (delivered - 1)))
        finally:
            consumer.release()

    async def _give_up(self, msg: Msg, delivered: int, exc: Exception) -> None:
        """A task failed too often to keep retrying: record that in the run's history (the
        activity attempt or workflow task fails, and is retried per policy), then move the
        message to the dead letters. Nothing is left silently stuck."""
        reason = f"the task failed {delivered} times on workers; last error: {exc}"
        failure = Failure(message=reason, type=type(exc).__name__)
        with contextlib.suppress(Exception):
            if ".at." in msg.subject:
                task = self.codec.decode_activity_task(msg.data)
                await self._report(
                    task.workflow_id,
                    inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure),
                )
            else:
                m = self.codec.decode_workflow_task(msg.data)
                await self._report(
                    m.task.workflow_id,
                    inp.FailWorkflowTask(
                        m.task.run_id, m.task.trigger, failure, m.task.attempt, self.identity
                    ),
                    task=m.task,
                )
        await self._dead_letter(msg, reason)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` as a dead letter, then terminate it (kept and retried if the store
        fails: a refused task is never lost without a trace)."""
        if await dead_letter(self.pub, self.layout.dead_letter("worker"), msg, "worker", reason):
            metrics.DEAD_LETTERS.inc("worker")

    async def _report(
        self,
        workflow_id: str,
        message: inp.RunInput,
        receipt: bool = False,
        *,
        keep: Msg | None = None,
        task: WorkflowTask | None = None,
    ) -> None:
        """Store a report for the server. With ``keep`` (the task it reports on), a full
        JetStream store is waited out with that task kept in progress, never given up on.
        ``task``: the workflow task it answers (part of the message id)."""
        data = self.codec.encode_input(InputEnvelope(workflow_id, input=message))
        msg_id = f"{message.run_id}:{message.input_id}"
        if task is not None:
            # The answer to a workflow task is a fact of that task: a report based on the same
            # event that the server could not use (it rejected one based on an event it had
            # not stored yet) must not make the store drop this one as its duplicate.
            msg_id = f"{msg_id}:{task.trigger}.{task.attempt}"
        headers = {MSG_ID: msg_id}
        if receipt and self._receipts:
            headers[RECEIPT_HEADER] = self._receipts

        async def publish() -> None:
            await self.pub.publish(self.layout.input("report"), data, headers)

        if keep is None:
            await publish()
            self._storage.stored()
        else:
            await self._storage.retry(publish, keep)

    async def _on_receipt(self, msg: Msg) -> None:
        """The server recorded our decisions: feed them to the cached generator."""
        run_id = (msg.headers or {}).get(RUN_HEADER, "")
        if run_id not in self._cache:
            return
        try:
            _, events = self.codec.decode_batch(msg.data)
        except DecodeError:
            return
        async with self._lock(run_id):
            cached = self._cache.get(run_id)
            if cached is None:
                return
            if cached.catch_up(events):
                seq = (msg.headers or {}).get(SEQ_HEADER, "")
                if seq.isdigit():
                    cached.last_seq = max(cached.last_seq, int(seq))
                if cached.execution.closed:
                    self._remember_closed(run_id)
                    return
                if cached.execution.finished:
                    return
                execution = cached.execution
                if execution.has_pending_commands and not cached.awaiting_server():
                    # a large decision goes out in parts: send the next one now
                    commands, more = self._bounded(execution.activation().commands)
                    report = inp.CompleteWorkflowTask(
                        run_id, execution.last_event_id, commands, self.identity, more=more
                    )
                    cached.sent(commands)
                    wid = execution.started.workflow_id if execution.started else ""
                    try:
                        await self._report(wid, report, receipt=True)
                    except TransportError as exc:
                        # the server dispatches a workflow task for the rest (the last report
                        # said "more"); it replays from history and reports what is wrong
                        log.debug("next part of run %s not sent: %s", run_id, exc)
                        self._cache.pop(run_id, None)

    # ------------------------------------------------------------------ workflow tasks

    def _lock(self, run_id: str) -> asyncio.Lock:
        lock = self._run_locks.get(run_id)
        if lock is None:
            lock = asyncio.Lock()
            self._run_locks[run_id] = lock
        return lock

    async def _workflow_task(self, msg: Msg) -> None:
        try:
            m = self.codec.decode_workflow_task(msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, str(exc))
            return
        self.stats["workflow_tasks"] += 1
        task = m.task
        began = time.perf_counter()
        started = m.events[0] if m.events and isinstance(m.events[0], ev.WorkflowStarted) else None
        cached = self._cache.get(task.run_id)
        parent = (
            started.headers
            if started is not None
            else cached.execution.started.headers
            if cached is not None and cached.execution.started is not None
            else None
        )
        async with self._lock(task.run_id):
            if self._redundant(m):
                report = None
                why = "redundant"
            else:
                why = "nothing to report"
                with tracing.span(
                    f"RunWorkflow:{task.workflow_type}",
                    parent,
                    {"workflow_id": task.workflow_id, "run_id": task.run_id},
                ):
                    report = await self._run_workflow_task(m)
                if report is not None:
                    report = await self._send_workflow_report(task, report, msg)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "workflow task %s run %s trigger %d (delivery %d): %s",
                task.workflow_id,
                task.run_id,
                task.trigger,
                delivery_count(msg),
                why if report is None else f"reported {report.input_id}",
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
        await msg.ack()
        outcome = (
            "idle"
            if report is None
            else "failed"
            if isinstance(report, inp.FailWorkflowTask)
            else "commands"
        )
        metrics.WORKFLOW_TASKS.inc(self.task_queue, outcome)
        metrics.WORKFLOW_TASK_SECONDS.observe(time.perf_counter() - began, self.task_queue)

    async def _send_workflow_report(
        self, task: WorkflowTask, report: inp.RunInput, msg: Msg
    ) -> inp.RunInput:
        """Send a workflow task's report; returns what was sent. A report NATS would refuse
        (too large) becomes a FailWorkflowTask that says which command, how big, the limit
        and what to do, so the run shows why instead of retrying a report that cannot land."""
        try:
            await self._report(task.workflow_id, report, receipt=True, keep=msg, task=task)
            return report
        except MessageRejectedError as exc:
            self._cache.pop(task.run_id, None)  # its generator assumed the report went out
            if isinstance(report, inp.CompleteWorkflowTask):
                failure = self._too_large_report(report, exc)
                failed = inp.FailWorkflowTask(
                    task.run_id, report.based_on, failure, task.attempt, self.identity
                )
            elif isinstance(report, inp.FailWorkflowTask):
                failed = evolve(report, failure=_cut(report.failure))
            else:
                raise
            log.error(
                "workflow task for %s run %s: %s",
                task.workflow_id,
                task.run_id,
                failed.failure.message,
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
            await self._report(task.workflow_id, failed, keep=msg)
            return failed

    def _too_large_report(
        self, report: inp.CompleteWorkflowTask, exc: MessageRejectedError
    ) -> Failure:
        limit = exc.limit or max_payload(self.client.nc)
        unstructure = self.codec.converter.unstructure
        sized = [(len(orjson.dumps(unstructure(c, Command))), c) for c in report.commands]
        if sized:
            size, biggest = max(sized, key=lambda pair: pair[0])
            seq = getattr(biggest, "seq", None)
            what = f"command {type(biggest).__name__}"
            what += f" #{seq}" if seq is not None else ""
            brief = describe_command(biggest).split(" args=")[0]  # the args are the bulk
            what += f" ({brief}) is {size:,} bytes encoded"
        else:
            what = f"the report is {exc.size or 0:,} bytes"
        return Failure(
            message=(
                f"the workflow task's decisions cannot be reported: {what}, and the NATS "
                f"server accepts at most {limit:,} bytes per message (max_payload). Pass large "
                "values by reference (store the data elsewhere, e.g. in a JetStream object "
                "store, and pass its key), or raise max_payload in the nats-server config; the "
                "workflow task is retried with backoff"
            ),
            type="MessageRejectedError",
        )

    def _event_size(self, event: ev.Event) -> int:
        return len(orjson.dumps(self.codec.encode_event(event)))

    def _redundant(self, m: WorkflowTaskMessage) -> bool:
        """A workflow task with nothing new for the cached run (the run is closed, or its
        generator already saw the triggering event and has nothing unsent): ack it at once."""
        task = m.task
        if task.run_id in self._closed_runs:
            return True
        cached = self._cache.get(task.run_id)
        if cached is None or cached.diverged or cached.provisional or task.attempt > 1:
            return False
        execution = cached.execution
        if execution.closed:
            return True
        if task.trigger > execution.last_event_id:
            return False
        if execution.finished and not execution.closed:
            return cached.awaiting_server()  # our terminal decision is on its way
        return not execution.has_pending_commands or cached.awaiting_server()

    def _remember_closed(self, run_id: str) -> None:
        self._cache.pop(run_id, None)
        self._closed_runs[run_id] = None
        while len(self._closed_runs) > self.max_cached_workflows:
            self._closed_runs.popitem(last=False)

    async def _run_workflow_task(self, m: WorkflowTaskMessage) -> inp.RunInput | None:
        task = m.task
        cached = self._cache.pop(task.run_id, None)
        execution: WorkflowExecution | None = None
        activation = None
        try:
            if cached is not None:
                execution = cached.execution
                new = self._new_events(cached, m.events)
                if new is None:
                    new = await self._tail(task, cached, m.history_seq)
                if new is not None:
                    try:
                        activation = execution.feed(new)
                        self.stats["cache_hits"] += 1
                        metrics.CACHE_LOOKUPS.inc("worker", "hit")
                    except NonDeterminismError:
                        activation = None  # our cached view diverged: replay from history
            if activation is None:
                self.stats["cache_misses"] += 1
                metrics.CACHE_LOOKUPS.inc("worker", "miss")
                execution = None
                execution, activation = await self._replay(task, m)
        except (NonDeterminismError, NotRegisteredError, WorkflowError, CorruptHistoryError) as exc:
            log.error(
                "workflow task for %s run %s failed: %s",
                task.workflow_id,
                task.run_id,
                exc,
                extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
            )
            # a replay that failed has no execution: the task was based on its trigger event
            # (0 would look stale once the run has commands, and the failure would be dropped)
            based_on = execution.last_event_id if execution is not None else task.trigger
            return inp.FailWorkflowTask(
                task.run_id,
                based_on,
                failure_from_exception(exc),
                task.attempt,
                self.identity,
            )
        if execution is not None and execution.closed:
            self._remember_closed(task.run_id)
        elif execution is not None:
            entry = cached if cached is not None and cached.execution is execution else None
            if entry is None:
                entry = _CachedRun(execution, m.history_seq)
            else:
                entry.last_seq = max(entry.last_seq, m.history_seq)
            self._cache[task.run_id] = entry
            while len(self._cache) > self.max_cached_workflows:
                self._cache.popitem(last=False)
        if not activation.commands:
            return None
        entry = self._cache.get(task.run_id)
        if entry is not None and entry.awaiting_server():
            return None  # our last report is still on its way; its receipt continues from there
        if entry is not None and entry.provisional:
            # The generator has seen an activity result that history does not hold yet (this
            # worker reported it together with what the code decided on it). A report based on
            # it would be rejected; the result's report carries these decisions, and if the
            # server records the result differently a workflow task follows.
            return None
        commands, more = self._bounded(activation.commands)
        if entry is not None:
            entry.sent(commands)
        return inp.CompleteWorkflowTask(
            task.run_id, activation.based_on, commands, self.identity, more=more
        )

    def _bounded(self, commands: tuple[Command, ...]) -> tuple[tuple[Command, ...], bool]:
        """At most MAX_REPORT_COMMANDS commands and ~MAX_REPORT_BYTES per report.

        A NATS message is limited (1 MiB by default); a fan-out of thousands of activities is
        recorded over several reports, each followed by a workflow task for the next.
        """
        if len(commands) == 1:
            return commands, False
        # leave room for the envelope, and for the events the server makes of the commands
        budget = min(MAX_REPORT_BYTES, max(1024, (max_payload(self.client.nc) - 4096) // 2))
        size = 0
        unstructure = self.codec.converter.unstructure
        for i, cmd in enumerate(commands):
            if i >= MAX_REPORT_COMMANDS:
                return commands[:i], True
            size += len(orjson.dumps(unstructure(cmd, Command)))
            if size > budget and i > 0:
                return commands[:i], True
        return commands, False

    def _new_events(self, cached: _CachedRun, delta: Sequence[ev.Event]) -> list[ev.Event] | None:
        """The part of ``delta`` the cached run has not seen; None on a gap or a mismatch."""
        have = cached.execution.last_event_id
        if not delta:
            return None
        first = delta[0].event_id
        if first > have + 1 or cached.unverifiable(first):
            return None  # read the whole history (and check what we assumed)
        seen = delta[: max(0, have - first + 1)]
        if not cached.confirm(seen):
            return None
        return list(delta[len(seen) :])

    async def _tail(
        self, task: WorkflowTask, cached: _CachedRun, through: int
    ) -> list[ev.Event] | None:
        # ``through``: the task was dispatched once history reached it, so the read must too
        batches = await self.client.history.read(
            task.workflow_id, task.run_id, through=through or None
        )
        events = [e for b in batches for e in b.events]
        have = cached.execution.last_event_id
        if len(events) < have or not cached.confirm(events[:have]):
            return None
        if batches:
            cached.last_seq = batches[-1].stream_seq
        return events[have:]

    async def _replay(
        self, task: WorkflowTask, m: WorkflowTaskMessage
    ) -> tuple[WorkflowExecution, Activation]:
        definition = self.workflows.get(task.workflow_type)
        if definition is None:
            raise NotRegisteredError(
                f"workflow type {task.workflow_type!r} is not registered on worker "
                f"{self.identity} (task queue {self.task_queue!r}); registered workflows: "
                f"{sorted(self.workflows)}. Add it to Worker(workflows=[...]) or start it on a "
                "task queue whose workers have it"
            )
        if m.events and m.events[0].event_id == 1:
            events = list(m.events)
        else:
            # read at least as far as the history was when the task was dispatched (a replica
            # that is behind may answer the read): replaying without the trigger event would
            # decide nothing, and the task would be acknowledged with the run left waiting
            batches = await self.client.history.read(
                task.workflow_id, task.run_id, through=m.history_seq or None
            )
            events = [e for b in batches for e in b.events]
        self.stats["replays"] += 1
        began = time.perf_counter()
        execution = WorkflowExecution(definition, self.codec.payloads, size_of=self._event_size)
        activation = execution.feed(events)
        metrics.REPLAY_SECONDS.observe(time.perf_counter() - began, self.task_queue)
        return execution, activation

    # ------------------------------------------------------------------ queries

    async def _on_query(self, msg: Msg) -> None:
        try:  # answer an inbox only: never write where the asker names (a run's history)
            check_reply_subject(msg.reply, "query reply subject")
        except MessageRejectedError as exc:
            log.error("refused a query: %s", exc)
            return
        try:
            answer = await self._answer_query(msg.data)
            body = {"ok": True, "result": answer}
        except Exception as exc:
            body = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        with contextlib.suppress(Exception):
            await msg.respond(orjson.dumps(body))

    async def _answer_query(self, data: bytes) -> JsonValue:
        try:
            req = orjson.loads(data)
            wid, run_id, name = req["wid"], req["run"], req["name"]
            args = tuple(req.get("args") or ())
        except Exception as exc:
            raise QueryFailedError(f"malformed query: {exc}") from None
        async with self._lock(run_id):
            cached = self._cache.get(run_id)
            batches = await self.client.history.read(
                wid, run_id, cached.last_seq if cached is not None else 0
            )
            if not batches and cached is None:
                raise QueryFailedError(f"no history for workflow {wid!r} run {run_id}")
            events = [e for b in batches for e in b.events]
            execution = cached.execution if cached is not None else None
            if cached is not None and cached.provisional:
                # assumed events must be confirmed: read everything and check
                batches = await self.client.history.read(wid, run_id)
                events = [e for b in batches for e in b.events]
                if not cached.confirm(events[: cached.execution.last_event_id]):
                    self._cache.pop(run_id, None)
                    execution = None
            if execution is not None:
                new = [e for e in events if e.event_id > execution.last_event_id]
                try:
                    execution.feed(new)
                    cached.last_seq = batches[-1].stream_seq if batches else cached.last_seq  # type: ignore[union-attr]
                except NonDeterminismError:
                    self._cache.pop(run_id, None)
                    execution = None
                    batches = await self.client.history.read(wid, run_id)
                    events = [e for b in batches for e in b.events]
            if execution is None:
                started = events[0] if events else None
                if not isinstance(started, ev.WorkflowStarted):
                    raise QueryFailedError(f"history of run {run_id} does not start correctly")
                definition = self.workflows.get(started.workflow_type)
                if definition is None:
                    raise QueryFailedError(
                        f"workflow type {started.workflow_type!r} is not registered on worker "
                        f"{self.identity}; registered: {sorted(self.workflows)}"
                    )
                execution = WorkflowExecution(
                    definition, self.codec.payloads, size_of=self._event_size
                )
                execution.feed(events)
            value = execution.query(name, args)
        return self.codec.payloads.to_payload(value, f"result of query {name!r}")

    # ------------------------------------------------------------------ activity tasks

    async def _activity_task(self, msg: Msg) -> None:
        try:
            task = self.codec.decode_activity_task(msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, str(exc))
            return
        self.stats["activity_tasks"] += 1
        key = (task.run_id, task.seq, task.attempt)
        if key in self._attempts:
            self._log_again(task, "this worker")
        while (known := self._attempts.get(key)) is not None:
            # This process has (had) the attempt: this is another delivery of its task (nats-server
            # restarted and handed it out again, or an ack never arrived). Never start it twice:
            # wait for the first delivery's outcome, make sure it is stored, then ack.
            if not known.done.is_set():
                if not await self._hold(msg, known.done.wait()):
                    return  # stopping: this delivery is left to its ack wait
                continue
            if known.report is not None and not known.reported:
                await self._store_outcome(task, msg, known.report)
                known.reported = True
            await msg.ack()
            metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
            return
        record = _AttemptRecord()
        self._attempts[key] = record
        while len(self._attempts) > MAX_KNOWN_ATTEMPTS:
            oldest, first = next(iter(self._attempts.items()))
            if not first.done.is_set():
                break
            del self._attempts[oldest]
        try:
            await self._attempt_task(task, msg, record)
        finally:
            if record.report is None and not record.reported and self._attempts.get(key) is record:
                del self._attempts[key]  # no outcome: the next delivery starts over
            record.done.set()

    async def _attempt_task(self, task: ActivityTask, msg: Msg, record: _AttemptRecord) -> None:
        holder = await self._claim(task)
        if holder is not None:
            if await self._attempt_closed(task):  # it finished: its outcome is recorded
                self._log_again(task, f"worker {holder.holder}")
                record.reported = True
                await msg.ack()
                metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
                return
            if holder.holder != self.identity:
                self._log_again(task, f"worker {holder.holder}")
                await self._follow(task, msg, record, holder)
                return
            # our own claim, whose acknowledgement was lost (NATS went away): this process
            # knows every attempt it runs (``_attempts``), and it runs no such attempt
        stale = await self._not_to_run(task)
        if stale is not None:
            # the report closes the activity if the server has not already done so
            record.report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, stale)
            await self._report(task.workflow_id, record.report, keep=msg)
            record.reported = True
            await msg.ack()
            return
        metrics.SCHEDULE_TO_START_SECONDS.observe(
            max(0.0, time.time() - task.attempt_scheduled_at), self.task_queue
        )
        began = time.perf_counter()
        key = (task.run_id, task.seq, task.attempt)
        self._running[key] = RunningAttempt(
            task.workflow_id, task.run_id, task.seq, task.name, task.attempt, time.time()
        )
        try:
            with tracing.span(
                f"RunActivity:{task.name}",
                task.headers,
                {"workflow_id": task.workflow_id, "activity_id": task.seq, "attempt": task.attempt},
            ):
                report = await self._run_activity(task, msg)
        finally:
            self._running.pop(key, None)
        try:
            if isinstance(report, inp.CompleteActivityTask) and task.run_id in self._cache:
                async with self._lock(task.run_id):
                    report = self._fuse(report)
                    record.report = report
                    await self._store_outcome(task, msg, report, receipt=True)
            else:
                record.report = report
                await self._store_outcome(task, msg, report)
        except MessageRejectedError as exc:
            report = await self._activity_report_rejected(task, report, exc, msg)
            record.report = report
        record.reported = True
        await msg.ack()
        metrics.ACTIVITY_RUN_SECONDS.observe(
            time.perf_counter() - began, self.task_queue, task.name
        )
        if isinstance(report, inp.CompleteActivityTask):
            outcome = "completed"
        elif isinstance(report, inp.FailActivityTask) and report.failure.timeout_type:
            outcome = "timed_out"
        else:
            outcome = "failed"
        metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, outcome)

    async def _activity_report_rejected(
        self, task: ActivityTask, report: inp.RunInput, exc: MessageRejectedError, msg: Msg
    ) -> inp.RunInput:
        """An attempt's report NATS would refuse (too large): report what can be sent instead
        (the result without the fused decisions, else a failure saying why), never loop.

        A result too large is a non-retryable failure: another attempt would run the activity
        (and its side effects) again only to produce as large a result.
        """
        if isinstance(report, inp.CompleteActivityTask) and report.commands:
            self._cache.pop(task.run_id, None)  # its generator assumed this completion
            report = evolve(report, commands=(), event_id=0, completed_at=None, more=False)
            try:
                await self._report(task.workflow_id, report, keep=msg)
                return report
            except MessageRejectedError as again:
                exc = again
        if isinstance(report, inp.CompleteActivityTask):
            limit = exc.limit or max_payload(self.client.nc)
            failure = Failure(
                message=(
                    f"the result of activity {task.name!r} (attempt {task.attempt}) cannot be "
                    f"reported: it makes a report of {exc.size or 0:,} bytes, and the NATS "
                    f"server accepts at most {limit:,} bytes per message (max_payload). Return "
                    "a reference to large data (store it elsewhere, e.g. in a JetStream object "
                    "store, and return its key), or raise max_payload in the nats-server "
                    "config; not retried, as another attempt would return as much"
                ),
                type="MessageRejectedError",
                non_retryable=True,
            )
            report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        elif isinstance(report, inp.FailActivityTask):
            report = evolve(report, failure=_cut(report.failure), heartbeat_details=())
        else:
            raise exc
        log.error(
            "activity %s #%s of run %s: %s",
            task.name,
            task.seq,
            task.run_id,
            report.failure.message,
            extra={"workflow_id": task.workflow_id, "run_id": task.run_id},
        )
        await self._report(task.workflow_id, report, keep=msg)
        return report

    async def _store_outcome(
        self, task: ActivityTask, msg: Msg, report: inp.RunInput, receipt: bool = False
    ) -> None:
        """Store an attempt's outcome, retrying while NATS is away (the result is never
        computed again). Meanwhile the task stays ours and the lease is renewed: other workers
        given a copy of the task wait for this outcome instead of calling the attempt lost."""
        delay = 0.25
        for tries in range(1, REPORT_TRIES + 1):
            try:
                await self._report(task.workflow_id, report, receipt=receipt, keep=msg)
                return
            except MessageRejectedError:
                raise
            except TransportError as exc:
                if tries == REPORT_TRIES or self._stopping.is_set():
                    raise
                if tries == 1:
                    log.warning(
                        "could not store the outcome of attempt %d of activity %s yet (%s); "
                        "retrying",
                        task.attempt,
                        task.seq,
                        exc,
                        extra={"run_id": task.run_id, "activity_id": task.seq},
                    )
            with contextlib.suppress(Exception):
                await msg.in_progress()
            await self._renew_lease(task)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    def _log_again(self, task: ActivityTask, holder: str) -> None:
        log.info(
            "attempt %d of activity %s (#%d of run %s) was delivered again; %s has it, so it is "
            "not run again",
            task.attempt,
            task.name,
            task.seq,
            task.run_id,
            holder,
            extra={
                "workflow_id": task.workflow_id,
                "run_id": task.run_id,
                "activity_id": task.seq,
                "attempt": task.attempt,
            },
        )

    async def _claim(self, task: ActivityTask) -> AttemptLease | None:
        """Take the attempt's lease: None if this worker runs it, else who holds it."""
        if self._leases is None:
            return None
        return await self._leases.claim(
            task.run_id,
            task.seq,
            task.attempt,
            self.identity,
            self.options.activity_lease,
            time.time(),
        )

    async def _renew_lease(self, task: ActivityTask) -> None:
        """A sign of life of a running attempt for other workers, without waiting for the
        store (best effort: a lost renewal is followed by the next one)."""
        if self._leases is None:
            return
        try:
            ack = await self._leases.renew(
                task.run_id,
                task.seq,
                task.attempt,
                self.identity,
                self.options.activity_lease,
                time.time(),
            )
        except Exception as exc:
            log.debug("could not renew the lease of activity %s: %s", task.seq, exc)
            return
        ack.add_done_callback(_consume)

    async def _attempt_closed(self, task: ActivityTask) -> bool:
        """Whether history holds the attempt's outcome (or the run is over)."""
        batches = await self.client.history.read(task.workflow_id, task.run_id)
        if not batches:
            return True  # no such run (any more)
        state = RunState.from_history([(b.input_id, b.events) for b in batches])
        act = state.activities.get(task.seq)
        return not state.is_open or act is None or act.closed or act.attempt > task.attempt

    async def _hold(self, msg: Msg, waiting: Awaitable[object]) -> bool:
        """Await ``waiting`` while keeping ``msg`` from being redelivered; False (and
        ``waiting`` abandoned) if the worker stops first."""
        job = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stopping.wait())
        every = max(0.05, self.options.activity_lease / 3)
        try:
            while True:
                done, _ = await asyncio.wait(
                    {job, stop}, timeout=every, return_when=asyncio.FIRST_COMPLETED
                )
                if job in done:
                    job.result()
                    return True
                if stop in done:
                    return False
                with contextlib.suppress(Exception):
                    await msg.in_progress()
        finally:
            job.cancel()
            stop.cancel()

    async def _follow(
        self, task: ActivityTask, msg: Msg, record: _AttemptRecord, lease: AttemptLease
    ) -> None:
        """Another worker holds this attempt: never start it here.

        Keep this delivery while the holder renews the lease. Once it stops, the attempt
        finished (history holds its outcome: just ack) or the holder is gone (report the
        attempt timed out, as lost with its worker; the server retries it per policy).
        """
        leases = self._leases
        assert leases is not None
        poll = max(0.05, min(1.0, self.options.activity_lease / 4))
        # A live holder rewrites the lease every quarter of it. An entry whose last write is
        # older than the lease belongs to a holder that stopped, but another host's clock is
        # trusted only so far: we watch for at least 3/4 of the lease ourselves.
        window = max(0.75 * lease.lease, lease.lease - max(0.0, time.time() - lease.at))
        since = time.monotonic()
        current: AttemptLease | None = lease
        while current is not None and time.monotonic() - since < window:
            if not await self._hold(msg, asyncio.sleep(poll)):
                return  # stopping: this delivery is left to its ack wait
            latest = await leases.read(task.run_id, task.seq, task.attempt)
            if latest is not None and latest.revision != current.revision:
                since, window = time.monotonic(), latest.lease  # renewed: alive
            elif await self._attempt_closed(task):
                record.reported = True  # by the holder
                await msg.ack()
                metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
                return
            current = latest
        if await self._attempt_closed(task):
            record.reported = True
            await msg.ack()
            metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "duplicate")
            return
        failure = Failure(
            message=(
                f"attempt {task.attempt} of activity {task.name!r} was handed to another "
                f"worker after its worker stopped responding for {lease.lease:g}s (crashed or "
                "disconnected)"
            ),
            type="TimeoutError",
            kind=FailureKind.TIMEOUT,
            timeout_type="start_to_close",
        )
        record.report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        # if the holder's report is stored but not yet recorded, this one is ignored as late
        await self._report(task.workflow_id, record.report)
        record.reported = True
        await msg.ack()
        metrics.WORKER_ACTIVITIES.inc(self.task_queue, task.name, "lost")

    async def _not_to_run(self, task: ActivityTask) -> Failure | None:
        """Why an attempt that reached this worker must not start (None: run it).

        A task stays in its queue until a worker takes it, possibly long after the server gave
        up on it; running it then would be an orphaned attempt nobody waits for.
        """
        s2s = task.options.schedule_to_start_timeout
        if s2s is not None and time.time() > task.attempt_scheduled_at + s2s:
            return Failure(
                message=(
                    f"attempt {task.attempt} of activity {task.name!r} reached a worker after "
                    f"its schedule_to_start_timeout of {s2s:g}s; not run"
                ),
                type="TimeoutError",
                kind=FailureKind.TIMEOUT,
                timeout_type="schedule_to_start",
            )
        if task.attempt > 1 and self._act_kv is not None:
            # a retry that fell due after its run closed or was asked to cancel
            try:
                await self._act_kv.get(self.layout.cancel_key(task.run_id, task.seq))
            except Exception:  # not flagged, or cannot tell: run it
                return None
            return Failure(
                message=(
                    f"attempt {task.attempt} of activity {task.name!r} was not run: the "
                    "workflow no longer wants its result"
                ),
                type="CancelledError",
                kind=FailureKind.CANCELLED,
            )
        return None

    def _fuse(self, report: inp.CompleteActivityTask) -> inp.CompleteActivityTask:
        """Let the cached generator see this result now and report what it decides with it.

        Saves the server a round trip through a workflow task. The server records the result
        and the decisions together only if its history is where this worker saw it.
        """
        cached = self._cache.get(report.run_id)
        if cached is None or cached.execution.finished or cached.diverged:
            return report
        if cached.execution.has_pending_commands:
            # earlier decisions are not confirmed yet: let a workflow task carry on from history
            return report
        execution = cached.execution
        event_id = execution.last_event_id + 1
        at = time.time()
        assumed = ev.ActivityCompleted(
            event_id=event_id,
            at=at,
            seq=report.seq,
            attempt=report.attempt,
            result=report.result,
        )
        try:
            activation = execution.feed([assumed])
        except Exception as exc:  # the cached view is off: replay on the next workflow task
            log.debug("not fusing the result of activity %s: %s", report.seq, exc)
            self._cache.pop(report.run_id, None)
            return report
        cached.provisional[event_id] = assumed
        commands, more = self._bounded(activation.commands)
        if commands:
            cached.sent(commands)
        return evolve(report, commands=commands, event_id=event_id, completed_at=at, more=more)

    async def _run_activity(self, task: ActivityTask, msg: Msg) -> inp.RunInput:
        definition = self.activities.get(task.name)
        if definition is None:
            failure = Failure(
                message=(
                    f"activity {task.name!r} is not registered on worker {self.identity} "
                    f"(task queue {self.task_queue!r}); registered activities: "
                    f"{sorted(self.activities)}"
                ),
                type="ActivityNotRegisteredError",
            )
            return inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
        return await _Attempt(self, task, definition, msg).run()


class _Attempt:
    """One activity attempt: run it, keep its lease, enforce timeouts, flush heartbeats."""

    def __init__(
        self, worker: Worker, task: ActivityTask, definition: ActivityDefinition, msg: Msg
    ) -> None:
        self.w = worker
        self.task = task
        self.d = definition
        self.msg = msg
        self.started = time.time()
        self.details: tuple[object, ...] = tuple(task.heartbeat_details)
        self.last_heartbeat = self.started
        self.dirty = False
        self.cancelled = False
        opts = task.options
        deadlines: list[tuple[float, str]] = []
        if opts.start_to_close_timeout is not None:
            deadlines.append((self.started + opts.start_to_close_timeout, "start_to_close"))
        if opts.schedule_to_close_timeout is not None:
            deadlines.append(
                (task.scheduled_at + opts.schedule_to_close_timeout, "schedule_to_close")
            )
        self.deadline = min(deadlines) if deadlines else None

    def _info(self) -> ActivityInfo:
        return info_for(self.task, self.started)

    def _on_heartbeat(self, details: tuple[object, ...]) -> None:
        self.last_heartbeat = time.time()
        if details:
            self.details = details
        self.dirty = True

    def _timeout(self, kind: str, message: str) -> inp.RunInput:
        failure = Failure(
            message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=kind
        )
        return inp.FailActivityTask(
            self.task.run_id, self.task.seq, self.task.attempt, failure, self._details()
        )

    def _details(self) -> tuple[JsonValue, ...]:
        payloads = self.w.codec.payloads
        try:
            return tuple(payloads.to_payload(d, "heartbeat detail") for d in self.details)
        except Exception:
            return tuple(repr(d) for d in self.details)

    async def run(self) -> inp.RunInput:
        t = self.task
        payloads = self.w.codec.payloads
        try:
            args = self.d.structure_args(payloads, t.args)
        except Exception as exc:
            failure = failure_from_exception(exc)
            message = failure.message  # a PayloadError names the argument and the activity
            if not isinstance(exc, PayloadError):
                message = f"cannot decode the arguments of activity {t.name!r}: {message}"
            failure = Failure(
                message=message,
                type=failure.type,
                non_retryable=True,
            )
            return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure)
        ctx = ActivityContext(self._info(), self._on_heartbeat, lambda: self.cancelled)
        job = self._launch(ctx, args)
        opts = t.options
        lease = self.w.options.activity_lease
        report_after = (
            0.0
            if opts.schedule_to_start_timeout is not None or opts.heartbeat_timeout is not None
            else self.w.options.started_report_after
        )
        reported = False
        report_at = self.started + report_after
        last_lease = time.monotonic()
        last_flush = 0.0
        flush_every = max(0.2, opts.heartbeat_timeout * 0.5) if opts.heartbeat_timeout else 2.0
        tick = min(0.5, lease / 4)
        if opts.heartbeat_timeout:
            tick = min(tick, max(0.05, opts.heartbeat_timeout / 4))
        try:
            while True:
                now = time.time()
                if not reported and now >= report_at:
                    try:
                        await self.w._report(
                            t.workflow_id,
                            inp.ReportActivityStarted(t.run_id, t.seq, t.attempt, self.w.identity),
                        )
                        reported = True
                    except TransportError as exc:  # NATS is away: the attempt runs on
                        log.debug("could not report activity %s started: %s", t.seq, exc)
                        report_at = time.time() + 1.0
                wait = tick
                if not reported:
                    wait = min(wait, max(0.0, report_at - now))
                if self.deadline is not None:
                    wait = min(wait, max(0.0, self.deadline[0] - now))
                done, _ = await asyncio.wait({job}, timeout=wait)
                if job in done:
                    break
                now = time.time()
                if self.deadline is not None and now >= self.deadline[0]:
                    job.cancel()
                    kind = self.deadline[1]
                    limit = (
                        opts.start_to_close_timeout
                        if kind == "start_to_close"
                        else opts.schedule_to_close_timeout
                    )
                    return self._timeout(
                        kind,
                        f"attempt {t.attempt} of activity {t.name!r} did not finish within its "
                        f"{kind}_timeout of {limit:g}s",
                    )
                if opts.heartbeat_timeout and now - self.last_heartbeat >= opts.heartbeat_timeout:
                    job.cancel()
                    return self._timeout(
                        "heartbeat",
                        f"attempt {t.attempt} of activity {t.name!r} sent no heartbeat for "
                        f"{opts.heartbeat_timeout:g}s (its heartbeat_timeout)",
                    )
                if time.monotonic() - last_lease >= lease / 4:
                    last_lease = time.monotonic()
                    with contextlib.suppress(Exception):
                        await self.msg.in_progress()
                    await self.w._renew_lease(t)  # a sign of life for other workers
                if self.dirty and now - last_flush >= flush_every:
                    last_flush = now
                    self.dirty = False
                    await self._flush()
        except asyncio.CancelledError:
            job.cancel()
            raise
        if self.dirty:
            with contextlib.suppress(Exception):
                await self._flush()
        return self._outcome(job)

    def _launch(self, ctx: ActivityContext, args: list[object]) -> asyncio.Future[Any]:
        fn = self.d.fn
        loop = asyncio.get_running_loop()
        if self.d.is_async:

            async def call() -> Any:
                token = set_activity_context(ctx)
                try:
                    return await fn(*args)  # type: ignore[misc]
                finally:
                    reset_activity_context(token)

            return asyncio.ensure_future(call())

        def call_sync() -> Any:
            token = set_activity_context(ctx)
            try:
                return fn(*args)
            finally:
                reset_activity_context(token)

        return loop.run_in_executor(self.w._executor, call_sync)

    async def _flush(self) -> None:
        kv = self.w._act_kv
        if kv is None:
            return
        t = self.task
        body = orjson.dumps(
            {"attempt": t.attempt, "at": self.last_heartbeat, "details": list(self._details())}
        )
        try:
            await kv.put(self.w.layout.heartbeat_key(t.run_id, t.seq), body)
            try:
                await kv.get(self.w.layout.cancel_key(t.run_id, t.seq))
                self.cancelled = True
            except nats.js.errors.KeyNotFoundError:
                pass
        except Exception as exc:
            log.debug("heartbeat flush failed: %s", exc)

    def _outcome(self, job: asyncio.Future[Any]) -> inp.RunInput:
        t = self.task
        exc = job.exception() if not job.cancelled() else CancelledError("activity cancelled")
        if exc is None:
            try:
                result = self.w.codec.payloads.to_payload(
                    job.result(), f"result of activity {t.name!r}"
                )
            except Exception as bad:
                f = failure_from_exception(bad)
                failure = Failure(f.message, type=f.type, non_retryable=True, stack=f.stack)
                return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, self._details())
            return inp.CompleteActivityTask(t.run_id, t.seq, t.attempt, result)
        enc_details = self.w.codec.payloads

        def enc(details: tuple[object, ...]) -> tuple[JsonValue, ...]:
            return tuple(enc_details.to_payload(d, "error detail") for d in details)

        failure = failure_from_exception(exc, enc)
        return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, self._details())


def _cut(failure: Failure) -> Failure:
    """``failure`` small enough to report: its message cut, without stack, details or cause."""
    message = failure.message
    if len(message) > MAX_FAILURE_CHARS:
        message = message[:MAX_FAILURE_CHARS] + " [cut]"
    return Failure(
        message=message + " (the full failure was too large to report)",
        type=failure.type[:200],
        kind=failure.kind,
        non_retryable=failure.non_retryable,
        timeout_type=failure.timeout_type,
    )
