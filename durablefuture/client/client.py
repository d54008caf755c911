"""The client: start workflows and get handles on them; schedules.

``client = await df.Client.connect("nats://127.0.0.1:4222", namespace="default")``. What a
client reads without the df-server is in ``visibility``, how it asks the df-server in
``requests``, and what it does with one workflow in ``handle``.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from durablefuture import tracing
from durablefuture.client.handle import WorkflowHandle
from durablefuture.client.namespace import NamespaceDescription, describe_namespace
from durablefuture.client.requests import error_from_reply
from durablefuture.client.visibility import Visibility
from durablefuture.codec.envelope import PayloadCodec, as_codec
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import bind_args, name_of, result_type_of
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.types import check_run_id, check_type_name, check_workflow_id
from durablefuture.transport.connection import DEFAULT_URL, connect
from durablefuture.transport.replies import Watch
from durablefuture.transport.tls import TlsConfig

if TYPE_CHECKING:
    from durablefuture.core.schedules import Schedule
    from durablefuture.schedules import ScheduleDescription, ScheduleHandle, Schedules

__all__ = ["Client"]


class Client(Visibility):
    """Connection to one namespace of a DurableFuture deployment.

    ``client = await df.Client.connect("nats://127.0.0.1:4222", namespace="default")``.
    """

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        namespace: str = "default",
        *,
        connect_timeout: float = 20.0,
        creds: str | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
        codec: PayloadCodec | Sequence[PayloadCodec] | None = None,
    ) -> Client:
        """Connect to NATS (``url`` may list several servers, comma-separated; ``creds`` is a
        NATS credentials file).

        ``tls=df.TlsConfig(ca=..., cert=..., key=...)`` (or a ready ``ssl.SSLContext``) asks
        for TLS, as a ``tls://`` URL does; a failed handshake raises ``df.TlsError`` at once.

        ``codec`` (a ``df.PayloadCodec`` such as ``durablefuture.codecs.AesGcm``, or a list of
        them, applied in order) encodes every payload this client, and the workers built on
        it, write, and decodes every payload they read; the df-server never sees them decoded.
        """
        payload_codec = as_codec(codec)
        nc = await connect(url, timeout=connect_timeout, name="df-client", creds=creds, tls=tls)
        client = cls(nc, namespace, codec=default_codec().with_payload_codec(payload_codec))
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
            search_attributes=opts.search_attributes,
            memo={
                k: self.codec.payloads.to_payload(v, f"memo {k!r}") for k, v in opts.memo.items()
            },
        )
        reply = await self._ask_start(InputEnvelope(id, start=request))
        if not reply.ok:
            raise error_from_reply(reply, id)
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
        # Listening for the closed notices of the id's runs before the start is sent: the
        # subscription leaves in the start request's write, ahead of it, so the notice of a
        # run that closes at once is not missed, and the status entry need not be read right
        # after the start, while the run's first hops are using the CPUs (``_wait_closed``).
        watch = await Watch.open(self.nc, self.layout.closed_notices(check_workflow_id(id)))
        try:
            handle = await self.start_workflow(
                workflow, *args, id=id, task_queue=task_queue, options=options
            )
            return await handle._result(timeout, watch=watch)
        finally:
            await watch.close()

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

    async def describe_namespace(self) -> NamespaceDescription:
        """The namespace's retention and history limits, its runs by status and the bytes
        it uses (``df namespace describe``)."""
        return await describe_namespace(self)

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
