"""A df-worker that holds the first eager start offer it gets, run as
``python -m tests.integration.held_offer ARGS...`` (``daemons.df_worker`` with ARGS).

It writes the file ``DF_TEST_HELD`` when an offer arrives and waits there (at most a minute,
without answering) for the test to SIGKILL it.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time
from pathlib import Path

from durablefuture.transport.messages import Msg
from durablefuture.worker.eager_starts import EagerOffers


def _hold() -> None:
    held = Path(os.environ["DF_TEST_HELD"])

    async def _run(self: EagerOffers, msg: Msg, began: float) -> None:
        held.write_text(f"offer {len(msg.data)} bytes at {time.time()}")
        for _ in range(1200):  # bounded: the test kills this process long before
            await asyncio.sleep(0.05)

    EagerOffers._run = _run  # type: ignore[method-assign]


if __name__ == "__main__":
    _hold()
    sys.argv = ["df-worker", *sys.argv[1:]]
    runpy.run_module("daemons.df_worker", run_name="__main__")
