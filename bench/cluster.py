"""``--cluster``: a 3-node NATS cluster on loopback for the benchmark (R3 streams).

Each node is a ``nats-server`` with JetStream, its own store directory and free loopback ports
(client, route, monitoring), routed to the other two, as ``deploy/nats/nats.conf`` lays out
production and ``tests/cluster.py`` does for the tests. The round is ready once every node's
``/healthz`` answers ``ok``; the df-servers then create the namespace with ``--replicas 3``.
It offers what the round uses of a single ``NatsServer``: ``url`` (every node, comma-separated,
so clients fail over), ``procs`` (one per node, stopped by PID with the round) and ``varz()``
(counters summed over the nodes: route traffic between them counts too).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["BenchCluster"]


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class BenchCluster:
    """``nodes`` nats-servers routed to each other, each with its own store under ``root``."""

    def __init__(self, root: str, nodes: int = 3, *, sync_always: bool = False) -> None:
        self.root = Path(root)
        self.sync_always = sync_always
        ports = _free_ports(3 * nodes)
        self.nodes = [
            {"name": f"n{i}", "client": ports[3 * i], "route": ports[3 * i + 1]}
            | {"http": ports[3 * i + 2]}
            for i in range(nodes)
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{n['client']}" for n in self.nodes)

    def _conf(self, node: dict[str, Any]) -> Path:
        routes = ", ".join(
            f"nats://127.0.0.1:{o['route']}" for o in self.nodes if o["name"] != node["name"]
        )
        store = self.root / str(node["name"])
        store.mkdir(parents=True, exist_ok=True)
        sync = "  sync_interval: always\n" if self.sync_always else ""
        conf = self.root / f"{node['name']}.conf"
        conf.write_text(
            f"server_name: {node['name']}\n"
            f"listen: 127.0.0.1:{node['client']}\n"
            f"http: 127.0.0.1:{node['http']}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(store))}\n"
            f"{sync}"
            "  limits { batch { max_inflight_per_stream: 500, max_inflight_total: 5000 } }\n"
            "}\n"
            "cluster {\n"
            "  name: df-bench\n"
            f"  listen: 127.0.0.1:{node['route']}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )
        return conf

    def start(self, popen: Any, timeout: float = 60.0) -> BenchCluster:
        """Start every node with ``popen(name, argv, **kw)`` (the bench's PID registry) and
        wait until all report healthy."""
        from durablefuture.natsserver import find_binary

        for node in self.nodes:
            conf = self._conf(node)
            with open(self.root / f"{node['name']}.log", "ab") as logf:
                proc = popen(
                    f"nats-{node['name']}",
                    [find_binary(), "-c", str(conf)],
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                )
            self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while not all(self._healthy(n) for n in self.nodes):
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a nats-server of the cluster exited: {self._logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the NATS cluster was not healthy in {timeout:g}s")
            time.sleep(0.1)
        return self

    def _healthy(self, node: dict[str, Any]) -> bool:
        url = f"http://127.0.0.1:{node['http']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except Exception:
            return False

    def _logs(self) -> str:
        out = []
        for node in self.nodes:
            with contextlib.suppress(OSError):
                text = (self.root / f"{node['name']}.log").read_text(errors="replace")
                out.append(f"{node['name']}: {text[-600:]}")
        return "\n".join(out)

    def varz(self) -> dict[str, Any]:
        total: dict[str, Any] = {"in_msgs": 0, "out_msgs": 0}
        for node in self.nodes:
            url = f"http://127.0.0.1:{node['http']}/varz"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    data = json.loads(r.read())
            except Exception:
                return {}
            for key in total:
                total[key] += data.get(key, 0)
        return total

    def store_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())


def cluster_dir(tmpdir: str) -> str:
    path = os.path.join(tmpdir, "nats-cluster")
    os.makedirs(path, exist_ok=True)
    return path
