"""The client: start workflows, wait for results, inspect, signal, cancel, terminate.

Requests to the server (start, signal, cancel, terminate) are stored in the namespace's stream
first (so they survive a crash of anything) and answered by whichever df-server processes them.
Results are read from the status index (a KV bucket) and waited for with a core-NATS notice, so
waiting costs no polling and no consumer per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import orjson
from attrs import evolve, field, frozen
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from durablefuture import tracing
from durablefuture.codec.wire import Codec, InputEnvelope, Reply, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import bind_args, name_of, result_type_of
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import (
    CorruptHistoryError,
    DurableFutureError,
    InvalidArgumentError,
    MessageRejectedError,
    QueryFailedError,
    ServerUnavailableError,
    TransportError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from durablefuture.core.failure import Failure
from durablefuture.core.liveness import WorkerRecord
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.state import RunState, status_of
from durablefuture.core.types import check_run_id, check_type_name, check_workflow_id
from durablefuture.outcome import outcome_of
from durablefuture.transport.connection import DEFAULT_URL, connect
from durablefuture.transport.headers import REPLY_HEADER
from durablefuture.transport.history import HistoryStore, fold
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout
from durablefuture.transport.tls import TlsConfig
from durablefuture.transport.workers import WorkerRegistry

if TYPE_CHECKING:
    from durablefuture.core.schedules import Schedule
    from durablefuture.schedules import ScheduleDescription, ScheduleHandle, Schedules

__all__ = [
    "Client",
    "PendingActivity",
    "SignalWait",
    "WorkflowDescription",
    "WorkflowHandle",
]

log = logging.getLogger(__name__)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


@frozen
class PendingActivity:
    activity_id: int
    name: str
    attempt: int
    task_queue: str
    scheduled_time: datetime
    started: bool
    last_failure: Failure | None = None
    next_retry_time: datetime | None = None
    worker: str = ""
    """The worker that reported this attempt as started (empty until one has)."""


@frozen
class SignalWait:
    """The workflow code waits for signal ``name`` (``deadline``: when the wait times out)."""

    wait_id: int
    name: str
    since: datetime
    deadline: datetime | None = None


@frozen
class WorkflowDescription:
    """What ``handle.describe()`` and ``client.list_workflows()`` return."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: datetime
    close_time: datetime | None = None
    history_length: int = 0
    result: object = None
    failure: Failure | None = None
    pending_activities: tuple[PendingActivity, ...] = field(default=())
    pending_timers: tuple[tuple[int, datetime], ...] = field(default=())
    signal_waits: tuple[SignalWait, ...] = field(default=())
    cancel_requested: bool = False
    new_run_id: str | None = None
    last_workflow_task_failure: Failure | None = None
    corrupt_at: int | None = None
    """With status ``corrupt``: the stream sequence of the history message that cannot be read
    or folded (``failure`` says why)."""

    @property
    def is_open(self) -> bool:
        return self.status == RunStatus.RUNNING


def _describe_summary(s: RunSummary) -> WorkflowDescription:
    return WorkflowDescription(
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        status=s.status,
        start_time=datetime.fromtimestamp(s.start_time, tz=UTC),
        close_time=_ts(s.close_time),
        history_length=s.history_length,
        result=s.result,
        failure=s.failure,
        new_run_id=s.new_run_id,
    )


def describe_corrupt(exc: CorruptHistoryError, summary: RunSummary | None) -> WorkflowDescription:
    """A run whose history cannot be read: what its status entry knows, and where and why
    the history is corrupt."""
    if summary is None:
        summary = RunSummary(exc.workflow_id, exc.run_id, "", "", RunStatus.CORRUPT, 0.0)
    failure = Failure(
        message=str(exc),
        type="CorruptHistoryError",
        details=(exc.stream_seq, exc.reason),
    )
    summary = evolve(summary, status=RunStatus.CORRUPT, failure=failure)
    return evolve(_describe_summary(summary), corrupt_at=exc.stream_seq)


