"""The processes this benchmark starts, and stopping them by PID (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.stats import log


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Started:
    """Every process started by this run. ``stop_all()`` stops each one by its PID.

    A process is asked to stop with ``first_signal`` (SIGTERM for the daemons, SIGINT for the
    peer scripts so their own clean-up runs), then SIGKILLed after ``grace`` seconds. Processes
    the child itself started (a peer script's Temporal server and worker) are looked up before
    the child is signalled and SIGKILLed by PID if they outlive it.
    """

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[Any], int]] = []

    def popen(
        self,
        name: str,
        args: Sequence[str],
        *,
        first_signal: int = signal.SIGTERM,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(args), **kwargs)
        self.procs.append((name, proc, first_signal))
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 15.0) -> int | None:
        entry = next((e for e in self.procs if e[1] is proc), None)
        first = entry[2] if entry else signal.SIGTERM
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, first)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                name = entry[0] if entry else str(proc.pid)
                log(f"{name} (pid {proc.pid}) did not stop within {grace:g}s; SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        deadline = time.monotonic() + 10
        for child in descendants:
            # is_running() also checks the create time, so a reused PID is never signalled
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(child):
                log(f"pid {child.pid} (started by pid {proc.pid}) still running; SIGKILL")
                with contextlib.suppress(psutil.Error):
                    child.kill()
        if entry is not None:
            self.procs.remove(entry)
        return proc.returncode

    def stop_all(self) -> None:
        for _name, proc, _sig in reversed(list(self.procs)):
            self.stop(proc)
