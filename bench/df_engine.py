"""W1-W5 against DurableFuture through the real daemons as separate processes.

Per round: an embedded nats-server (file storage in a fresh temp dir; ``sync_interval: always``
when durable), one ``df-server`` process, one ``df-worker`` process (workflows and activities of
``bench.flows``), and this process as the client/driver. CPU seconds and RSS of every process are
sampled with psutil before/after each workload, and JetStream stream growth is read from
stream info, so each JSON line carries the cost per workflow as well as the speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import bytes_by_kind, flows, secure
from bench.procs import Started
from bench.profile import Profiler
from bench.scrape import cache_and_routes, scrape
from bench.secure import SecureFiles
from bench.stats import Emitter, lat_stats, log, pct, snap, write_calls

ROOT = Path(__file__).resolve().parent.parent
ENGINE = "durablefuture"
NAMESPACE = "default"
TASK_QUEUE = "bench"
now = time.perf_counter


@dataclass(frozen=True)
class Sizes:
    w1_n: int = 2000
    w1_conc: int = 200
    w2_n: int = 200
    w3_n: int = 1000
    w4_n: int = 1000
    w5_n: int = 1000
    w5_secs: float = 1.0
    mem_n: int = 10_000
    w8_n: int = 1000
    w8_secs: int = 300
    w8_every: int = 60
    w6_n: int = 100_000
    w6_ramp: float = 120.0
    w6_sleep: float = 60.0
    storage_n: int = 2000
    storage_retention: float = 60.0
    vis_n: int = 100_000


FULL = Sizes()
QUICK = Sizes(
    w1_n=100,
    w1_conc=20,
    w2_n=20,
    w3_n=50,
    w4_n=50,
    w5_n=50,
    mem_n=200,
    w8_n=50,
    w8_secs=10,
    w8_every=1,
    w6_n=300,
    w6_ramp=3.0,
    w6_sleep=3.0,
    storage_n=100,
    storage_retention=5.0,
    vis_n=2_000,
)


@dataclass(frozen=True)
class DFOptions:
    sizes: Sizes = FULL
    fsync_always: bool = False
    workload_timeout: float = 600.0
    max_concurrent_activities: int = 200  # the Temporal peer worker's settings
    max_concurrent_workflow_tasks: int = 100
    log_level: str = "warning"
    keep_dir: bool = False
    profile_dir: str | None = None
    profile_workloads: tuple[str, ...] = ("w1",)
    servers: int = 1
    workers: int = 1
    sticky: bool = True
    """Sticky workflow tasks (False: df-server --sticky-timeout 0, df-worker --no-sticky)."""
    cluster: bool = False
    """A 3-node NATS cluster on loopback, streams with 3 replicas (``bench/cluster.py``)."""
    secure: str | None = None
    secure_parts: tuple[str, ...] = ("auth", "tls", "codec")
    """"on": logins, TLS and AES-GCM (bench/secure.py); "off" or None: none of them
    (None leaves the key out of the lines)."""


def _bench_nats_class() -> type:
    from durablefuture.natsserver import NatsServer, free_port

    class BenchNats(NatsServer):
        """NatsServer plus the HTTP monitoring endpoint on loopback (for /varz counters)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.monitor_port = free_port()

        def _config(self) -> str:
            path: str = super()._config()
            with open(path, "a") as f:
                f.write(f'http: "127.0.0.1:{self.monitor_port}"\n')
                if os.environ.get(bytes_by_kind.ENV):
                    f.write(bytes_by_kind.trace_config())
            return path

        def varz(self) -> dict[str, Any]:
            url = f"http://127.0.0.1:{self.monitor_port}/varz"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    data: dict[str, Any] = json.loads(r.read())
                    return data
            except Exception:
                return {}

    return BenchNats


