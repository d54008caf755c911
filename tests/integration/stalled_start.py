"""A df-server whose event loop runs other work for a while between a new run's first
workflow task being stored and its WorkflowStarted append (``DF_TEST_STALL`` seconds, once):
what any await there allows on a loaded machine. Run as
``python -m tests.integration.stalled_start ARGS...`` (the arguments of ``df-server``)."""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
from typing import Any

from durablefuture.server.starts import Starts


def _stall() -> None:
    real = Starts._append_start
    seconds = float(os.environ.get("DF_TEST_STALL", "3"))
    done: list[bool] = []

    async def append_start(self: Starts, *args: Any, **kwargs: Any) -> int:
        if not done:
            done.append(True)
            await asyncio.sleep(seconds)
        return await real(self, *args, **kwargs)

    Starts._append_start = append_start  # type: ignore[method-assign]


if __name__ == "__main__":
    _stall()
    sys.argv = ["df-server", *sys.argv[1:]]
    runpy.run_module("daemons.df_server", run_name="__main__")
