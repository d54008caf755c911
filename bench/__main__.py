"""``python -m bench``: W1-W5 on DurableFuture (and optionally Temporal and DBOS) in one run.

Prints one JSON line per workload (and a ``meta``/``startup``/``round_end`` line per round) on
stdout, appends them all to a results file, and ends with a side-by-side table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import check, report, secure
from bench.df_engine import FULL, QUICK, DFOptions, run_df
from bench.peers import DEFAULT_PEERS_DIR, DEFAULT_VENV, Peers
from bench.procs import Started
from bench.stats import Emitter, log

ALL = ["w1", "w2", "w3", "w4", "w5", "mem", "w6", "w8", "storage", "vis"]
DEFAULT = ["w1", "w2", "w3", "w4", "w5", "mem"]
"""W6 (many open workflows), W8 (schedules, a minute or more), storage (waits out a retention)
and VIS (visibility over 100,000 closed runs) run when asked for: --workloads w6,w8,storage,vis."""
ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="W1-W5 (DESIGN.md) on DurableFuture through real daemons; optionally the "
        "Temporal and DBOS peers (../shared/bench-peers) in the same run.",
    )
    ap.add_argument(
        "--workloads",
        default=",".join(DEFAULT),
        help="comma-separated subset of w1..w5, mem (a worker holding many open workflows) "
        "w6 (100,000 workflows started over 2 minutes, each sleeping 60 s between two "
        "activities), w8 (schedules: 1,000 firing every minute for 5 minutes) and storage (bytes "
        "per W1 workflow while retained and after a 1-minute retention); w6, w8 and storage are "
        "not in the default set",
    )
    ap.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every workload ran and printed a sound record (CI's smoke check)",
    )
    ap.add_argument("--w1-count", type=int, default=None, help="W1 workflows (default 2000)")
    ap.add_argument(
        "--w6-count", type=int, default=None, help="W6 workflows (default 100000, quick 300)"
    )
    ap.add_argument(
        "--w6-ramp",
        type=float,
        default=None,
        help="W6 seconds over which they are started (default 120, quick 3)",
    )
    ap.add_argument(
        "--w6-sleep",
        type=float,
        default=None,
        help="W6 seconds each sleeps between its activities (default 60, quick 3)",
    )
    ap.add_argument(
        "--w8-schedules", type=int, default=None, help="W8 schedules (default 1000, quick 50)"
    )
    ap.add_argument(
        "--w8-seconds", type=int, default=None, help="W8 seconds of firing (default 300, quick 10)"
    )
    ap.add_argument(
        "--w8-every",
        type=int,
        default=None,
        help="W8 seconds between firings (default 60, quick 1)",
    )
    ap.add_argument(
        "--storage-n",
        type=int,
        default=None,
        help="storage: W1 workflows (default 2000, quick 100)",
    )
    ap.add_argument(
        "--storage-retention",
        type=float,
        default=None,
        help="storage: the namespace retention in seconds (default 60, quick 5)",
    )
    ap.add_argument(
        "--vis-runs", type=int, default=None, help="VIS closed runs (default 100000, quick 2000)"
    )
    ap.add_argument("--with-temporal", action="store_true", help="also run Temporal W1-W5")
    ap.add_argument("--with-dbos", action="store_true", help="also run DBOS W1/W2")
    ap.add_argument(
        "--durable",
        action="store_true",
        help="nats-server sync_interval: always (same as --fsync always)",
    )
    ap.add_argument(
        "--fsync",
        choices=["default", "always", "both"],
        default=None,
        help="NATS fsync setting(s) to run DurableFuture with (default: default)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="rounds per engine (default 1)")
    ap.add_argument("--peer-rounds", type=int, default=None, help="rounds for the peers")
    ap.add_argument("--skip-df", action="store_true", help="run only the peers")
    ap.add_argument(
        "--timeout", type=float, default=None, help="seconds per workload (default 600, quick 90)"
    )
    ap.add_argument("--out", default=None, help="results file (JSON lines)")
    ap.add_argument("--log-level", default="warning", help="df-server/df-worker --log-level")
    ap.add_argument("--servers", type=int, default=1, help="df-server processes (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="df-worker processes (default 1)")
    ap.add_argument(
        "--cluster",
        action="store_true",
        help="a 3-node NATS cluster on loopback instead of one nats-server; the namespace's "
        "streams get 3 replicas (df-server --replicas 3)",
    )
    ap.add_argument(
        "--no-sticky",
        action="store_true",
        help="workflow tasks only through the shared queue (no sticky routing), to compare",
    )
    ap.add_argument("--max-concurrent-activities", type=int, default=200)
    ap.add_argument("--max-concurrent-workflow-tasks", type=int, default=100)
    ap.add_argument(
        "--profile", metavar="DIR", default=None, help="py-spy the daemons, summaries in DIR"
    )
    ap.add_argument("--profile-workloads", default="w1", help="workloads to profile (default w1)")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs (stores, logs)")
    ap.add_argument("--peers-dir", default=DEFAULT_PEERS_DIR)
    ap.add_argument("--peers-venv", default=DEFAULT_VENV)
    ap.add_argument(
        "--ref",
        default=None,
        help="benchmark the engine as committed at this git ref (exported to a temp dir with "
        "`git archive`, this bench/ copied in) instead of the working tree",
    )
    ap.add_argument(
        "--codec",
        default=None,
        metavar="MODULE:FACTORY",
        help="payload codec of the client and df-workers (sets DF_CODEC), e.g. "
        "durablefuture.codecs:from_env with keys in DF_CODEC_KEYS",
    )
    ap.add_argument(
        "--secure",
        choices=["off", "on", "pair", "side"],
        default="off",
        help="on: df auth init logins, TLS with client certificates and an AES-GCM codec, all "
        "made in the round's temp dir; pair: each round runs off and on back to back "
        "(alternating which goes first) and the end prints medians and on/off ratios; side "
        "(W2 only): both deployments up at once, W2's workflows alternating between them one "
        "by one, so both see the machine at the same speed",
    )
    ap.add_argument(
        "--secure-parts",
        default="auth,tls,codec",
        help="what --secure turns on (default all): auth, tls, codec, comma-separated",
    )
    a = ap.parse_args(argv)
    a.secure_parts = tuple(p.strip() for p in a.secure_parts.split(",") if p.strip())
    if not a.secure_parts or set(a.secure_parts) - {"auth", "tls", "codec"}:
        ap.error("--secure-parts: choose from auth, tls, codec")
    if a.codec and a.secure != "off":
        ap.error("--secure brings its own codec (AES-GCM); leave out --codec")
    if a.codec:
        os.environ["DF_CODEC"] = a.codec
    wl = [w.strip().lower() for w in a.workloads.split(",") if w.strip()]
    bad = [w for w in wl if w not in ALL]
    if bad or not wl:
        ap.error(f"--workloads: unknown {bad or wl}; choose from {','.join(ALL)}")
    a.workload_list = wl
    if a.durable and a.fsync not in (None, "always"):
        ap.error("--durable means --fsync always")
    a.fsync = "always" if a.durable else (a.fsync or "default")
    if a.rounds < 1 or (a.peer_rounds is not None and a.peer_rounds < 1):
        ap.error("--rounds must be >= 1")
    if (a.w8_schedules is not None and not 1 <= a.w8_schedules <= 10_000) or (
        a.w8_seconds is not None and not 1 <= a.w8_seconds <= 3600
    ):
        ap.error("--w8-schedules must be 1..10000 and --w8-seconds 1..3600")
    if a.w6_count is not None and not 1 <= a.w6_count <= 1_000_000:
        ap.error("--w6-count must be 1..1000000")
    for name in ("w6_ramp", "w6_sleep"):
        value = getattr(a, name)
        if value is not None and not 0 <= value <= 3600:
            ap.error(f"--{name.replace('_', '-')} must be 0..3600 seconds")
    if a.w8_every is not None and not 1 <= a.w8_every <= 3600:
        ap.error("--w8-every must be 1..3600")
    if not (1 <= a.servers <= 8 and 1 <= a.workers <= 8):
        ap.error("--servers and --workers must be between 1 and 8")
    return a


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _without(argv: list[str], opt: str) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == opt:
            skip = True
        elif not x.startswith(opt + "="):
            out.append(x)
    return out


def run_at_ref(a: argparse.Namespace, argv: list[str], out_path: str, started: Started) -> int:
    """Export ``a.ref`` to a temp dir, copy this bench/ in, and run the benchmark from there."""
    label = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", a.ref],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if label.returncode != 0:
        log(f"--ref {a.ref}: {label.stderr.strip()}")
        return 2
    sha = label.stdout.strip()
    export = tempfile.mkdtemp(prefix=f"df-bench-{sha}-")
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", a.ref],
            capture_output=True,
            timeout=120,
            check=True,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(export, filter="data")
        shutil.copytree(
            ROOT / "bench",
            Path(export) / "bench",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("results", "__pycache__"),
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = export + os.pathsep + env.get("PYTHONPATH", "")
        env["DF_BENCH_GIT"] = f"{sha} (--ref {a.ref})"
        args = [*_without(argv, "--ref"), "--out", out_path, "--peers-dir", a.peers_dir]
        log(f"benchmarking {a.ref} ({sha}) exported to {export}")
        child = started.popen(
            "bench@ref", [sys.executable, "-m", "bench", *args], cwd=export, env=env
        )
        return child.wait()
    finally:
        started.stop_all()
        shutil.rmtree(export, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    sizes = QUICK if a.quick else FULL
    if a.w1_count is not None:
        sizes = dataclasses.replace(sizes, w1_n=max(1, min(a.w1_count, 1_000_000)))
    if a.w6_count is not None:
        sizes = dataclasses.replace(sizes, w6_n=a.w6_count)
    if a.w6_ramp is not None:
        sizes = dataclasses.replace(sizes, w6_ramp=a.w6_ramp)
    if a.w6_sleep is not None:
        sizes = dataclasses.replace(sizes, w6_sleep=a.w6_sleep)
    if a.w8_schedules is not None:
        sizes = dataclasses.replace(sizes, w8_n=a.w8_schedules)
    if a.w8_seconds is not None:
        sizes = dataclasses.replace(sizes, w8_secs=a.w8_seconds)
    if a.w8_every is not None:
        sizes = dataclasses.replace(sizes, w8_every=a.w8_every)
    if a.storage_n is not None:
        sizes = dataclasses.replace(sizes, storage_n=a.storage_n)
    if a.storage_retention is not None:
        sizes = dataclasses.replace(sizes, storage_retention=a.storage_retention)
    if a.vis_runs is not None:
        sizes = dataclasses.replace(sizes, vis_n=max(1, min(a.vis_runs, 10_000_000)))
    out_path = os.path.abspath(
        a.out or str(ROOT / "bench" / "results" / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
    )
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    started = Started()
    if a.ref:
        try:
            return run_at_ref(a, argv, out_path, started)
        except KeyboardInterrupt:
            return 130
    peers: Peers | None = None
    with open(out_path, "a") as out:
        emitter = Emitter(out)
        try:
            if not a.skip_df:
                modes = ["default", "always"] if a.fsync == "both" else [a.fsync]
                for mode in modes:
                    opts = DFOptions(
                        sizes=sizes,
                        fsync_always=mode == "always",
                        workload_timeout=a.timeout or (90.0 if a.quick else 600.0),
                        max_concurrent_activities=a.max_concurrent_activities,
                        max_concurrent_workflow_tasks=a.max_concurrent_workflow_tasks,
                        log_level=a.log_level,
                        keep_dir=a.keep,
                        profile_dir=a.profile,
                        profile_workloads=tuple(a.profile_workloads.split(",")),
                        servers=a.servers,
                        workers=a.workers,
                        cluster=a.cluster,
                        sticky=not a.no_sticky,
                        secure=None if a.secure == "off" else a.secure,
                        secure_parts=a.secure_parts,
                    )
                    asyncio.run(run_df(opts, a.workload_list, a.rounds, emitter, started))
            if a.with_temporal or a.with_dbos:
                peers = Peers(
                    emitter,
                    started,
                    peers_dir=a.peers_dir,
                    venv=a.peers_venv,
                    quick_sizes=dataclasses.asdict(sizes) if a.quick else None,
                    keep=a.keep,
                )
                rounds = a.peer_rounds or a.rounds
                if a.with_temporal:
                    peers.temporal(a.workload_list, rounds)
                if a.with_dbos:
                    peers.dbos(a.workload_list, rounds)
        except KeyboardInterrupt:
            log("interrupted; stopping the processes this run started")
            return 130
        finally:
            started.stop_all()
            if peers is not None:
                peers.cleanup()
        sys.stderr.write("\n" + report.table(emitter.lines))
        if a.secure in ("pair", "side"):
            sys.stderr.write("\n" + secure.ratio_table(emitter.lines, a.secure_parts))
    log(f"results: {out_path}")
    if a.check:
        found = check.problems(emitter.lines, a.workload_list)
        for problem in found:
            log(f"check: {problem}")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
