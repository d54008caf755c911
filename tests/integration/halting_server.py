"""A df-server (``daemons.df_server`` with the arguments given) that dies right after the
first append recording an activity's completion, before that batch's effects: it SIGKILLs
the process whose PID is in the file ``DF_TEST_KILL_PID`` (the worker waiting for the
answer), writes ``DF_TEST_HELD``, then SIGKILLs itself. Run as
``python -m tests.integration.halting_server ARGS...``."""

from __future__ import annotations

import os
import runpy
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from durablefuture.core import events as ev
from durablefuture.server.grants import Grants


def _halt() -> None:
    held = Path(os.environ["DF_TEST_HELD"])
    victim = Path(os.environ["DF_TEST_KILL_PID"])
    recorded = Grants._grants_recorded

    def _grants_recorded(self: Grants, run_id: str, events: Sequence[ev.Event]) -> None:
        recorded(self, run_id, events)
        if any(isinstance(e, ev.ActivityCompleted) for e in events) and not held.exists():
            if victim.exists():
                os.kill(int(victim.read_text()), signal.SIGKILL)
            held.write_text(run_id)
            os.kill(os.getpid(), signal.SIGKILL)

    Grants._grants_recorded = _grants_recorded  # type: ignore[method-assign]


if __name__ == "__main__":
    _halt()
    sys.argv = ["df-server", *sys.argv[1:]]
    runpy.run_module("daemons.df_server", run_name="__main__")