def _git_describe() -> str:
    if os.environ.get("DF_BENCH_GIT"):
        return os.environ["DF_BENCH_GIT"]
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "durablefuture", "daemons"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def meta_record(opts: DFOptions) -> dict[str, Any]:
    from durablefuture.natsserver import find_binary

    try:
        nats_ver = subprocess.run(
            [find_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception as exc:
        nats_ver = f"unknown ({exc})"
    return {
        "engine": ENGINE,
        "workload": "meta",
        "fsync": "always" if opts.fsync_always else "default",
        "durablefuture": version("durablefuture"),
        "git": _git_describe(),
        "nats_py": version("nats-py"),
        "nats_server": nats_ver,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load1_at_start": round(os.getloadavg()[0], 2),
        "processes": f"{'3-node NATS cluster (R3)' if opts.cluster else 'nats-server'} + "
        f"{opts.servers} df-server + {opts.workers} df-worker + "
        "driver (this process)",
        "worker_settings": (
            f"max_concurrent_activities={opts.max_concurrent_activities}, "
            f"max_concurrent_workflow_tasks={opts.max_concurrent_workflow_tasks}, "
            f"log_level={opts.log_level}, rest default"
        ),
        "sizes": dataclasses.asdict(opts.sizes),
        "codec": os.environ.get("DF_CODEC") or None,
        "secure": opts.secure,
        **({"secure_parts": list(opts.secure_parts)} if opts.secure else {}),
    }


def _codec() -> Any:
    """The payload codec of ``DF_CODEC`` (``--codec``), which the df-workers read too."""
    import pkgutil

    spec = os.environ.get("DF_CODEC")
    return pkgutil.resolve_name(spec)() if spec else None


async def js_snapshot(js: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(last sequence per stream, deliveries per durable consumer) from JetStream info."""
    seqs: dict[str, int] = {}
    deliveries: dict[str, int] = {}
    for si in await js.streams_info():
        name = si.config.name
        seqs[name] = int(si.state.last_seq)
        with contextlib.suppress(Exception):
            for ci in await js.consumers_info(name):
                d = ci.delivered.consumer_seq if ci.delivered else 0
                deliveries[f"{name}/{ci.name}"] = int(d)
    return seqs, deliveries


class DFRound:
    """One round: fresh nats-server + df-server + df-worker, then the selected workloads."""

    def __init__(self, idx: int, opts: DFOptions, emitter: Emitter, started: Started) -> None:
        self.idx = idx
        self.opts = opts
        self.sizes = opts.sizes
        self.emitter = emitter
        self.started = started
        self.prefix = f"r{idx}-{uuid.uuid4().hex[:6]}"
        self.fsync = "always" if opts.fsync_always else "default"
        self.tmpdir = tempfile.mkdtemp(prefix="df-bench-")
        self.nats: Any = None
        self.daemons: dict[str, list[subprocess.Popen[bytes]]] = {"server": [], "worker": []}
        self.client: Any = None
        self.procs: dict[str, list[psutil.Process]] = {"server": [], "worker": [], "nats": []}
        self.secure: SecureFiles | None = None
        self.env_extra: dict[str, str] = {}
        if not opts.sticky:
            self.env_extra |= {"DF_STICKY": "0", "DF_STICKY_TIMEOUT": "0"}
        self.metrics_ports: list[int] = []

    def emit(self, rec: dict[str, Any]) -> None:
        mode = {} if self.opts.secure is None else {"secure": self.opts.secure}
        self.emitter.emit({"engine": ENGINE, "fsync": self.fsync, **mode, "round": self.idx, **rec})

    def _login(self, role: str) -> list[str]:
        """The daemon options of ``role`` in a secured round (none otherwise)."""
        if self.secure is None:
            return []
        return [*self.secure.creds_args(role), *self.secure.tls_args()]

    # ------------------------------------------------------------------ processes

    def _daemon(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ) | self.env_extra
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        log_path = os.path.join(self.tmpdir, f"{name}.log")
        with open(log_path, "ab") as logf:
            proc: subprocess.Popen[bytes] = self.started.popen(
                name,
                [sys.executable, "-m", module, *args],
                cwd=str(ROOT),
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        return proc

    def _log_tail(self, name: str, n: int = 1500) -> str:
        try:
            with open(os.path.join(self.tmpdir, f"{name}.log"), errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    async def _wait(
        self,
        what: str,
        check: Callable[[], Awaitable[bool]],
        proc: subprocess.Popen[bytes] | None,
        timeout: float = 30.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with code {proc.returncode}: {self._log_tail(what)}"
                )
            try:
                if await check():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{what} was not ready within {timeout:g}s: {self._log_tail(what)}")

    async def start(self) -> None:
        from durablefuture.client import Client
        from durablefuture.natsserver import free_port
        from durablefuture.transport.subjects import Layout

        layout = Layout(NAMESPACE)
        t0 = now()
        nats_cls = _bench_nats_class()
        nats_extra: dict[str, Any] = {}
        codec = _codec()  # (not passed when unset: --ref may run an engine without codecs)
        extra: dict[str, Any] = {"codec": codec} if codec is not None else {}
        if self.opts.secure == "on":
            from durablefuture.transport.tls import TlsConfig

            parts = self.opts.secure_parts
            self.secure = sec = secure.make(self.tmpdir, NAMESPACE, parts)
            extra = {}
            if "tls" in parts:
                nats_extra |= {"tls_cert": sec.server_cert, "tls_key": sec.server_key}
                nats_extra["tls_ca"] = sec.ca
                extra["tls"] = TlsConfig(ca=sec.ca, cert=sec.client_cert, key=sec.client_key)
            if "auth" in parts:
                nats_extra["include"] = sec.auth_config
                # the driver logs in as admin: the client role plus the stream and consumer
                # listings the counters below read
                extra["creds"] = sec.creds["admin"]
            if "codec" in parts:
                self.env_extra = {"DF_CODEC": "bench.secure:codec", secure.KEY_ENV: sec.aes_key}
                os.environ[secure.KEY_ENV] = sec.aes_key
                extra["codec"] = secure.codec()
        replicas: list[str] = []
        if self.opts.cluster:
            if self.opts.secure == "on":
                raise RuntimeError("--cluster does not run with --secure")
            from bench.cluster import BenchCluster, cluster_dir

            self.nats = BenchCluster(
                cluster_dir(self.tmpdir), sync_always=self.opts.fsync_always
            ).start(self.started.popen)
            self.procs["nats"] = [psutil.Process(p.pid) for p in self.nats.procs]
            replicas = ["--replicas", "3"]
        else:
            self.nats = nats_cls(
                os.path.join(self.tmpdir, "nats"), sync_always=self.opts.fsync_always, **nats_extra
            ).start()
            self.started.procs.append(("nats-server", self.nats.proc, signal.SIGTERM))
            self.procs["nats"] = [psutil.Process(self.nats.proc.pid)]
        t_nats = now() - t0
        url = self.nats.url
        self.client = await Client.connect(url, NAMESPACE, connect_timeout=10, **extra)
        js = self.client.pub.js

        async def server_ready() -> bool:
            await js.consumer_info(layout.stream, layout.server_consumer)
            return True

        t1 = now()
        for i in range(self.opts.servers):
            name = f"server{i}"
            self.metrics_ports.append(free_port())
            proc = self._daemon(
                name,
                "daemons.df_server",
                "--nats",
                url,
                "--namespace",
                NAMESPACE,
                "--metrics-port",
                str(self.metrics_ports[-1]),
                "--log-level",
                self.opts.log_level,
                "--log-format",
                "text",
                *replicas,
                *self._login("server"),
            )
            self.daemons["server"].append(proc)
            self.procs["server"].append(psutil.Process(proc.pid))
            await self._wait(name, server_ready, proc)
        t_server = now() - t1

        async def worker_ready() -> bool:
            names = (layout.workflow_consumer(TASK_QUEUE), layout.activity_consumer(TASK_QUEUE))
            for name in names:
                info = await js.consumer_info(layout.stream, name)
                if (info.num_waiting or 0) < len(self.daemons["worker"]):
                    return False
            return True

        t2 = now()
        for i in range(self.opts.workers):
            name = f"worker{i}"
            proc = self._worker(name, url)
            self.daemons["worker"].append(proc)
            self.procs["worker"].append(psutil.Process(proc.pid))
            await self._wait(name, worker_ready, proc)
        t_worker = now() - t2
        # one warm-up workflow end to end: every process and consumer is live
        warmup = await self.one_w2(7, "warmup")
        self.emit(
            {
                "workload": "startup",
                "servers": self.opts.servers,
                "workers": self.opts.workers,
                "nats_ready_s": round(t_nats, 3),
                "server_ready_s": round(t_server, 3),
                "worker_ready_s": round(t_worker, 3),
                "warmup_wf_s": round(warmup, 3),
                "server_rss_mb": round(snap(self.procs["server"])[1] / 2**20, 1),
                "worker_rss_mb": round(snap(self.procs["worker"])[1] / 2**20, 1),
                "nats_rss_mb": round(snap(self.procs["nats"])[1] / 2**20, 1),
            }
        )

    def _worker(self, name: str, url: str) -> subprocess.Popen[bytes]:
        from durablefuture.natsserver import free_port

        port = free_port()
        self.metrics_ports.append(port)
        return self._daemon(
            name,
            "daemons.df_worker",
            "--nats",
            url,
            "--namespace",
            NAMESPACE,
            "--task-queue",
            TASK_QUEUE,
            "--workflows",
            "bench.flows:WORKFLOWS",
            "--activities",
            "bench.flows:ACTIVITIES",
            "--max-concurrent-activities",
            str(self.opts.max_concurrent_activities),
            "--max-concurrent-workflow-tasks",
            str(self.opts.max_concurrent_workflow_tasks),
            "--metrics-port",
            str(port),
            "--log-level",
            self.opts.log_level,
            "--log-format",
            "text",
            *self._login("worker"),
        )

    async def stop(self) -> int | None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 10)
        for proc in self.daemons["worker"] + self.daemons["server"]:
            self.started.stop(proc)
        store_bytes = None
        if self.opts.cluster and self.nats is not None:
            for proc in self.nats.procs:
                self.started.stop(proc)
            store_bytes = self.nats.store_bytes()
        elif self.nats is not None and self.nats.proc is not None:
            self.started.stop(self.nats.proc)
            with contextlib.suppress(OSError):
                store_bytes = sum(
                    f.stat().st_size for f in Path(self.tmpdir, "nats").rglob("*") if f.is_file()
                )
        if self.opts.keep_dir:
            log(f"round {self.idx} files kept in {self.tmpdir}")
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return store_bytes

    # ------------------------------------------------------------------ measuring

    def snaps(self) -> dict[str, tuple[float, int]]:
        return {
            "server": snap(self.procs["server"]),
            "worker": snap(self.procs["worker"]),
            "client": snap([psutil.Process()]),
            "nats": snap(self.procs["nats"]),
        }

    async def run_workload(self, name: str) -> None:
        fn: Callable[[], Awaitable[dict[str, Any]]] = getattr(self, name)
        js = self.client.pub.js
        for role, procs in self.daemons.items():
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    self.emit(
                        {
                            "workload": name,
                            "error": f"df-{role} {i} exited with code {proc.returncode} before "
                            f"{name}: " + self._log_tail(f"{role}{i}", 600),
                        }
                    )
                    return
        seq0, del0 = await js_snapshot(js)
        scraped0 = [scrape(p) for p in self.metrics_ports]
        varz0 = self.nats.varz()
        writes0 = write_calls(self.procs["nats"])
        trace = getattr(self.nats, "log_file", None) if os.environ.get(bytes_by_kind.ENV) else None
        trace0 = os.path.getsize(trace) if trace else 0
        before = self.snaps()
        profiler = None
        if self.opts.profile_dir and name in self.opts.profile_workloads:
            profiler = Profiler(self.started, self.opts.profile_dir, f"{self.fsync}-r{self.idx}")
            profiler.start(
                name,
                {f"{role}{i}": p for role, ps in self.daemons.items() for i, p in enumerate(ps)},
            )
        t0 = now()
        try:
            async with asyncio.timeout(self.opts.workload_timeout):
                rec = await fn()
        except TimeoutError:
            rec = {"error": f"TimeoutError: not done within {self.opts.workload_timeout:g}s"}
        except Exception as exc:  # record and move on, as the peer scripts do
            rec = {"error": f"{type(exc).__name__}: {exc}"}
        wall = now() - t0
        after = self.snaps()
        writes1 = write_calls(self.procs["nats"])
        if profiler is not None:
            profiler.stop()
        seq1, del1 = await js_snapshot(js)
        rec.update(cache_and_routes(scraped0, [scrape(p) for p in self.metrics_ports]))
        varz1 = self.nats.varz()
        wfs = rec.pop("_wfs", None) or 1
        post = rec.pop("_post", None)
        for k in before:
            rec[f"{k}_cpu_s"] = round(after[k][0] - before[k][0], 2)
            rec[f"{k}_rss_mb"] = round(after[k][1] / 2**20, 1)
        rec["cpu_ms_per_wf"] = {
            k: round((after[k][0] - before[k][0]) * 1000 / wfs, 3) for k in before
        }
        grown = {s: v - seq0.get(s, 0) for s, v in seq1.items()}
        delivered = sum(v - del0.get(c, 0) for c, v in del1.items())
        rec["js_msgs_per_wf"] = round(sum(grown.values()) / wfs, 2)
        rec["js_msgs"] = {s: v for s, v in grown.items() if v}
        rec["js_deliveries_per_wf"] = round(delivered / wfs, 2)
        if varz0 and varz1:
            rec["nats_in_msgs_per_wf"] = round((varz1["in_msgs"] - varz0["in_msgs"]) / wfs, 1)
            rec["nats_out_msgs_per_wf"] = round((varz1["out_msgs"] - varz0["out_msgs"]) / wfs, 1)
            if "out_bytes" in varz0 and "out_bytes" in varz1:
                out_bytes = varz1["out_bytes"] - varz0["out_bytes"]
                rec["nats_out_bytes_per_wf"] = round(out_bytes / wfs)
        rec["nats_writes_per_wf"] = round((writes1 - writes0) / wfs, 1)
        if trace:
            lines = bytes_by_kind.read_from(trace, trace0)
            rec["nats_bytes_by_kind"] = bytes_by_kind.summarize(lines, wfs)
        rec["workload_wall_s"] = round(wall, 3)
        rec["load1"] = round(os.getloadavg()[0], 2)
        if post is not None:  # analysis reading histories: after the cost snapshots
            try:
                async with asyncio.timeout(120):
                    rec.update(await post())
            except Exception as exc:
                rec["history_analysis_error"] = f"{type(exc).__name__}: {exc}"
        self.emit({"workload": name, **rec})

    # ------------------------------------------------------------------ workloads

    async def w1(self) -> dict[str, Any]:
        n, conc = self.sizes.w1_n, self.sizes.w1_conc
        sem = asyncio.Semaphore(conc)
        lat: list[float] = []
        client = self.client

        async def one(i: int) -> None:
            async with sem:
                t = now()
                h = await client.start_workflow(
                    flows.order_workflow,
                    f"o{i}",
                    10.0 + i,
                    id=f"{self.prefix}-w1-{i}",
                    task_queue=TASK_QUEUE,
                )
                r = await h.result(timeout=self.opts.workload_timeout)
                assert r.startswith("charged/"), r
                lat.append(now() - t)

        t0 = now()
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))
        wall = now() - t0
        return {
            "n": n,
            "max_in_flight": conc,
            "wall_s": round(wall, 3),
            "wf_per_s": round(n / wall, 1),
            **lat_stats(lat, "e2e_"),
            "_wfs": n,
        }

    async def one_w2(self, i: int, tag: str = "w2") -> float:
        """Seconds from the start call of W2's workflow ``i`` to its result."""
        t = now()
        r = await self.client.execute_workflow(
            flows.one_activity_workflow,
            i,
            id=f"{self.prefix}-{tag}-{i}",
            task_queue=TASK_QUEUE,
            timeout=60,
        )
        assert r == i, r
        return now() - t

    async def w2(self) -> dict[str, Any]:
        n = self.sizes.w2_n
        t0 = now()
        lat = [await self.one_w2(i) for i in range(n)]
        wall = now() - t0
        return {
            "n": n,
            "wall_s": round(wall, 3),
            "wf_per_s": round(n / wall, 1),
            **lat_stats(lat, ""),
            "_wfs": n,
        }

    async def w3(self) -> dict[str, Any]:
        from durablefuture.testing import Replayer

        n = self.sizes.w3_n
        t0 = now()
        h = await self.client.start_workflow(
            flows.long_history_workflow, n, id=f"{self.prefix}-w3", task_queue=TASK_QUEUE
        )
        r = await h.result(timeout=self.opts.workload_timeout)
        total = now() - t0
        assert r == n * (n - 1) // 2, r
        t1 = now()
        hist = await h.fetch_history()
        fetch_s = now() - t1
        replayer = Replayer(workflows=[flows.long_history_workflow])
        t2 = now()
        act = replayer.replay(hist)
        replay1 = now() - t2
        t3 = now()
        replayer.replay(hist)
        replay2 = now() - t3
        assert act.finished, "replay did not reach the end of the workflow"
        return {
            "n_activities": n,
            "total_s": round(total, 3),
            "per_activity_ms": round(total / n * 1000, 2),
            "history_events": len(hist),
            "history_fetch_s": round(fetch_s, 3),
            "replay_s": round(replay1, 3),
            "replay_2nd_s": round(replay2, 3),
            "_wfs": 1,
        }

    async def w4(self) -> dict[str, Any]:
        n = self.sizes.w4_n
        t0 = now()
        h = await self.client.start_workflow(
            flows.fan_out_workflow, n, id=f"{self.prefix}-w4", task_queue=TASK_QUEUE
        )
        r = await h.result(timeout=self.opts.workload_timeout)
        total = now() - t0
        assert r == n * (n - 1) // 2, r
        hist = await h.fetch_history()
        return {
            "n_activities": n,
            "total_s": round(total, 3),
            "history_events": len(hist),
            "_wfs": 1,
        }

    async def w5(self) -> dict[str, Any]:
        n, secs = self.sizes.w5_n, self.sizes.w5_secs
        late_e2e: list[float] = []
        late_wf: list[float] = []
        start_lat: list[float] = []
        client = self.client

        async def one(i: int) -> None:
            tc = now()
            h = await client.start_workflow(
                flows.timer_workflow, secs, id=f"{self.prefix}-w5-{i}", task_queue=TASK_QUEUE
            )
            ts = now()
            t0w, t1w = await h.result(timeout=self.opts.workload_timeout)
            td = now()
            start_lat.append(ts - tc)
            late_e2e.append(td - ts - secs)  # from start acknowledged to result observed
            late_wf.append(t1w - t0w - secs)  # in-workflow: now() after the timer - before

        t0 = now()
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))
        total = now() - t0

        async def from_histories() -> dict[str, Any]:
            return await self._w5_histories(n)

        return {
            "n": n,
            "timer_s": secs,
            "total_s": round(total, 3),
            **lat_stats(late_e2e, "late_e2e_"),
            **lat_stats(late_wf, "late_inwf_"),
            **lat_stats(start_lat, "start_call_"),
            "_wfs": n,
            "_post": from_histories,
        }

    async def mem(self) -> dict[str, Any]:
        """Memory: the worker holds ``mem_n`` open workflows (each waiting for a signal, with a
        query handler) in its cache of live generators; ``worker_rss_mb`` is the figure."""
        n = self.sizes.mem_n
        sem = asyncio.Semaphore(200)
        client = self.client

        async def one(i: int) -> None:
            async with sem:
                await client.start_workflow(
                    flows.waiting_workflow, i, id=f"{self.prefix}-mem-{i}", task_queue=TASK_QUEUE
                )

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))
        for _ in range(600):  # until every first workflow task has run (bounded: 60 s)
            depth = await client.queue_depths(TASK_QUEUE)
            if depth.get("workflow_pending", 1) == 0 and depth.get("workflow_in_flight", 1) == 0:
                break
            await asyncio.sleep(0.1)
        probe = client.get_workflow_handle(f"{self.prefix}-mem-{n - 1}")
        state = await probe.query("state")
        return {"open_workflows": n, "query_ok": state == {"i": n - 1}, "_wfs": n}

    async def w6(self) -> dict[str, Any]:
        """Many open workflows: ``w6_n`` started over ``w6_ramp`` s, each sleeping ``w6_sleep``
        s between two activities (``w6.py``)."""
        from bench.w6 import w6

        def rss() -> dict[str, int]:
            return {role: snap(self.procs[role])[1] for role in ("server", "worker")}

        return await w6(
            self.client,
            self.prefix,
            self.sizes.w6_n,
            self.sizes.w6_ramp,
            self.sizes.w6_sleep,
            rss,
            self.opts.workload_timeout,
        )

    async def w8(self) -> dict[str, Any]:
        """Schedules: ``w8_n`` schedules firing every ``w8_every`` s for ``w8_secs`` (``w8.py``)."""
        from bench.w8 import w8

        return await w8(
            self.client,
            self.prefix,
            self.sizes.w8_n,
            self.sizes.w8_secs,
            self.sizes.w8_every,
            snaps=self.snaps,
        )

    async def storage(self) -> dict[str, Any]:
        """Bytes per completed W1 workflow while retained and after expiry (``storage.py``)."""
        from bench.storage import storage

        s = self.sizes
        return await storage(self.client, self.prefix, s.storage_n, s.w1_conc, s.storage_retention)

    async def vis(self) -> dict[str, Any]:
        """Visibility: list/count over ``vis_n`` closed runs (``bench/visibility.py``)."""
        from bench.visibility import visibility

        return await visibility(self.client, self.prefix, self.sizes.vis_n, self.procs["server"])

    async def _w5_histories(self, n: int) -> dict[str, Any]:
        """Where W5's lateness comes from, read from the recorded event times.

        ``late_fire_*``: TimerFired.at - TimerStarted.fire_at (how late the timer itself fired);
        ``first_task_*``: TimerStarted.at - WorkflowStarted.at (the first workflow task's round
        trip, which ``df.workflow.now()`` before the sleep does not include: it is the time of
        WorkflowStarted); ``resume_*``: WorkflowCompleted.at - TimerFired.at.
        """
        from durablefuture.core import events as ev

        fire: list[float] = []
        first: list[float] = []
        resume: list[float] = []
        started_at: list[float] = []
        record: list[float] = []
        # per run: (WorkflowStarted.at, TimerStarted.at, TimerFired.at, its fire_at)
        times: list[tuple[float, float, float, float]] = []
        armed_late = 0
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with sem:
                h = self.client.get_workflow_handle(f"{self.prefix}-w5-{i}")
                hist = await h.fetch_history()
            started = next(e for e in hist if isinstance(e, ev.TimerStarted))
            fired = next(e for e in hist if isinstance(e, ev.TimerFired))
            nonlocal armed_late
            fire.append(fired.at - started.fire_at)
            first.append(started.at - hist[0].at)
            resume.append(hist[-1].at - fired.at)
            started_at.append(hist[0].at)
            armed_late += started.at > started.fire_at
            # how long the firing took to be recorded once the timer was both armed and due
            record.append(fired.at - max(started.at, started.fire_at))
            times.append((hist[0].at, started.at, fired.at, started.fire_at))

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))
        return {
            **lat_stats(fire, "late_fire_"),
            **lat_stats(first, "first_task_"),
            **lat_stats(resume, "resume_"),
            **lat_stats(record, "fire_record_"),
            "starts_spread_ms": round((max(started_at) - min(started_at)) * 1000, 1),
            "armed_after_due": armed_late,
            **_w5_timeline(times),
        }


