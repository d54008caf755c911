"""Shared fixtures: a real nats-server per test, daemon subprocesses, a local environment."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.natsserver import NatsServer
from tests.cluster import NatsCluster

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["durablefuture.testing.pytest_plugin"]

# The suite starts several hundred Python processes (df-server, df-worker, df commands). Where
# bytecode is not written (PYTHONDONTWRITEBYTECODE), each of them compiled the whole package
# from source again (~0.3 s of CPU a start), and so did every test process its test modules:
# they share a bytecode cache of their own instead, outside the source tree.
if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    _pycache = Path(tempfile.gettempdir()) / f"durablefuture-tests-pycache-{getpass.getuser()}"
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(_pycache)
    sys.pycache_prefix = str(_pycache)
    sys.dont_write_bytecode = False


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real ``nats-server -js`` on a free loopback port with a temporary store."""
    server = NatsServer(str(tmp_path / "nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


class Daemon:
    """A df-server / df-worker subprocess, stopped by its PID."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Daemons:
    """df-server / df-worker subprocesses on ``url`` (several URLs may be comma-separated);
    ``server_args`` are added to every df-server (e.g. ``--replicas 3`` on a cluster)."""

    def __init__(self, tmp_path: Path, url: str, server_args: tuple[str, ...] = ()) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.server_args = server_args
        self.started: list[Daemon] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")

    def server(self, *extra: str, namespace: str = "default") -> Daemon:
        n = len(self.started)
        d = Daemon(
            f"server{n}",
            [
                "daemons.df_server",
                "--nats",
                self.url,
                "--namespace",
                namespace,
                "--input-ack-wait",
                "2",
                "--log-level",
                "info",
                *self.server_args,
                *extra,
            ],
            self.tmp_path / f"server{n}.log",
            self.env,
        )
        self.started.append(d)
        return d.start()

    def worker(self, *extra: str, namespace: str = "default", task_queue: str = "tests") -> Daemon:
        n = len(self.started)
        d = Daemon(
            f"worker{n}",
            [
                "daemons.df_worker",
                "--nats",
                self.url,
                "--namespace",
                namespace,
                "--task-queue",
                task_queue,
                "--activity-lease",
                "2",
                "--workflow-task-timeout",
                "2",
                *extra,
            ],
            self.tmp_path / f"worker{n}.log",
            self.env,
        )
        self.started.append(d)
        return d.start()

    def special(self, name: str, *args: str, env: dict[str, str] | None = None) -> Daemon:
        """Start ``python -m ARGS...``: a daemon with test hooks (e.g. a df-server that stops
        where a crash test kills it, ``tests/integration/held_start.py``), logging to
        ``NAME.log``, with ``env`` (default: the environment of the others)."""
        d = Daemon(
            name, list(args), self.tmp_path / f"{name}.log", self.env if env is None else env
        )
        self.started.append(d)
        return d.start()

    def stop_all(self) -> None:
        for d in self.started:
            d.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {d.name}\n{d.log()[-4000:]}" for d in self.started)


async def wait_namespace(
    url: str, namespace: str = "default", timeout: float = 60.0, tls: ssl.SSLContext | None = None
) -> None:
    """Wait until a df-server has created the namespace (its server consumer exists)."""
    import nats

    from durablefuture.transport.subjects import Layout

    layout = Layout(namespace)
    nc = await nats.connect(servers=[u.strip() for u in url.split(",") if u.strip()], tls=tls)
    try:
        js = nc.jetstream()

        async def ready() -> bool:
            try:
                await js.consumer_info(layout.stream, layout.server_consumer)
                return True
            except Exception:
                return False

        await wait_for(ready, timeout)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def connected(daemons: Daemons, timeout: float = 60.0) -> AsyncIterator[df.Client]:
    """A client of ``daemons`` once a df-server has created the namespace, closed after (a
    failing test shows the daemons' logs: ``pytest_runtest_makereport``)."""
    client: df.Client | None = None
    try:
        await wait_namespace(daemons.url, timeout=timeout)
        client = await df.Client.connect(daemons.url)
        yield client
    finally:
        if client is not None:
            await client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran daemons (the ``daemons`` or ``cluster_daemons`` fixture) shows
    their logs' ends in its report, in a section of its own, so no test has to print them."""
    report = yield
    if report.when in ("setup", "call") and report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("daemons", "cluster_daemons"):
            ds = funcargs.get(name)
            if isinstance(ds, Daemons) and ds.started:
                report.sections.append((f"{name} logs", ds.logs()))
    return report


@pytest.fixture
def daemons(tmp_path: Path, nats_server: NatsServer) -> Iterator[Daemons]:
    ds = Daemons(tmp_path, nats_server.url)
    try:
        yield ds
    finally:
        ds.stop_all()


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three routed ``nats-server -js`` nodes on free loopback ports, each with its own store
    (tests/cluster.py: SIGKILL, restart, SIGSTOP and SIGCONT a node, find a stream's leader)."""
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_daemons(tmp_path: Path, nats_cluster: NatsCluster) -> Iterator[Daemons]:
    """Daemons connected with every node's URL; df-servers keep the namespace at R3."""
    ds = Daemons(tmp_path, nats_cluster.url, server_args=("--replicas", "3"))
    try:
        yield ds
    finally:
        ds.stop_all()


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
async def env() -> AsyncIterator[object]:
    from durablefuture.testing import LocalEnvironment

    async with LocalEnvironment() as e:
        yield e