def describe_state(state: RunState) -> WorkflowDescription:
    s = state.summary()
    pending = []
    for act in state.activities.values():
        if act.closed:
            continue
        pending.append(
            PendingActivity(
                activity_id=act.seq,
                name=act.name,
                attempt=act.attempt,
                task_queue=act.options.task_queue or state.started.task_queue,
                scheduled_time=datetime.fromtimestamp(act.scheduled_at, tz=UTC),
                started=act.started_at is not None,
                last_failure=act.last_failure,
                next_retry_time=_ts(act.retry_at) if act.attempt > 1 else None,
                worker=act.worker,
            )
        )
    waits = tuple(
        SignalWait(
            wait_id=w.seq,
            name=w.name,
            since=datetime.fromtimestamp(w.at, tz=UTC),
            deadline=_ts(w.deadline),
        )
        for _, w in sorted(state.waiting_for_signals.items())
    )
    timers = tuple(
        (seq, datetime.fromtimestamp(at, tz=UTC)) for seq, at in sorted(state.timers.items())
    )
    wft = state.last_wft_failure
    return evolve(
        _describe_summary(s),
        pending_activities=tuple(pending),
        pending_timers=timers,
        signal_waits=waits,
        cancel_requested=state.cancel_requested,
        last_workflow_task_failure=wft.failure if wft is not None else None,
    )


