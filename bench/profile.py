"""Optional py-spy sampling of the daemons during a workload, kept as text summaries.

``python -m bench --profile DIR`` runs ``py-spy record --format raw`` on the df-server and
df-worker PIDs during the profiled workloads (W1 by default), then writes, per process, the raw
collapsed stacks and a summary: the top frames by own samples ("self") and by samples anywhere
on the stack ("inclusive"). py-spy stops its target for each sample unless ``--nonblocking``
(used here), which still costs some CPU: profiled rounds are for diagnosis, not for figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import Started
from bench.stats import log

ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def shorten(frame: str) -> str:
    """``f (/x/site-packages/nats/aio/client.py:12)`` -> ``f (nats/aio/client.py:12)``."""
    name, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    if where.startswith(ROOT):
        return f"{name} ({where[len(ROOT) :]}"
    for marker in ("site-packages/", "/lib/python3."):
        i = where.find(marker)
        if i >= 0:
            rest = where[i + len(marker) :]
            if marker.startswith("/lib"):
                rest = rest.split("/", 1)[1] if "/" in rest else rest
            return f"{name} ({rest}"
    return frame


def package_of(frame: str) -> str:
    """``Func (path/to/file.py:12)`` -> the top-level package of the file (``asyncio``)."""
    path = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    if path.startswith("<"):
        return path
    first = path.split("/", 1)[0]
    return first if "/" in path else path.removesuffix(".py")


def summarize(raw_path: str, top: int = 25) -> str:
    """Text summary of a py-spy raw (collapsed stacks) file.

    Self samples per frame and per package; inclusive samples per frame, leaving out the frames
    on (nearly) every stack (the entry point, ``asyncio.run``, the event loop).
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkgs: Counter[str] = Counter()
    total = 0
    try:
        with open(raw_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        return f"(no profile: {exc})\n"
    for line in lines:
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [shorten(fr) for fr in stack.split(";") if fr]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        pkgs[package_of(frames[-1])] += count
        for fr in set(frames):
            incl[fr] += count
    if total == 0:
        return "(no samples)\n"
    out = [f"{total} samples (non-idle, 100/s)", "", "self samples by package:"]
    out += [f"  {c / total:6.1%}  {p}" for p, c in pkgs.most_common(12)]
    out += ["", f"top {top} frames by self samples:"]
    out += [f"  {c / total:6.1%}  {fr}" for fr, c in own.most_common(top)]
    out += ["", f"top {top} frames by inclusive samples (frames on >= 75% of stacks left out):"]
    inner = [(fr, c) for fr, c in incl.most_common() if c < 0.75 * total]
    out += [f"  {c / total:6.1%}  {fr}" for fr, c in inner[:top]]
    return "\n".join(out) + "\n"


class Profiler:
    def __init__(self, started: Started, out_dir: str, tag: str) -> None:
        self.started = started
        self.out_dir = out_dir
        self.tag = tag
        self.running: list[tuple[str, subprocess.Popen[Any], str]] = []

    def start(self, workload: str, procs: dict[str, subprocess.Popen[Any] | None]) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            log("--profile: py-spy not found (pip install py-spy); not profiling")
            return
        os.makedirs(self.out_dir, exist_ok=True)
        for name, proc in procs.items():
            if proc is None or proc.poll() is not None:
                continue
            raw = os.path.join(self.out_dir, f"{self.tag}-{workload}-{name}.raw.txt")
            err = open(raw + ".log", "w")  # noqa: SIM115 - handed to the child
            args = [exe, "record", "--format", "raw", "-F", "--full-filenames", "--nonblocking"]
            args += ["-r", "100", "-p", str(proc.pid), "-o", raw]
            p = self.started.popen(
                f"py-spy[{name}]",
                args,
                first_signal=signal.SIGINT,
                stdout=err,
                stderr=subprocess.STDOUT,
            )
            err.close()
            self.running.append((name, p, raw))

    def stop(self) -> None:
        for name, p, raw in self.running:
            self.started.stop(p, grace=30)
            summary = summarize(raw)
            path = raw.replace(".raw.txt", ".summary.txt")
            with open(path, "w") as f:
                f.write(summary)
            log(f"py-spy {name}: {path}")
        self.running.clear()
