"""The janitor: what a df-server deletes in the background so the namespace stays bounded.

Every ``ServerOptions.compact_interval`` seconds it purges the work messages (inputs, tasks,
schedule inputs) that their consumer has acknowledged (``transport.compaction``), and reads the
namespace's settings again (another df-server may have stored new ones). Every half
``ServerOptions.payload_grace`` it sweeps the payload objects nothing holds
(``transport.payload_gc``), and in between, every half ``ABANDONED_AFTER``, does again the
payload deletions a crash left half-done. Each round also dead-letters what is stored on an
input subject of a kind df-server does not read (``df.<ns>.in.<kind>``): its two input
consumers (``server``, ``starts``) filter on the kinds it knows, so nothing else would ever
take it. Each step is idempotent and any number of df-servers may run it at once; an error is
logged and the step is tried again on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from durablefuture import metrics
from durablefuture.server.base import ServerBase
from durablefuture.transport.compaction import Compactor
from durablefuture.transport.deadletter import refuse_strays
from durablefuture.transport.namespace_settings import read_settings
from durablefuture.transport.payload_gc import ABANDONED_AFTER, finish_deletions, sweep
from durablefuture.transport.stopping import cancel_and_wait

__all__ = ["Janitor"]

log = logging.getLogger("durablefuture.server")

STRAYS_PER_ROUND = 256
"""Messages on unknown input subjects dead-lettered in one round at most."""


class Janitor(ServerBase):
    """The background clean-up of one df-server (a part of ``Server``)."""

    _janitor_task: asyncio.Task[None] | None = None
    _compactor: Compactor | None = None
    _swept_at: float = 0.0
    _finished_at: float = 0.0

    def _start_janitor(self) -> None:
        if self.options.compact_interval <= 0 or self._janitor_task is not None:
            return
        self._compactor = Compactor(self.nc, self.layout)
        self._janitor_task = asyncio.create_task(self._janitor_loop())

    async def _stop_janitor(self) -> None:
        task, self._janitor_task = self._janitor_task, None
        if task is not None:
            await cancel_and_wait(task, "the janitor")

    async def _janitor_loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await self.janitor_round()
                if failing:
                    log.info("background clean-up works again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # tried again next round
                if not failing:
                    log.warning("background clean-up failed (tried again): %s", exc)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.options.compact_interval)

    async def janitor_round(self) -> int:
        """One round of clean-up; returns how many messages it deleted."""
        compactor = self._compactor or Compactor(self.nc, self.layout)
        self._compactor = compactor
        purged = await compactor.run_once()
        self.stats["compacted"] = compactor.purged
        # another df-server may have stored new settings
        self.settings = await read_settings(self.js, self.layout)
        now = time.time()
        grace = self.options.payload_grace
        if now - self._swept_at >= grace / 2:
            self._swept_at = now
            purged += await sweep(self.pub, self.layout, grace=grace, now=now)
            self.stats["payload_sweeps"] += 1
        elif now - self._finished_at >= ABANDONED_AFTER / 2:
            self._finished_at = now
            purged += await finish_deletions(self.pub, self.layout, grace=grace, now=now)
        purged += await self._refuse_stray_inputs()
        return purged

    async def _refuse_stray_inputs(self) -> int:
        """Dead-letter (then delete) what is stored on ``df.<ns>.in.<kind>`` for a kind that
        neither input consumer reads; returns how many went."""
        lay = self.layout
        done = await refuse_strays(
            self.pub,
            lay,
            f"{lay.prefix}.in.*",
            {*lay.run_inputs, lay.input("start")},
            lambda subject: (
                f"input subject kind {subject.rpartition('.')[2][:40]!r} is not one df-server "
                f"reads (only {', '.join([*lay.RUN_INPUT_KINDS, 'start'])}): refused as forged "
                "or misrouted"
            ),
            source="server-input",
            limit=STRAYS_PER_ROUND,
        )
        self.stats["dead_letters"] += done
        for _ in range(done):
            metrics.DEAD_LETTERS.inc("server")
        return done