async def run_df(
    opts: DFOptions, workloads: list[str], rounds: int, emitter: Emitter, started: Started
) -> None:
    emitter.emit(meta_record(opts))
    if opts.secure == "side":
        await run_side(opts, workloads, rounds, emitter, started)
        return
    for r in range(rounds):
        if opts.secure == "pair":
            # unsecured and secured back to back, alternating which goes first
            modes = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        else:
            modes = [opts.secure]  # type: ignore[list-item]
        for mode in modes:
            rnd = DFRound(r, dataclasses.replace(opts, secure=mode), emitter, started)
            try:
                await rnd.start()
                for w in workloads:
                    await rnd.run_workload(w)
            except Exception as exc:
                rnd.emit({"workload": "round", "error": f"{type(exc).__name__}: {exc}"})
            finally:
                store_bytes = await rnd.stop()
                rnd.emit({"workload": "round_end", "store_bytes": store_bytes})


async def run_side(
    opts: DFOptions, workloads: list[str], rounds: int, emitter: Emitter, started: Started
) -> None:
    """``--secure side``: an unsecured and a secured deployment up at once, W2's workflows
    alternating between them one by one (which goes first alternating too), so both see the
    machine at the same speed, whatever the host does from one second to the next. Emits a
    ``w2`` record per deployment and round, with ``pair_ratio_p50``: the median of the
    ratios secured / unsecured of the workflows run one after the other."""
    if workloads != ["w2"]:
        raise RuntimeError("--secure side runs W2 only (--workloads w2)")
    for r in range(rounds):
        off = DFRound(r, dataclasses.replace(opts, secure="off"), emitter, started)
        on = DFRound(r, dataclasses.replace(opts, secure="on"), emitter, started)
        try:
            await off.start()
            await on.start()
            n = opts.sizes.w2_n
            lat: dict[str, list[float]] = {"off": [], "on": []}
            for i in range(n):
                pair = [("off", off), ("on", on)] if i % 2 == 0 else [("on", on), ("off", off)]
                for mode, rnd in pair:
                    lat[mode].append(await rnd.one_w2(i, "w2s"))
            ratios = [b / a for a, b in zip(lat["off"], lat["on"], strict=True) if a]
            for mode, rnd in (("off", off), ("on", on)):
                rnd.emit(
                    {
                        "workload": "w2",
                        "n": n,
                        "side_by_side": True,
                        **lat_stats(lat[mode], ""),
                        "pair_ratio_p50": round(statistics.median(ratios), 3),
                        "load1": round(os.getloadavg()[0], 2),
                    }
                )
        except Exception as exc:
            off.emit({"workload": "round", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            for rnd in (on, off):
                rnd.emit({"workload": "round_end", "store_bytes": await rnd.stop()})


def _w5_timeline(times: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    """W5's runs in the order they were started, in tenths: for each tenth the p99 of
    the first task (TimerStarted.at - WorkflowStarted.at), of the firing's lateness
    (TimerFired.at - fire_at) and of its recording once armed and due; and the window, from
    the first WorkflowStarted, in which the starts, the TimerStarted and the TimerFired of
    each tenth were recorded (seconds: first-last)."""
    if not times:
        return {}
    times = sorted(times)
    t0 = times[0][0]
    tenth = max(1, len(times) // 10)
    out: dict[str, list[Any]] = {
        "by_start_tenth_first_task_p99_ms": [],
        "by_start_tenth_late_fire_p99_ms": [],
        "by_start_tenth_fire_record_p99_ms": [],
        "by_start_tenth_windows_s": [],
    }
    for i in range(0, len(times), tenth):
        part = times[i : i + tenth]
        first = [ts - ws for ws, ts, _, _ in part]
        late = [tf - fa for _, _, tf, fa in part]
        rec = [tf - max(ts, fa) for _, ts, tf, fa in part]
        out["by_start_tenth_first_task_p99_ms"].append(round((pct(first, 99) or 0) * 1000))
        out["by_start_tenth_late_fire_p99_ms"].append(round((pct(late, 99) or 0) * 1000))
        out["by_start_tenth_fire_record_p99_ms"].append(round((pct(rec, 99) or 0) * 1000))
        out["by_start_tenth_windows_s"].append(
            [
                f"{min(x[k] for x in part) - t0:.2f}-{max(x[k] for x in part) - t0:.2f}"
                for k in (0, 1, 2)
            ]
        )
    return out
