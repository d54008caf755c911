"""Percentiles, CPU/RSS snapshots and JSON-line output shared by the benchmark runners."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Sequence
from typing import IO, Any

import psutil  # type: ignore[import-untyped]


def pct(xs: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the same formula as bench-peers)."""
    s = sorted(xs)
    if not s:
        return None
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def lat_stats(xs: Sequence[float], prefix: str) -> dict[str, float | None]:
    """``{prefix}p50_ms`` / p95 / p99 / max in milliseconds, as the peer scripts name them."""
    out: dict[str, float | None] = {}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
        v = pct(xs, p)
        out[f"{prefix}{name}_ms"] = None if v is None else round(v * 1000, 2)
    return out


def snap(procs: list[psutil.Process]) -> tuple[float, int]:
    """CPU seconds (user+sys) and RSS bytes summed over processes."""
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return cpu, rss


def write_calls(procs: list[psutil.Process]) -> int:
    """Write system calls so far (``syscw`` of ``/proc/PID/io``: to sockets and files) summed
    over processes: over TLS nats-server makes one per 512 bytes it sends to a client (see
    ``bench.tls_writes``), in plain text one per flush."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error, AttributeError, NotImplementedError):
            total += p.io_counters().write_count
    return total


class Emitter:
    """Prints one JSON object per line on stdout (flushed) and appends it to a results file."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self.lines: list[dict[str, Any]] = []

    def emit(self, rec: dict[str, Any]) -> None:
        self.lines.append(rec)
        line = json.dumps(rec)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if self.out is not None:
            self.out.write(line + "\n")
            self.out.flush()

    def passthrough(self, line: str) -> None:
        """A line produced by a peer script: re-emitted as-is if it is a JSON object."""
        try:
            rec = json.loads(line)
        except ValueError:
            sys.stderr.write(line + "\n")
            return
        if isinstance(rec, dict):
            self.emit(rec)
        else:
            sys.stderr.write(line + "\n")


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()
