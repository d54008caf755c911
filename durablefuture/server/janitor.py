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

Overdue removals. A closed run is removed when its expiry fires (``server/removals.py``). The
expiry is one of its close's effects, stored after the closing append: should df-server and
the process whose report closed the run both be killed in between, with nothing stored to
deliver again, the run would stay stored for good. So its closed status entry records when it
is to be removed (``RunSummary.expires_at``: its close + the retention then), and every
quarter of ``ServerOptions.overdue_removal`` (at most every round) the janitor looks through
the visibility index (which follows the status entries) for closed runs still listed
``overdue_removal`` after the later of that time and their close + today's retention, and asks
for their removal as their expiry would (``df.<ns>.rm.expire``, under a message id per run,
so that several df-servers asking at once store one request): at most ``OVERDUE_PER_ROUND``
per round, each run once per ``OVERDUE_AGAIN`` from one df-server (a removal refused, an open
history, is not asked again every round, and the others are reached); nor a run whose own
expiry is stored (``df.<ns>.rx.<run>``: armed again by a removal that found the retention made
longer since its close, later than its entry says). A removal re-checks the run's history: it
finds a run removed already, refuses an open one, and arms the expiry again for a retention
made longer since. Runs closed before their entry recorded ``expires_at``
are never asked for (as before, they stay until their expiry fires or ``df workflow delete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from durablefuture import metrics
from durablefuture.codec.records import Removal, encode_removal
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import DurableFutureError, InvalidArgumentError
from durablefuture.core.types import check_run_id, check_workflow_id
from durablefuture.server.base import ServerBase
from durablefuture.server.effects import await_ack
from durablefuture.transport.compaction import Compactor
from durablefuture.transport.deadletter import refuse_strays
from durablefuture.transport.namespace_settings import read_settings
from durablefuture.transport.payload_gc import ABANDONED_AFTER, finish_deletions, sweep
from durablefuture.transport.publisher import MSG_ID
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.stored import leader_get

__all__ = ["Janitor"]

log = logging.getLogger("durablefuture.server")

STRAYS_PER_ROUND = 256
"""Messages on unknown input subjects dead-lettered in one round at most."""

OVERDUE_PER_ROUND = 256
"""Removals of overdue closed runs asked for in one round at most."""

OVERDUE_AGAIN = 86400.0
"""Seconds before one df-server asks again for the removal of a run it asked for already."""

OVERDUE_REMEMBERED = 100_000
"""Runs asked for that one df-server remembers at most (the oldest forgotten first)."""


class Janitor(ServerBase):
    """The background clean-up of one df-server (a part of ``Server``)."""

    _janitor_task: asyncio.Task[None] | None = None
    _compactor: Compactor | None = None
    _swept_at: float = 0.0
    _finished_at: float = 0.0
    _overdue_at: float = 0.0
    _overdue_asked: dict[str, float] | None = None  # run id -> when asked (oldest first)

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
        overdue = self.options.overdue_removal
        if overdue > 0 and now - self._overdue_at >= overdue / 4:
            self._overdue_at = now
            await self.ask_overdue_removals(now)
        return purged

    async def ask_overdue_removals(self, now: float) -> int:
        """Ask for the removal of the closed runs the visibility index lists whose removal
        is ``overdue_removal`` past due at wall time ``now``; returns how many were asked."""
        if self.visibility is None:
            return 0
        asked = self._overdue_asked
        if asked is None:
            asked = self._overdue_asked = {}
        while asked:  # the oldest first
            run_id, when = next(iter(asked.items()))
            if now - when < OVERDUE_AGAIN and len(asked) <= OVERDUE_REMEMBERED:
                break
            del asked[run_id]
        retention, late = self.settings.retention, self.options.overdue_removal
        overdue: list[tuple[RunSummary, Removal, float]] = []  # (entry, removal, due time)
        for run in self.visibility.index.runs.values():  # (no await: nothing changes meanwhile)
            s = run.summary
            if s.expires_at is None or s.close_time is None or s.status not in RunStatus.CLOSED:
                continue
            due = max(s.expires_at, s.close_time + retention)
            if due + late < now and s.run_id not in asked:
                try:  # (from the status bucket: what names a subject or header is checked)
                    removal = Removal(check_workflow_id(s.workflow_id), check_run_id(s.run_id))
                except InvalidArgumentError:
                    continue
                overdue.append((s, removal, due))
                if len(overdue) >= OVERDUE_PER_ROUND:
                    break
        subject = self.layout.removal("expire")
        asking = 0
        for s, removal, due in overdue:
            try:
                if await self._expiry_armed(s.run_id):
                    asked[s.run_id] = now  # (armed again for a retention made longer)
                    continue
                body = encode_removal(removal)
                msg_id = {MSG_ID: f"overdue.{s.run_id}"}
                ack = await await_ack(self.pub.send(subject, body, msg_id))
            except DurableFutureError as exc:  # this run next round; the others go on
                log.warning("asking for the removal of run %s failed: %s", s.run_id, exc)
                continue
            asked[s.run_id] = now
            asking += 1
            if ack.duplicate:
                continue  # another df-server asked for it just now
            self.stats["overdue_removals"] += 1
            log.warning(
                "closed run %s of %s is still stored %.0f s after it was to be removed (its "
                "expiry was never stored): its removal is asked for",
                s.run_id,
                s.workflow_id,
                now - due,
                extra={"workflow_id": s.workflow_id, "run_id": s.run_id},
            )
        return asking

    async def _expiry_armed(self, run_id: str) -> bool:
        """Whether the run's own expiry is stored, not fired yet: armed again by a removal that
        found the retention made longer since the close (the status entry keeps the time of
        the close's), it is what removes the run."""
        lay = self.layout
        request: dict[str, object] = {"last_by_subj": lay.expiry(run_id)}
        stored = await leader_get(self.nc, lay.stream, request, "an expiry", self.pub.timeout)
        return stored is not None

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
