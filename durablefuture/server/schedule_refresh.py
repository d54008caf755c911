"""The closed-run fast path of the schedule component: when a run of an action this process
watches closes (its closed notice), step the schedule now instead of at its next poll.

Only the watched runs' notices are subscribed to (:class:`ClosedNotices`, one subscription per
watched workflow id, or one to all while many are watched), not every run's at all times: a
df-server with no scheduled run open receives no closed notice (before, each closed run sent
df-server two messages it dropped).

It is a fast path only (the durable timer and polls step every schedule anyway), so it gives
way to the timers: while timer ticks are being handled (every schedule due in one second fires
at once), a refresh waits for them, at most ``wait`` seconds, so the due actions start first.
The inputs of the runs this process started (their workflow tasks' reports) give way to the
ticks in the same way (``give_way``, at most ``GIVE_WAY``), so that a burst of due actions is
started before the first ones' runs move on. The step that records a started action's run id
is the durable poll's (``now + poll`` while an action is "starting"), not an in-memory one: a
df-server that dies after starting an action leaves nothing unseen behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any

from durablefuture.core.schedules import STARTING, ScheduleState
from durablefuture.transport.subjects import decode_token

__all__ = ["MAX_FOLLOWED", "ClosedNotices", "Refresher"]

log = logging.getLogger("durablefuture.schedules")

REFRESH_WAIT = 2.0
GIVE_WAY = 1.0
"""At most this long, an input of a schedule's run waits while timer ticks are handled."""


class Refresher:
    def __init__(
        self,
        step: Callable[[str], Awaitable[object]],
        spawn: Callable[[Awaitable[None]], None],
        wait: float = REFRESH_WAIT,
        follow: Callable[[Collection[str]], None] | None = None,
    ) -> None:
        self._step = step
        self._follow = follow  # told the watched workflow ids whenever they change
        self._spawn = spawn
        self.wait = wait
        self._watch: dict[str, str] = {}  # action workflow id -> schedule id
        self._again: dict[str, bool] = {}  # schedule id (being refreshed) -> step again
        self._ticks = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.stopping = False

    def watch(self, state: ScheduleState, starting: bool = True) -> None:
        """Follow the schedule's running actions (and forget its closed ones); its actions not
        seen yet only if ``starting`` (else the durable poll step looks at them anyway)."""
        before = len(self._watch)
        changed = False
        for r in state.running:
            if starting or r.status != STARTING:
                self._watch[r.workflow_id] = state.schedule_id
        for r in state.recent:
            changed = self._watch.pop(r.workflow_id, None) is not None or changed
        if self._follow is not None and (changed or len(self._watch) != before):
            self._follow(self._watch.keys())

    @contextlib.contextmanager
    def tick(self) -> Iterator[None]:
        """A timer tick is being handled (refreshes wait)."""
        self._ticks += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._ticks -= 1
            if not self._ticks:
                self._quiet.set()

    async def give_way(self, limit: float = GIVE_WAY) -> None:
        """Wait until no timer tick is being handled, ``limit`` seconds at most."""
        if not self._quiet.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), limit)

    def stop(self) -> None:
        self.stopping = True

    def on_closed(self, subject: str) -> None:
        parts = subject.split(".")
        if len(parts) < 2:
            return
        try:
            wid = decode_token(parts[-2])
        except (ValueError, UnicodeDecodeError):
            return
        sid = self._watch.get(wid)
        if sid is not None:
            self.refresh(sid)

    def refresh(self, sid: str) -> None:
        """Step the schedule soon (again after the step in progress, if one is)."""
        if self.stopping:
            return
        if sid in self._again:
            self._again[sid] = True
            return
        self._again[sid] = False
        self._spawn(self._refresh(sid))

    async def _refresh(self, schedule_id: str) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.wait)
            while not self.stopping:
                self._again[schedule_id] = False
                await self._step(schedule_id)
                if not self._again.get(schedule_id):
                    break
        except Exception as exc:  # the durable poll steps it anyway
            log.debug("refreshing schedule %s failed: %s", schedule_id, exc)
        finally:
            self._again.pop(schedule_id, None)


MAX_FOLLOWED = 32
"""With more runs watched than this, one subscription to every run's closed notices takes the
place of the runs' own (until none is watched): a burst of scheduled actions then costs no
subscribe and unsubscribe per action."""


class ClosedNotices:
    """Subscriptions to the closed notices of the workflow ids :meth:`follow` was last given:
    one per id, or one to every run's notices (``everything``) while more than ``most`` are
    watched; none while none is. Made and dropped by one task at a time, the new ones before
    the old ones go (so a subscribe and an unsubscribe never overtake each other and a switch
    leaves no gap). A notice that arrives before its subscription is made is missed, like any
    notice: the schedules' durable polls step them anyway."""

    def __init__(
        self,
        nc: Any,
        subject: Callable[[str], str],
        everything: str,
        on_notice: Callable[[Any], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], None],
        most: int = MAX_FOLLOWED,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._everything = everything
        self._on_notice = on_notice
        self._spawn = spawn
        self._most = most
        self._want: frozenset[str] = frozenset()  # subjects
        self._subs: dict[str, Any] = {}  # subject -> its subscription
        self._syncing = False
        self._stopped = False

    def follow(self, workflow_ids: Collection[str]) -> None:
        every = self._everything
        if not workflow_ids:
            self._want = frozenset()
        elif every in self._want or every in self._subs or len(workflow_ids) > self._most:
            self._want = frozenset((every,))
        else:
            self._want = frozenset(self._subject(w) for w in workflow_ids)
        if not self._syncing and not self._stopped:
            self._syncing = True
            self._spawn(self._sync())

    def subjects(self) -> frozenset[str]:
        """What is subscribed to now."""
        return frozenset(self._subs)

    async def _sync(self) -> None:
        try:
            while not self._stopped:
                want, subs = self._want, self._subs
                add = [s for s in want if s not in subs]
                drop = [s for s in subs if s not in want]
                if not add and not drop:
                    return
                for subject in add:
                    subs[subject] = await self._nc.subscribe(subject, cb=self._on_notice)
                for subject in drop:
                    await _unsubscribe(subs.pop(subject))
        except Exception as exc:  # a fast path only: the durable polls step the schedules
            log.debug("following closed notices failed: %s", exc)
        finally:
            self._syncing = False

    async def stop(self) -> None:
        self._stopped = True
        while self._subs:
            await _unsubscribe(self._subs.popitem()[1])


async def _unsubscribe(sub: Any) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
