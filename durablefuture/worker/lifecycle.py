"""The Worker: builds its parts, binds the task queue's consumers and subscriptions, and
stops gracefully (drain: stop taking tasks, let running ones finish and be reported).

Each delivery runs guarded (:mod:`~durablefuture.worker.deliveries`) in the part for its kind:
:mod:`~durablefuture.worker.workflow_tasks`, :mod:`~durablefuture.worker.queries` and
:mod:`~durablefuture.worker.activities` (with :mod:`~durablefuture.worker.attempt` and
:mod:`~durablefuture.worker.handover`); they share :mod:`~durablefuture.worker.reports` and
the run cache (:mod:`~durablefuture.worker.cache`). :mod:`~durablefuture.worker.liveness`
publishes the worker's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from durablefuture import metrics
from durablefuture.client import Client
from durablefuture.core.definitions import ActivityDefinition, WorkflowDefinition
from durablefuture.core.errors import (
    InvalidArgumentError,
    JetStreamUnavailableError,
    MessageRejectedError,
)
from durablefuture.core.liveness import MAX_RUNNING, RunningAttempt, WorkerRecord, capped
from durablefuture.core.types import check_name
from durablefuture.transport.activity_bucket import ActivityBucket
from durablefuture.transport.connection import connection_lost, read_loop_stopped
from durablefuture.transport.consumer import PullConsumer
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer, open_bucket
from durablefuture.transport.leases import AttemptLeases
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.transport.namespace_settings import read_settings
from durablefuture.transport.startup import until_ready
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import sticky_token
from durablefuture.transport.translate import translated
from durablefuture.worker.activities import ActivityTasks
from durablefuture.worker.cache import RunCache
from durablefuture.worker.deliveries import Deliveries
from durablefuture.worker.eager import EagerActivities
from durablefuture.worker.eager_starts import EagerOffers
from durablefuture.worker.handover import Handover
from durablefuture.worker.liveness import Liveness
from durablefuture.worker.options import WorkerOptions
from durablefuture.worker.queries import Queries
from durablefuture.worker.reports import Reports
from durablefuture.worker.workflow_tasks import WorkflowTasks

__all__ = ["Worker"]

log = logging.getLogger("durablefuture.worker")

# start-up errors that waiting does not heal
_PERMANENT = (JetStreamUnavailableError, MessageRejectedError)


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
        if options is not None:
            options.check()
        self.client = client
        self.task_queue = check_name(task_queue)
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.options = options or WorkerOptions()
        self.sticky_token = sticky_token(self.identity) if workflows and self.options.sticky else ""
        """The token of this worker's sticky subject ("" when it takes no sticky tasks)."""
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
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent_activities, thread_name_prefix="df-activity"
        )
        self._consumers: list[PullConsumer] = []
        self._max_deliver: dict[str, int] = {}  # per consumer, as created (maybe by another)
        self._loops: list[asyncio.Task[None]] = []
        self._query_sub: Subscription | None = None
        self._stopping = asyncio.Event()
        self._remove_health: Callable[[], None] = lambda: None
        self._draining: asyncio.Future[None] | None = None
        self.abandoned = 0  # tasks still running when the last drain timed out (to their leases)
        self._started = False
        self._started_at = time.time()
        self._running: dict[tuple[str, int, int], RunningAttempt] = {}
        self._run_task: asyncio.Task[None] | None = None
        lease = min(self.options.workflow_task_timeout, self.options.activity_lease)
        self._storage = StorageWait(
            f"df-worker {self.identity}", keepalive=max(0.1, min(1.0, lease / 3))
        )
        self.stats: dict[str, int] = dict.fromkeys(
            ("workflow_tasks", "activity_tasks", "cache_hits", "cache_misses", "replays"), 0
        )
        self._cache = RunCache(max_cached_workflows)
        self._reports = Reports(self.codec, self.pub, self.layout, self._storage, self._stopping)
        self._reports.ask = self.options.ask_reports
        self._deliveries = Deliveries(
            self.codec,
            self.pub,
            self.layout,
            identity=self.identity,
            reports=self._reports,
            storage=self._storage,
            stopping=self._stopping,
        )
        self._workflow_tasks = WorkflowTasks(
            client,
            self.workflows,
            identity=self.identity,
            task_queue=self.task_queue,
            cache=self._cache,
            reports=self._reports,
            stats=self.stats,
            dead_letter=self._deliveries.dead_letter,
            activities=self.activities,
            executor=self._executor,
        )
        self._eager = EagerOffers(self._workflow_tasks, task_queue, max_concurrent_workflow_tasks)
        self._queries = Queries(
            client,
            self.workflows,
            identity=self.identity,
            cache=self._cache,
            event_size=self._workflow_tasks.event_size,
        )
        self._handover = Handover(
            client,
            None,
            identity=self.identity,
            task_queue=self.task_queue,
            options=self.options,
            reports=self._reports,
            stopping=self._stopping,
        )
        self._activity_tasks = ActivityTasks(
            client,
            self.activities,
            identity=self.identity,
            task_queue=self.task_queue,
            options=self.options,
            cache=self._cache,
            reports=self._reports,
            handover=self._handover,
            executor=self._executor,
            running=self._running,
            stats=self.stats,
            dead_letter=self._deliveries.dead_letter,
        )
        if self.workflows and self.activities and self.options.eager_activities:
            EagerActivities(  # the activities this worker decides, run here (``eager.py``)
                self._activity_tasks, max_concurrent_activities, self._deliveries.tasks
            ).attach(self._reports, self._workflow_tasks.receipts, self._stopping)
        self._liveness = Liveness(
            client.registry,
            self.liveness_record,
            task_queue=self.task_queue,
            identity=self.identity,
            bucket=self.layout.workers_bucket,
            options=self.options,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, namespace_timeout: float = 60.0) -> None:
        """Create/bind the task queue consumers and start polling.

        If the namespace does not exist yet (df-server not started), or JetStream does not
        answer (a NATS node failing over), keep retrying with a log line for up to
        ``namespace_timeout`` seconds; then :class:`TransportError` says what did not work.
        """
        if self._started:
            return
        await until_ready(
            f"binding worker {self.identity} to namespace {self.layout.namespace!r}",
            self._prepare,
            namespace_timeout,
            transient=lambda exc: not isinstance(exc, _PERMANENT),
            logger=log,
        )
        await self._begin()
        self._started = True
        await self._liveness.start()

    async def _prepare(self) -> None:
        """The JetStream objects this worker uses (idempotent: retried as a whole)."""
        js = self.pub.js
        opts = self.options
        with translated(f"binding worker {self.identity}"):
            if self.activities:
                kv = await open_bucket(js, self.layout.activity_bucket)
                self._activity_tasks.bucket = ActivityBucket(kv, self.layout)
                self._handover.leases = AttemptLeases(self.pub, kv, self.layout, self.codec)
                await self._bind(
                    self.layout.activity_consumer(self.task_queue),
                    self.layout.activity_tasks(self.task_queue),
                    ConsumerSettings(opts.activity_lease, opts.task_max_deliver),
                )
            if self.workflows:
                settings = await read_settings(js, self.layout)
                self._workflow_tasks.history_warning = (
                    settings.history_warn_events,
                    settings.history_warn_bytes,
                )
                await self._bind(
                    self.layout.workflow_consumer(self.task_queue),
                    self.layout.workflow_tasks(self.task_queue),
                    ConsumerSettings(opts.workflow_task_timeout, opts.task_max_deliver),
                )
            if self.sticky_token:
                await self._bind_sticky()

    async def _bind_sticky(self) -> None:
        """This worker's sticky consumer (again, if it was removed under it); df-server deletes
        the one of a worker that is gone (NATS too, after an hour without pulls)."""
        opts = self.options
        with translated(f"binding worker {self.identity}"):
            await self._bind(
                self.layout.sticky_consumer(self.task_queue, self.sticky_token),
                self.layout.sticky_tasks(self.task_queue, self.sticky_token),
                ConsumerSettings(
                    opts.workflow_task_timeout, opts.task_max_deliver, inactive_threshold=3600.0
                ),
            )

    async def _bind(self, name: str, subject: str, settings: ConsumerSettings) -> None:
        """Create or bind consumer ``name``; remember the ``max_deliver`` it has."""
        js, layout = self.pub.js, self.layout
        self._max_deliver[name] = await ensure_consumer(js, layout, name, subject, settings)

    async def _begin(self) -> None:
        """Subscribe and start polling (core NATS only, after :meth:`_prepare`)."""
        if self.workflows:
            name = self.layout.workflow_consumer(self.task_queue)
            await self._poll(
                name, self.max_concurrent_workflow_tasks, self._workflow_tasks.handle, "df-wft"
            )
            if self.sticky_token:
                sticky = self.layout.sticky_consumer(self.task_queue, self.sticky_token)
                await self._poll(
                    sticky,
                    self.max_concurrent_workflow_tasks,
                    self._workflow_tasks.handle,
                    "df-wft-sticky",
                    on_missing=self._bind_sticky,
                )
                self._reports.sticky = self.sticky_token
            self._query_sub = await self.client.nc.subscribe(
                self.layout.query(self.task_queue), queue="workers", cb=self._queries.on_query
            )
            await self._eager.listen()  # the receipts' inbox, then the eager start offers
        if self.activities:
            name = self.layout.activity_consumer(self.task_queue)
            await self._poll(
                name, self.max_concurrent_activities, self._activity_tasks.handle, "df-act"
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

    async def _poll(
        self,
        consumer_name: str,
        credits: int,
        handler: Callable[[Msg], Awaitable[None]],
        loop_name: str,
        on_missing: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        consumer = PullConsumer(
            self.client.nc,
            self.layout.stream,
            consumer_name,
            credits=credits,
            on_missing=on_missing,
        )
        await consumer.start()
        self._consumers.append(consumer)
        max_deliver = self._max_deliver.get(consumer_name, self.options.task_max_deliver)
        loop = self._deliveries.loop(consumer, handler, max_deliver)
        self._loops.append(asyncio.create_task(loop, name=loop_name))

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
        await self._eager.close()
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
        running_tasks = self._deliveries.tasks
        if running_tasks:
            running = len(running_tasks)
            log.info(
                "draining: waiting up to %gs for %d running task(s) to finish and be reported",
                timeout,
                running,
            )
            _, left = await asyncio.wait(set(running_tasks), timeout=timeout)
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
        await self._liveness.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

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

    async def __aenter__(self) -> Worker:
        await self.start()
        self._run_task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._run_task