class _Replies:
    """One wildcard inbox for all answers the client waits for."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = f"{nc.new_inbox()}."
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.prefix + "*", cb=self._on)

    async def _on(self, msg: Msg) -> None:
        fut = self._waiting.pop(msg.subject[len(self.prefix) :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg.data)

    def new(self) -> tuple[str, asyncio.Future[bytes]]:
        token = uuid.uuid4().hex
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        return self.prefix + token, fut

    def drop(self, subject: str) -> None:
        self._waiting.pop(subject[len(self.prefix) :], None)


class Client:
    """Connection to one namespace of a DurableFuture deployment.

    ``client = await df.Client.connect("nats://127.0.0.1:4222", namespace="default")``.
    """

    def __init__(self, nc: NATS, namespace: str = "default", *, codec: Codec | None = None):
        self.nc = nc
        self.namespace = namespace
        self.layout = Layout(namespace)
        self.codec = codec or default_codec()
        self.pub = Publisher(nc)
        self.history = HistoryStore(nc, self.pub, self.layout, self.codec)
        self.request_timeout = 15.0
        self._replies = _Replies(nc)
        self._replies_ready = False
        self._runs_kv: KeyValue | None = None
        self._own_nc = False
        self.registry = WorkerRegistry(nc, self.pub, self.layout, self.codec)
        self._schedule_ops: Schedules | None = None

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        namespace: str = "default",
        *,
        connect_timeout: float = 20.0,
        creds: str | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> Client:
        """Connect to NATS (``url`` may list several servers, comma-separated; ``creds`` is a
        NATS credentials file).

        ``tls=df.TlsConfig(ca=..., cert=..., key=...)`` (or a ready ``ssl.SSLContext``) asks
        for TLS, as a ``tls://`` URL does; a failed handshake raises ``df.TlsError`` at once.
        """
        nc = await connect(url, timeout=connect_timeout, name="df-client", creds=creds, tls=tls)
        client = cls(nc, namespace)
        client._own_nc = True
        return client

    async def close(self) -> None:
        if self._own_nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing

    async def _kv(self) -> KeyValue:
        if self._runs_kv is None:
            self._runs_kv = await open_bucket(self.pub.js, self.layout.runs_bucket)
        return self._runs_kv

    async def _request(self, kind: str, env: InputEnvelope, msg_id: str = "") -> Reply:
        return await self._ask(self.layout.input(kind), self.codec.encode_input(env), msg_id)

    async def _ask(self, subject: str, data: bytes, msg_id: str = "") -> Reply:
        """Store a request on ``subject`` and wait for a df-server's answer."""
        if not self._replies_ready:
            await self._replies.start()
            self._replies_ready = True
        reply_to, fut = self._replies.new()
        headers = {REPLY_HEADER: reply_to}
        if msg_id:
            headers[MSG_ID] = msg_id
        deadline = time.monotonic() + self.request_timeout
        try:
            await self._store_request(subject, data, headers, deadline)
            data = await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ServerUnavailableError(
                f"no df-server answered within {self.request_timeout:g}s (namespace "
                f"{self.namespace!r}). The request is stored and will be processed once a "
                "df-server runs; start one with `df-server --nats URL` or `df dev`"
            ) from None
        finally:
            self._replies.drop(reply_to)
        return self.codec.decode_reply(data)

    async def _store_request(
        self, subject: str, data: bytes, headers: dict[str, str], deadline: float
    ) -> None:
        """Publish a request until JetStream acknowledges it, or ``deadline``.

        A NATS cluster that loses a node can leave a publish unanswered (the connection was on
        the node that died or froze) or refused while the stream elects a leader; both are
        sent again, unchanged. That is safe: inputs carry ``Nats-Msg-Id`` and an input id the
        server applies once, starts a request id it answers with the run it started.
        """
        for attempt in range(1, 1000):  # bounded by the deadline; the count is a backstop
            remaining = deadline - time.monotonic()
            try:
                timeout = max(0.5, min(self.pub.timeout, remaining))
                await self.pub.publish(subject, data, headers, timeout=timeout)
                return
            except MessageRejectedError:
                raise
            except TransportError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0.5:
                    raise
                log.info(
                    "storing a request on %s failed (attempt %d: %s); sending it again",
                    subject,
                    attempt,
                    exc,
                )
                await asyncio.sleep(min(0.5, remaining - 0.5))

    # ------------------------------------------------------------------ schedules

    def _schedules(self) -> Schedules:
        from durablefuture.schedules import Schedules

        if self._schedule_ops is None:
            self._schedule_ops = Schedules(self)
        return self._schedule_ops

    async def create_schedule(
        self, schedule_id: str, schedule: Schedule, *, request_id: str | None = None
    ) -> ScheduleHandle:
        """Create a schedule; returns its handle.

        Raises:
            ScheduleAlreadyExistsError: the id is taken (retrying with the same
                ``request_id`` returns the schedule that request created).
        """
        from durablefuture.schedules import create

        return await create(self._schedules(), schedule_id, schedule, request_id)

    def get_schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        from durablefuture.schedules import ScheduleHandle

        return ScheduleHandle(self._schedules(), schedule_id)

    async def list_schedules(self, next_actions: int = 3) -> list[ScheduleDescription]:
        """Every schedule of the namespace, described."""
        from durablefuture.schedules import describe_all

        return await describe_all(self._schedules(), next_actions)

    # ------------------------------------------------------------------ starting

    async def start_workflow(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str,
        task_queue: str | None = None,
        options: WorkflowOptions | None = None,
        signal: tuple[str, Sequence[object]] | None = None,
    ) -> WorkflowHandle:
        """Start a workflow run and return its handle.

        Raises:
            WorkflowAlreadyStartedError: a run with this id is running (or the reuse policy
                forbids a new run). Retrying with the same ``options.request_id`` instead
                returns the run that request started.
        """
        check_workflow_id(id)
        opts = options or WorkflowOptions()
        if task_queue is not None:
            opts = WorkflowOptions(
                task_queue=task_queue,
                namespace=opts.namespace,
                execution_timeout=opts.execution_timeout,
                id_reuse_policy=opts.id_reuse_policy,
                parent_close_policy=opts.parent_close_policy,
                request_id=opts.request_id,
            )
        if opts.namespace is not None and opts.namespace != self.namespace:
            raise InvalidArgumentError(
                f"options.namespace is {opts.namespace!r} but this client is connected to "
                f"namespace {self.namespace!r}; connect a client to that namespace"
            )
        wf_type = name_of(workflow, "workflow")
        if not isinstance(workflow, str):
            bind_args(workflow, args, "workflow")
        payloads = self.codec.payloads
        encoded = payloads.to_payloads(args, f"workflow {wf_type!r}")
        signal_name = None
        signal_args: tuple[Any, ...] = ()
        if signal is not None:
            signal_name = signal[0]
            signal_name = check_type_name(signal_name, "signal name")
            signal_args = payloads.to_payloads(tuple(signal[1]), f"signal {signal_name!r}")
        request_id = opts.request_id or uuid.uuid4().hex
        with tracing.span(f"StartWorkflow:{wf_type}", attributes={"workflow_id": id}):
            return await self._start(
                id, wf_type, opts, request_id, encoded, signal_name, signal_args, workflow
            )

    async def _start(
        self,
        id: str,
        wf_type: str,
        opts: WorkflowOptions,
        request_id: str,
        encoded: tuple[Any, ...],
        signal_name: str | None,
        signal_args: tuple[Any, ...],
        workflow: Callable[..., object] | str,
    ) -> WorkflowHandle:
        request = inp.StartWorkflowRequest(
            workflow_id=id,
            workflow_type=wf_type,
            task_queue=opts.task_queue,
            request_id=request_id,
            args=encoded,
            execution_timeout=opts.execution_timeout,
            id_reuse_policy=opts.id_reuse_policy,
            parent_close_policy=opts.parent_close_policy,
            signal_name=signal_name,
            signal_args=signal_args,
            headers=tracing.inject(),
        )
        reply = await self._request("start", InputEnvelope(id, start=request))
        if not reply.ok:
            if reply.error_type == "WorkflowAlreadyStartedError":
                raise WorkflowAlreadyStartedError(
                    reply.message, workflow_id=id, run_id=reply.run_id
                )
            raise _reply_error(reply, id)
        return WorkflowHandle(self, id, reply.run_id, result_type=result_type_of(workflow))

    async def execute_workflow(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str,
        task_queue: str | None = None,
        options: WorkflowOptions | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a workflow and wait for its result (raises like ``handle.result()``)."""
        handle = await self.start_workflow(
            workflow, *args, id=id, task_queue=task_queue, options=options
        )
        return await handle.result(timeout=timeout)

    async def signal_with_start(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id: str,
        signal: str,
        signal_args: Sequence[object] = (),
        task_queue: str | None = None,
        options: WorkflowOptions | None = None,
    ) -> WorkflowHandle:
        """Signal the running workflow ``id``, or start it with that signal already buffered."""
        return await self.start_workflow(
            workflow,
            *args,
            id=id,
            task_queue=task_queue,
            options=options,
            signal=(signal, tuple(signal_args)),
        )

    def get_workflow_handle(
        self, workflow_id: str, *, run_id: str | None = None, result_type: object = None
    ) -> WorkflowHandle:
        """A handle to an existing workflow (its latest run unless ``run_id`` is given)."""
        return WorkflowHandle(
            self,
            check_workflow_id(workflow_id),
            None if run_id is None else check_run_id(run_id),
            result_type=result_type,
            pinned=run_id is not None,
        )

    # ------------------------------------------------------------------ listing

    async def list_workflows(
        self,
        *,
        status: str | None = None,
        workflow_type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        count_open: bool = True,
    ) -> list[WorkflowDescription]:
        """Runs from the status index, newest first, filtered by status / type / start time.

        The index is written when a run starts and when it closes, so the ``history_length`` of
        an open run is read from its history (one direct get per open run returned); with
        ``count_open=False`` it is the index's (the events recorded when the run started).
        """
        kv = await self._kv()
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        entries = await asyncio.gather(*(kv.get(k) for k in keys), return_exceptions=True)
        out: list[WorkflowDescription] = []
        for entry in entries:
            if isinstance(entry, BaseException) or entry.value is None:
                continue
            try:
                summary = self.codec.decode_summary(entry.value)
            except DurableFutureError:
                continue
            if status is not None and summary.status != status:
                continue
            if workflow_type is not None and summary.workflow_type != workflow_type:
                continue
            if since is not None and summary.start_time < since.timestamp():
                continue
            out.append(_describe_summary(summary))
        out.sort(key=lambda d: d.start_time, reverse=True)
        return await self.count_events(out[:limit]) if count_open else out[:limit]

    async def count_events(self, runs: Sequence[WorkflowDescription]) -> list[WorkflowDescription]:
        """``runs`` with the ``history_length`` of each open one read from its history.

        A run whose history cannot be read keeps the count it had (and is logged at debug).
        """
        limit = asyncio.Semaphore(32)

        async def current(d: WorkflowDescription) -> WorkflowDescription:
            if not d.is_open:
                return d
            async with limit:
                try:
                    n = await self.history.last_event_id(d.workflow_id, d.run_id)
                except DurableFutureError as exc:
                    log.debug("counting the events of %s failed: %s", d.workflow_id, exc)
                    return d
            return evolve(d, history_length=max(n, d.history_length))

        return list(await asyncio.gather(*(current(d) for d in runs)))

    async def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        kv = await self._kv()
        try:
            entry = await kv.get(self.layout.status_key(workflow_id, run_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return self.codec.decode_summary(entry.value)

    async def latest_run_id(self, workflow_id: str) -> str:
        try:
            last = await self.history.last_of_workflow(workflow_id)
        except CorruptHistoryError as exc:  # the newest message is unreadable; its run is known
            if exc.run_id:
                return exc.run_id
            raise
        if last is None:
            raise WorkflowNotFoundError(
                f"no workflow with id {workflow_id!r} in namespace {self.namespace!r}"
            )
        return last.run_id

    async def run_state(self, workflow_id: str, run_id: str) -> RunState:
        """The run's state folded from its history.

        Raises:
            CorruptHistoryError: a history message cannot be read or folded (it names the
                message's stream sequence and why).
        """
        batches = await self.history.read(workflow_id, run_id)
        if not batches:
            raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run_id}")
        return fold(workflow_id, run_id, batches)

    async def workers(self, task_queue: str | None = None) -> list[WorkerRecord] | None:
        """Live workers of the namespace (of ``task_queue`` only, if given): their
        registrations, running activity attempts and when they were last seen.

        None when liveness is unknown (the namespace was created by an older df-server).
        """
        return await self.registry.live(task_queue)

    async def queue_depths(self, task_queue: str) -> dict[str, int]:
        """Tasks waiting (not yet delivered) and in flight, per kind, for ``task_queue``."""
        out: dict[str, int] = {}
        layout = self.layout
        for kind, name, subject in (
            ("workflow", layout.workflow_consumer(task_queue), layout.workflow_tasks(task_queue)),
            ("activity", layout.activity_consumer(task_queue), layout.activity_tasks(task_queue)),
        ):
            try:
                info = await self.pub.js.consumer_info(layout.stream, name)
            except nats.js.errors.NotFoundError:
                # no worker has ever served this queue: every task stored for it is waiting
                stream = await self.pub.js.stream_info(layout.stream, subjects_filter=subject)
                out[f"{kind}_pending"] = int((stream.state.subjects or {}).get(subject, 0))
                out[f"{kind}_in_flight"] = 0
                continue
            out[f"{kind}_pending"] = int(info.num_pending or 0)
            out[f"{kind}_in_flight"] = int(info.num_ack_pending or 0)
        return out


class WorkflowHandle:
    """A workflow id (and the run it started with), to wait on and act on."""

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        run_id: str | None,
        *,
        result_type: object = None,
        pinned: bool = False,
    ) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        self.result_type = result_type
        self._pinned = pinned

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self.id!r}, run_id={self.run_id!r})"

    async def _run(self) -> str:
        if self.run_id is None:
            return await self.client.latest_run_id(self.id)
        return self.run_id

    async def result(
        self, timeout: float | None = None, *, follow_runs: bool = True, result_type: object = None
    ) -> Any:
        """Wait for the run to close; return its result or raise.

        Raises ``WorkflowFailedError`` (``.cause`` is the original error, type and message
        kept), ``WorkflowTimedOutError``, ``WorkflowCancelledError``, ``WorkflowTerminatedError``,
        or ``TimeoutError`` if ``timeout`` seconds pass first. Continue-as-new is followed to
        the final run unless ``follow_runs=False``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        client = self.client
        run_id = await self._run()
        rtype = result_type if result_type is not None else self.result_type
        while True:
            summary = await self._wait_closed(run_id, deadline)
            if summary.status == RunStatus.CONTINUED_AS_NEW and follow_runs and summary.new_run_id:
                run_id = summary.new_run_id
                continue
            return outcome_of(summary, client.codec.payloads, rtype)

    async def _wait_closed(self, run_id: str, deadline: float | None) -> RunSummary:
        client = self.client
        notice: asyncio.Event = asyncio.Event()
        received: list[bytes] = []

        async def _on(msg: Msg) -> None:
            received.append(msg.data)
            notice.set()

        sub = await client.nc.subscribe(client.layout.closed_notice(self.id, run_id), cb=_on)
        try:
            poll = 0.5
            summary = await client.summary(self.id, run_id)
            while True:
                if summary is not None and summary.status == RunStatus.CORRUPT:
                    summary = await self._still_corrupt(run_id, summary)
                if summary is not None and (
                    summary.status in RunStatus.CLOSED or summary.status == RunStatus.CORRUPT
                ):
                    return summary
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"workflow {self.id!r} run {run_id} did not finish within the timeout"
                    )
                wait = poll if remaining is None else min(poll, remaining)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(notice.wait(), wait)
                notice.clear()
                if received:
                    # the notice carries the status entry; anyone could have sent it, so it
                    # counts only once the run's history shows the same ending
                    noticed = await self._confirmed(run_id, received.pop())
                    if noticed is not None:
                        summary = noticed
                        continue
                poll = min(poll * 2, 5.0)
                summary = await client.summary(self.id, run_id)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _confirmed(self, run_id: str, data: bytes) -> RunSummary | None:
        """The summary a closed notice carries, if the run's newest history batch ends the run
        the same way (status, result, failure, next run); None for a forged or junk notice."""
        client = self.client
        try:
            noticed = client.codec.decode_summary(data)
        except DurableFutureError:
            return None
        if noticed.workflow_id != self.id or noticed.run_id != run_id:
            return None
        try:
            batch = await client.history.last_batch(self.id, run_id)
        except DurableFutureError:
            return None
        terminal = batch.events[-1] if batch is not None and batch.events else None
        if not isinstance(terminal, ev.TERMINAL_EVENTS) or status_of(terminal) != noticed.status:
            return None
        same = (
            getattr(terminal, "result", None) == noticed.result
            and getattr(terminal, "new_run_id", None) == noticed.new_run_id
            and (not isinstance(terminal, ev.WorkflowFailed) or terminal.failure == noticed.failure)
        )
        return noticed if same else None

    async def _still_corrupt(self, run_id: str, summary: RunSummary) -> RunSummary | None:
        """A status entry says the history is corrupt: check. Once the bad message has been
        removed the history folds again, and the run's own state counts (None: still open)."""
        try:
            state = await self.client.run_state(self.id, run_id)
        except CorruptHistoryError:
            return summary
        return state.summary() if not state.is_open else None

    async def describe(self) -> WorkflowDescription:
        """Status, pending activities (attempt, worker, last failure, next retry), timers and
        signal waits (name, deadline).

        A run whose history cannot be read is described with status ``corrupt``, the stream
        sequence of the bad message in ``corrupt_at`` and the reason in ``failure``.
        """
        run_id = await self._run()
        try:
            state = await self.client.run_state(self.id, run_id)
        except CorruptHistoryError as exc:
            return describe_corrupt(exc, await self.client.summary(self.id, run_id))
        return describe_state(state)

    async def fetch_history(self) -> list[ev.Event]:
        """The run's events, in order (what ``df.testing.Replayer`` replays)."""
        run_id = await self._run()
        batches = await self.client.history.read(self.id, run_id)
        if not batches:
            raise WorkflowNotFoundError(f"no history for workflow {self.id!r} run {run_id}")
        return [e for b in batches for e in b.events]

    @property
    def _target(self) -> str:
        """Signals, cancels and terminates go to the latest run unless a run was pinned."""
        return self.run_id or "" if self._pinned else ""

    async def _send(self, message: inp.RunInput) -> Reply:
        reply = await self.client._request(
            "run", InputEnvelope(self.id, input=message), msg_id=f"{self.id}:{message.input_id}"
        )
        if not reply.ok:
            if reply.error_type == "WorkflowNotFoundError":
                raise WorkflowNotFoundError(reply.message)
            raise _reply_error(reply, self.id)
        return reply

    async def query(self, name: str, *args: object, timeout: float = 10.0) -> Any:
        """Ask the run for live state through its query handler ``name`` (history unchanged).

        Answered by a workflow worker of the run's task queue, from the state after the latest
        recorded event. Raises ``df.QueryFailedError`` if no worker serves that queue, the
        workflow has no such handler, or the handler raised.
        """
        client = self.client
        run_id = self.run_id or await client.latest_run_id(self.id)
        summary = await client.summary(self.id, run_id)
        if summary is not None:
            queue = summary.task_queue
        else:
            head = await client.history.first_batch(self.id, run_id)
            started = head.events[0] if head else None
            if not isinstance(started, ev.WorkflowStarted):
                raise WorkflowNotFoundError(f"no history for workflow {self.id!r} run {run_id}")
            queue = started.task_queue
        payloads = client.codec.payloads
        body = orjson.dumps(
            {
                "wid": self.id,
                "run": run_id,
                "name": name,
                "args": [payloads.to_payload(a, f"query {name!r} argument") for a in args],
            }
        )
        try:
            msg = await client.nc.request(client.layout.query(queue), body, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise QueryFailedError(
                f"no workflow worker is serving task queue {queue!r}; queries are answered by "
                "the workers that run the workflow"
            ) from None
        except nats.errors.TimeoutError:
            raise QueryFailedError(f"query {name!r} got no answer within {timeout:g}s") from None
        answer = orjson.loads(msg.data)
        if not answer.get("ok"):
            raise QueryFailedError(f"query {name!r} failed: {answer.get('message')}")
        return answer.get("result")

    async def signal(self, name: str, *args: object) -> None:
        """Deliver signal ``name`` (buffered in history until the workflow waits for it)."""
        check_type_name(name, "signal name")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"signal name must be a non-empty string, got {name!r}")
        payloads = self.client.codec.payloads
        encoded = payloads.to_payloads(args, f"signal {name!r}")
        await self._send(inp.SignalWorkflow(self._target, name, uuid.uuid4().hex, encoded))

    async def cancel(self, reason: str = "") -> None:
        """Ask the run to cancel: ``df.CancelledError`` is raised at its current yield."""
        await self._send(inp.RequestCancel(self._target, uuid.uuid4().hex, reason))

    async def terminate(self, reason: str = "") -> None:
        """End the run at once (no cleanup code runs)."""
        await self._send(inp.TerminateWorkflow(self._target, uuid.uuid4().hex, reason))


_CORRUPT_SEQ = re.compile(r"corrupt at stream sequence (\d+)")


def _reply_error(reply: Reply, workflow_id: str) -> DurableFutureError:
    if reply.error_type == "CorruptHistoryError":
        m = _CORRUPT_SEQ.search(reply.message)
        return CorruptHistoryError(
            reply.message,
            workflow_id=workflow_id,
            run_id=reply.run_id,
            stream_seq=int(m.group(1)) if m else 0,
        )
    return DurableFutureError(f"{reply.error_type}: {reply.message}")
