"""A real 3-node NATS cluster on loopback for tests: start, SIGKILL, restart, SIGSTOP, SIGCONT.

Each node is a ``nats-server`` process with JetStream, its own store directory and free loopback
ports (client, route, monitoring), routed to the other two, the way deploy/nats/nats.conf and
docker-compose.yml lay out production (tests/deploy/test_deploy_files.py runs that layout). A
restarted node keeps its ports and its store, as a container with a volume does.

Readiness is what nats-server reports itself: a node is ready when its monitoring endpoint's
``/healthz`` answers ``ok`` (JetStream enabled, meta group and every stream and consumer replica
of the node current). The leader of a stream comes from the JetStream API (stream info,
``cluster.leader``), asked of a node that is running and not stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from durablefuture.natsserver import find_binary

__all__ = ["NatsCluster", "NatsNode", "free_ports"]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while they are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class NatsNode:
    """One nats-server of the cluster, signalled by its own PID only."""

    def __init__(
        self,
        name: str,
        root: Path,
        client_port: int,
        cluster_port: int,
        http_port: int,
        *,
        sync_always: bool = False,
    ) -> None:
        self.name = name
        self.client_port = client_port
        self.cluster_port = cluster_port
        self.http_port = http_port
        self.store_dir = root / name
        self.conf = root / f"{name}.conf"
        self.log_file = root / f"{name}.log"
        self.sync_always = sync_always
        self.routes: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_conf(self) -> None:
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.routes)
        sync = "  sync_interval: always\n" if self.sync_always else ""
        self.conf.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            "max_payload: 1MB\n"
            "jetstream {\n"
            f"  store_dir: {str(self.store_dir)!r}\n"
            f"{sync}"
            "  limits { batch { max_inflight_per_stream: 500, max_inflight_total: 5000 } }\n"
            "}\n"
            "cluster {\n"
            "  name: df-test\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )

    def start(self) -> None:
        """Start the process (the same ports and store as before); returns once it listens."""
        assert not self.running(), f"{self.name} is already running"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        self.paused = False
        self.starts += 1
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"{self.name} exited at start:\n{self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.client_port), 0.1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"{self.name} does not listen:\n{self.log()}"
                time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL (a stopped process dies too) and reap it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.paused = False

    def restart(self) -> None:
        """SIGKILL, then start again on the same store."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing."""
        assert self.proc is not None and self.running()
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        if self.running():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def health(self) -> str:
        """``ok`` or what /healthz says is wrong (or why it did not answer)."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 with a JSON reason
            try:
                body = json.loads(exc.read())
            except ValueError:
                return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return f"no answer ({exc})"
        status = str(body.get("status", ""))
        return "ok" if status == "ok" else f"{status}: {body.get('error', body)}"

    def log(self, tail: int = 3000) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-tail:]


class NatsCluster:
    """Three (or ``size``) routed nats-server nodes with JetStream on loopback."""

    def __init__(self, root: Path, size: int = 3, *, sync_always: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(3 * size)
        self.nodes = [
            NatsNode(
                f"n{i + 1}",
                root,
                ports[3 * i],
                ports[3 * i + 1],
                ports[3 * i + 2],
                sync_always=sync_always,
            )
            for i in range(size)
        ]
        for node in self.nodes:
            node.routes = [o.cluster_port for o in self.nodes if o is not node]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what ``--nats`` takes)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    async def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        await self.wait_healthy(timeout=timeout)

    async def wait_healthy(self, *nodes: NatsNode, timeout: float = 60.0) -> None:
        """Wait until the nodes (all by default) report /healthz ok."""
        todo = list(nodes or self.nodes)
        deadline = time.monotonic() + timeout
        while todo:
            todo = [n for n in todo if await asyncio.to_thread(n.health) != "ok"]
            if not todo:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not healthy within {timeout:g}s: "
                    + "; ".join(f"{n.name}: {n.health()}\n{n.log(1500)}" for n in todo)
                )
            await asyncio.sleep(0.2)

    async def stream_leader(self, stream: str, timeout: float = 30.0) -> NatsNode:
        """The node that leads ``stream`` now (waits while an election is under way)."""
        import nats

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for node in [n for n in self.nodes if n.running() and not n.paused]:
                try:
                    nc = await nats.connect(
                        node.url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0
                    )
                except Exception as exc:
                    last = f"{node.name}: {exc!r}"
                    continue
                try:
                    info = await nc.jetstream(timeout=2).stream_info(stream)
                    leader = info.cluster.leader if info.cluster else None
                    if leader:
                        return self.node(leader)
                    last = f"{node.name}: no leader yet"
                except Exception as exc:
                    last = f"{node.name}: {exc!r}"
                finally:
                    with contextlib.suppress(Exception):
                        await nc.close()
            await asyncio.sleep(0.2)
        raise AssertionError(f"stream {stream} has no leader after {timeout:g}s ({last})")

    def stop(self) -> None:
        """SIGKILL every node this cluster started (resumed first, so nothing lingers)."""
        for node in self.nodes:
            node.kill()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- nats {n.name}\n{n.log(tail)}" for n in self.nodes)
