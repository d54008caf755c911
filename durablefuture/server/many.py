"""One df-server process for several namespaces.

Each namespace gets its own :class:`~durablefuture.server.Server` (its own consumers, caches,
schedule component and metrics label); they share the process and, when they log in the same
way, one NATS connection. With ``df auth init`` every namespace is a separate NATS account, so
each namespace connects with its own ``server.creds`` and the namespaces stay as isolated as
they are with one process each: a connection of namespace ``a`` cannot name anything of ``b``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence

from attrs import evolve

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.types import check_namespace
from durablefuture.server.options import ServerOptions
from durablefuture.server.service import Server
from durablefuture.transport.connection import NATS, connect
from durablefuture.transport.tls import TlsConfig

__all__ = ["Servers"]

log = logging.getLogger("durablefuture.server")


class Servers:
    """The df-servers of several namespaces, started, run and stopped together."""

    def __init__(self, servers: Sequence[Server], connections: Sequence[NATS] = ()) -> None:
        if not servers:
            raise InvalidArgumentError("give at least one namespace to serve")
        self.servers = list(servers)
        self._connections = list(connections)
        """Connections this object opened (closed by :meth:`shutdown`)."""

    @property
    def namespaces(self) -> list[str]:
        return [s.layout.namespace for s in self.servers]

    @classmethod
    async def connect(
        cls,
        url: str,
        namespaces: Sequence[str],
        options: ServerOptions | None = None,
        *,
        connect_timeout: float = 20.0,
        creds: str | Mapping[str, str] | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> Servers:
        """Connect a server for each of ``namespaces``.

        Args:
            options: tuning shared by every namespace (its ``namespace`` is replaced).
            creds: one credentials file for all namespaces (their streams must then live in
                one NATS account), or one per namespace (``{"acme": ".../acme/server.creds"}``,
                as ``df auth init`` writes them). Namespaces sharing a file (or none) share one
                connection.
        """
        names = list(dict.fromkeys(check_namespace(ns) for ns in namespaces))
        if not names:
            raise InvalidArgumentError("give at least one namespace to serve")
        per_ns: dict[str, str | None]
        if creds is None or isinstance(creds, str):
            per_ns = dict.fromkeys(names, creds)
        else:
            missing = [ns for ns in names if ns not in creds]
            if missing:
                raise InvalidArgumentError(
                    f"no credentials for namespace {missing[0]!r}: give a server.creds file "
                    "for every namespace served"
                )
            per_ns = {ns: creds[ns] for ns in names}
        base = options or ServerOptions()
        by_creds: dict[str | None, NATS] = {}
        servers: list[Server] = []
        try:
            for ns in names:
                login = per_ns[ns]
                nc = by_creds.get(login)
                if nc is None:
                    # the server user's replies stay in its account: the short inbox prefix
                    nc = await connect(
                        url,
                        timeout=connect_timeout,
                        name="df-server",
                        creds=login,
                        tls=tls,
                        own_inbox=False,
                    )
                    by_creds[login] = nc
                servers.append(Server(nc, evolve(base, namespace=ns)))
        except BaseException:
            for nc in by_creds.values():
                with contextlib.suppress(Exception):
                    await nc.close()
            raise
        return cls(servers, list(by_creds.values()))

    async def start(self, timeout: float = 60.0) -> None:
        """Set up every namespace and start consuming its inputs (all at once)."""
        await asyncio.gather(*(s.start(timeout) for s in self.servers))
        log.info(
            "df-server serving %d namespaces: %s",
            len(self.servers),
            ", ".join(self.namespaces),
            extra={"namespaces": self.namespaces},
        )

    async def run(self) -> None:
        """Process every namespace's inputs until :meth:`shutdown`; if one namespace's loop
        ends with an error (its connection closed for good), the others are stopped and the
        error is raised."""
        try:
            async with asyncio.TaskGroup() as group:
                for server in self.servers:
                    group.create_task(server.run())
        except ExceptionGroup as failed:  # the first error, as one server would raise it
            raise failed.exceptions[0] from None

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every namespace (finishing inputs in progress), then disconnect."""
        await asyncio.gather(*(s.shutdown(timeout) for s in self.servers))
        for nc in self._connections:
            with contextlib.suppress(Exception):
                await nc.drain()
