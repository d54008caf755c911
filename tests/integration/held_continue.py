"""A df-server (``daemons.df_server`` with the arguments given) that stops before the
WorkflowStarted append of a run continued as new (its first workflow task is written, the
append is not): it writes the file ``DF_TEST_HELD`` and waits there (at most a minute) for
the test to SIGKILL it. Run as ``python -m tests.integration.held_continue ARGS...``."""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from durablefuture.core import events as ev
from durablefuture.transport.history import HistoryStore


def _hold() -> None:
    real = HistoryStore.append_sized
    held = Path(os.environ["DF_TEST_HELD"])

    async def append_sized(self: HistoryStore, *args: Any, **kwargs: Any) -> tuple[int, int]:
        events = args[3]
        first = events[0] if events else None
        if isinstance(first, ev.WorkflowStarted) and first.continued_from is not None:
            held.write_text("before")
            for _ in range(1200):  # bounded: the test kills this process long before
                await asyncio.sleep(0.05)
        return await real(self, *args, **kwargs)

    HistoryStore.append_sized = append_sized  # type: ignore[method-assign]


if __name__ == "__main__":
    _hold()
    sys.argv = ["df-server", *sys.argv[1:]]
    runpy.run_module("daemons.df_server", run_name="__main__")
