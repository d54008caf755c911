"""A real, local DurableFuture for tests: nats-server + an in-process df-server + workers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from durablefuture.client import Client
from durablefuture.codec.envelope import PayloadCodec
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.worker import Worker

__all__ = ["LocalEnvironment"]


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
    ) -> None:
        self.namespace = namespace
        self.auth = auth
        self.codec = codec
        self.server_options = server_options or ServerOptions(namespace=namespace)
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
        import asyncio

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
        return self

    async def __aexit__(self, *exc: object) -> None:
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
        client = await Client.connect(
            self.nats.url, self.namespace, creds=self.creds("worker"), codec=self.codec
        )
        worker = Worker(client, task_queue, workflows, activities, **kwargs)
        try:
            async with worker:
                yield worker
        finally:
            await client.close()
