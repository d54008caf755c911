"""A real, local DurableFuture for tests: nats-server + an in-process df-server + workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from attrs import evolve

from durablefuture.client import Client
from durablefuture.clock import REAL_CLOCK, Clock, SkippingClock
from durablefuture.codec.envelope import PayloadCodec
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.testing.skipping import TimeSkipper
from durablefuture.transport.layout import consumer_backlog, queue_depths
from durablefuture.worker import Worker, WorkerOptions

__all__ = ["LocalEnvironment", "WorkflowEnvironment"]


class LocalEnvironment:
    """``async with df.testing.LocalEnvironment() as env:`` — a real engine on a free port.

    Starts nats-server (JetStream, file storage in a temporary directory, loopback only), a
    df-server in this process, and a client (``env.client``; ``env.nats_url``). Run workers
    with ``async with env.worker(task_queue=..., workflows=[...], activities=[...]):``.
    ``max_payload`` and ``max_file_store`` (bytes) set the nats-server's message size and
    JetStream disk limits, to see how workflows cope with them.

    ``auth=True`` runs it as ``df auth init`` would set it up: nats-server requires logins,
    the df-server uses the namespace's ``server`` credentials, ``env.client`` the ``client``
    ones and ``env.worker(...)`` the ``worker`` ones, each limited to what its role may do;
    ``env.creds(role)`` is the path of a role's credentials file.

    ``codec`` (a payload codec, or a list of them) is given to ``env.client`` and every
    ``env.worker(...)``; the df-server never gets it.
    ``time_skipping=True`` gives the df-server and the workers of ``env.worker(...)`` one
    skipping clock: whenever nothing runs and nothing is in flight, time jumps to the next
    timer, retry or timeout, so a workflow that sleeps 30 days ends at once. ``env.now()``
    is the engine's time, ``await env.sleep(seconds)`` moves it on (firing what falls due on
    the way) and ``env.auto_skip = False`` leaves time to ``env.sleep`` alone. Workers started
    otherwise than with ``env.worker`` must use ``WorkerOptions(clock=env.clock)``, and their
    task queues are not watched for idleness.
    """

    def __init__(
        self,
        namespace: str = "default",
        *,
        server_options: ServerOptions | None = None,
        store_dir: str | None = None,
        sync_always: bool = False,
        port: int | None = None,
        max_payload: int | None = None,
        max_file_store: int | None = None,
        auth: bool = False,
        codec: PayloadCodec | Sequence[PayloadCodec] | None = None,
        time_skipping: bool = False,
    ) -> None:
        self.namespace = namespace
        self.auth = auth
        self.codec = codec
        # a test lists what it just started: the running entry is written at once here
        self.server_options = server_options or ServerOptions(namespace=namespace, status_delay=0)
        self.clock: Clock = REAL_CLOCK
        self.skipper: TimeSkipper | None = None
        if time_skipping:
            clock = SkippingClock()
            self.clock = clock
            self.server_options = evolve(self.server_options, clock=clock)
            self.skipper = TimeSkipper(clock, self._idle)
        self._queues: Counter[str] = Counter()
        self.nats = NatsServer(
            store_dir,
            port,
            sync_always=sync_always,
            max_payload=max_payload,
            max_file_store=max_file_store,
        )
        self.server: Server | None = None
        self._client: Client | None = None
        self._server_task: Any = None
        self._creds: dict[str, str] = {}

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def creds(self, role: str) -> str | None:
        """The credentials file of ``role`` (server, worker, client, admin) when ``auth``."""
        if not self.auth:
            return None
        if not self._creds:
            raise RuntimeError("use `async with LocalEnvironment(auth=True) as env` first")
        return self._creds[role]

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("use `async with LocalEnvironment() as env` first")
        return self._client

    async def __aenter__(self) -> LocalEnvironment:
        if self.server is not None:  # `async with await WorkflowEnvironment.start_...()`
            return self
        if self.auth:
            from durablefuture.auth import write

            files = write(os.path.join(self.nats.store_dir, "auth"), [self.namespace], force=True)
            self.nats.include = str(files.config)
            self._creds = {role: str(path) for (_, role), path in files.creds.items()}
        self.nats.start()
        self.server = await Server.connect(
            self.nats.url, self.server_options, creds=self.creds("server")
        )
        await self.server.start()
        self._server_task = asyncio.create_task(self.server.run())
        self._client = await Client.connect(
            self.nats.url, self.namespace, creds=self.creds("client"), codec=self.codec
        )
        if self.skipper is not None:
            self.skipper.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.skipper is not None:
            await self.skipper.stop()
        if self._client is not None:
            await self._client.close()
        if self.server is not None:
            await self.server.shutdown()
        if self._server_task is not None:
            self._server_task.cancel()
            with contextlib.suppress(BaseException):
                await self._server_task
        self.nats.cleanup()

    @contextlib.asynccontextmanager
    async def worker(
        self,
        task_queue: str = "default",
        workflows: Sequence[Callable[..., object]] = (),
        activities: Sequence[Callable[..., object]] = (),
        **kwargs: Any,
    ) -> AsyncIterator[Worker]:
        """Run a worker (with its own connection) for the duration of the ``async with``."""
        if self.skipper is not None:
            options = kwargs.get("options") or WorkerOptions()
            kwargs["options"] = evolve(options, clock=self.clock)
        client = await Client.connect(
            self.nats.url, self.namespace, creds=self.creds("worker"), codec=self.codec
        )
        worker = Worker(client, task_queue, workflows, activities, **kwargs)
        self._queues[task_queue] += 1
        try:
            async with worker:
                yield worker
        finally:
            self._queues[task_queue] -= 1
            await client.close()

    # ------------------------------------------------------------------ time

    @property
    def auto_skip(self) -> bool:
        return self.skipper is not None and self.skipper.auto

    @auto_skip.setter
    def auto_skip(self, on: bool) -> None:
        if self.skipper is None:
            raise RuntimeError("auto_skip needs LocalEnvironment(time_skipping=True)")
        self.skipper.auto = on

    def now(self) -> datetime:
        """The engine's current time (what ``df.workflow.now()`` sees in a new event)."""
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    async def sleep(self, duration: float | timedelta) -> None:
        """Let ``duration`` pass: skipped (timers due on the way fire in order) with
        ``time_skipping``, really slept without."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        if self.skipper is None:
            await asyncio.sleep(seconds)
        else:
            await self.skipper.sleep(seconds)

    async def _idle(self) -> bool:
        """No input being handled or waiting, no task of a watched queue waiting or taken."""
        server = self.server
        if server is None or server.in_progress():
            return False
        js, layout = self.client.pub.js, self.client.layout
        for consumer in (layout.server_consumer, layout.start_consumer):
            if await consumer_backlog(js, layout, consumer):
                return False
        for queue in [q for q, n in self._queues.items() if n > 0]:
            if any((await queue_depths(js, layout, queue)).values()):
                return False
        return server.in_progress() == 0


class WorkflowEnvironment:
    """``async with await WorkflowEnvironment.start_time_skipping() as env:`` — a started
    :class:`LocalEnvironment` (the names other engines' test kits use)."""

    @staticmethod
    async def start_time_skipping(**kwargs: Any) -> LocalEnvironment:
        """A started ``LocalEnvironment(time_skipping=True, **kwargs)``."""
        return await LocalEnvironment(time_skipping=True, **kwargs).__aenter__()

    @staticmethod
    async def start_local(**kwargs: Any) -> LocalEnvironment:
        """A started ``LocalEnvironment(**kwargs)`` (real time)."""
        return await LocalEnvironment(**kwargs).__aenter__()
