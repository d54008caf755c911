"""Admission of new starts: the runs already going come first.

Every append df-server makes waits its turn in one queue: the namespace's stream stores its
messages one at a time, and with ``sync_interval: always`` each costs a disk flush. A burst of
starts (1,000 clients at once) would put thousands of appends (history, status entry, first
workflow task) ahead of the runs already going: their first reports, and the firings of
their timers, would be recorded only after all of them, seconds late. So a new start from a
client waits here until fewer than ``limit`` starts are being handled: the burst goes
through at the pace of the disk, each run's first workflow task and timer land within a few
appends of its start, and a due timer (never held here, nor are reports) waits behind tens
of appends, not thousands. No start waits more than ``MAX_WAIT`` seconds: under a sustained
overload the gate gives way (timers are then late instead, as without it).

Only client starts wait (``in.start``, and those asked as requests on ``dfev.<ns>.start``, in
the same line but for at most ``REQUEST_WAIT`` seconds: their client waits for the answer,
``server/start_requests.py``): reports, signals, timer firings and df-server's own inputs
(child starts, continue-as-new) move runs that exist. Stored client starts are pulled by a
consumer of their own (``starts``, with as many pull places as the other inputs,
``concurrency``: each pulled start waits here ``MAX_WAIT`` at most; fewer places would leave
the rest of a burst waiting in the stream, unbounded, and start calls could time out under an
overload), the other inputs by the ``server`` consumer: a start waiting here holds one of the
starts' places, never one of the places of the runs already going, so a burst of stored
starts delays no signal, report or timer firing behind it. Waiting starts are let in first
come, first served, one per place freed (no herd of wake-ups), and each keeps its input in
progress, so JetStream does not hand it to another server meanwhile. This changes when a
start is handled, never what is recorded: a crash leaves it unacked, and it is redelivered as
before.

A start that created a run keeps its place after it is answered, until the run's first
workflow task is reported (``going``) or a few times as long as first reports usually take
here have passed (``StartGate.hold_now``, ``FIRST_TASK_HOLD`` at most), whichever comes
first. Freeing the place at the answer let a burst run ahead of the workers: starts
are cheap next to what follows them (a first task taken, run and reported, a timer armed),
so under a loaded disk hundreds of first tasks piled up behind the starts, their reports
came seconds late, and a run's timers (counted from its start) were due before they were
armed. Held so, at most ``2 * limit`` new runs wait for their first report at once: the starts
of a burst go at the pace the runs get going, and a first task waits behind tens of
others, not hundreds. The hold is bounded, so a run whose report this server does not see
(a report answered by another df-server, a worker that went away) slows the next starts by
that much at most.

Only runs of a task queue whose workflow task reports this gate has seen lately (``LIVE_FOR``) are
held: with no worker for a queue (starts deployed before their workers, a queue named
wrong), no report comes to pace the starts by, and holding each of its runs for nothing
capped the starts of every queue on the df-server at ``2 * limit`` per hold (128 a second
with a hold of 1 s), each waiting up to ``MAX_WAIT``. Once a queue's reports come, its runs
are held again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["FIRST_TASK_HOLD", "LIVE_FOR", "MAX_WAIT", "REQUEST_WAIT", "StartGate"]

MAX_WAIT = 5.0
"""Seconds a start waits for a place at most; then it goes ahead anyway."""
REQUEST_WAIT = 4.0
"""The same for a start asked as a request (its client stores it after 5 s without answer)."""
FIRST_TASK_HOLD = 1.0
"""Seconds a start's place stays held at most after its run is created, waiting for the run's
first workflow task to be reported (``StartGate.going``)."""
_HOLD_FACTOR = 3.0
"""A place is held this many times the usual wait for a first report (then given back)."""
_HELD_FACTOR = 2
"""New runs waiting for their first report (with the starts being handled) that may be
there at once, in times ``limit``: a steady flow of starts (W1) has about ``limit`` runs in
their first workflow task at a time, and must not wait for its own runs."""
LIVE_FOR = 10.0
"""Seconds after a workflow task report of a task queue that its new runs are held for theirs."""
_LIVE_QUEUES = 1024
"""Task queues whose last report time is kept (the least recent are forgotten first)."""
_LATE_MIN = 64
_MIN_HOLD = 0.05
_FIRST_GUESS = 0.1
"""Seconds a first report is taken to need before any has been seen."""


class _Place:
    """One start inside the gate: the run it created, if any (its place is then held on),
    and whether that run's first report came before the start was done with."""

    __slots__ = ("going", "run_id")

    def __init__(self) -> None:
        self.run_id = ""
        self.going = False


class _Held:
    __slots__ = ("handle", "since")

    def __init__(self, handle: asyncio.TimerHandle, since: float) -> None:
        self.handle = handle
        self.since = since


_place: contextvars.ContextVar[_Place | None] = contextvars.ContextVar("start_place", default=None)


class StartGate:
    """Lets new starts in at most ``limit`` at a time, behind the runs already going.

    ``limit``: starts handled at once (0: no limit). ``keepalive``: seconds between two
    "still working on it" signals for a start that waits.
    """

    def __init__(
        self,
        limit: int,
        keepalive: float = 1.0,
        max_wait: float = MAX_WAIT,
        hold: float = FIRST_TASK_HOLD,
    ) -> None:
        self.limit = max(0, limit)
        self.keepalive = keepalive
        self.max_wait = max_wait
        self.hold = hold
        """Seconds a place is held at most for a run's first report."""
        self.min_hold = _MIN_HOLD
        self._starts = 0
        self._held: dict[str, _Held] = {}
        """Places kept by runs created and waiting for their first report, by run id."""
        self._inside: dict[str, _Place] = {}
        """The starts being handled that have created a run to hold on for, by run id."""
        self._late: OrderedDict[str, float] = OrderedDict()
        """Runs whose place was given back before their report, by run id: when they were
        created (the most recent ``4 * limit``)."""
        self.live_for = LIVE_FOR
        """Seconds a task queue counts as having workers after one of its reports."""
        self._live: OrderedDict[str, float] = OrderedDict()
        """When a workflow task report of each task queue was last seen (``_LIVE_QUEUES``
        at most: a flood of queue names does not grow it)."""
        self._usual = _FIRST_GUESS
        """How long first reports take here (a moving average of those seen, in seconds)."""
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.waited = 0
        """Starts that had to wait, over the server's life."""
        self.overdue = 0
        """Starts that went ahead after waiting ``max_wait``, over the server's life."""

    @contextlib.asynccontextmanager
    async def start(
        self,
        keep_alive: Callable[[], Awaitable[None]] | None = None,
        max_wait: float | None = None,
    ) -> AsyncIterator[None]:
        """Hold one of the start places while handling a new start (waits for one, at most
        ``max_wait`` seconds if given, else the gate's ``max_wait``)."""
        if not self.limit:
            yield
            return
        await self._admit(keep_alive, self.max_wait if max_wait is None else max_wait)
        place = _Place()
        token = _place.set(place)
        try:
            yield
        finally:
            _place.reset(token)
            run_id = place.run_id
            if run_id:
                self._inside.pop(run_id, None)
            # a run reported already (its first task ran while the start was answered and
            # acknowledged) has nothing left to wait for
            if run_id and not place.going and self.hold > 0 and run_id not in self._held:
                loop = asyncio.get_running_loop()
                handle = loop.call_later(self.hold_now, self._given_up, run_id)
                self._held[run_id] = _Held(handle, loop.time())
            self._starts -= 1
            self._wake()

    @property
    def hold_now(self) -> float:
        """Seconds a place is held for a run created now: a few times as long as first reports
        usually take here, within ``min_hold`` and ``hold``. Not the whole ``hold``
        always: a report may go to another df-server (``--servers`` > 1, a queue group),
        and the place of a run whose report this server never sees would stay idle that long;
        no report at all (a run closed before it) does not lengthen it."""
        return min(self.hold, max(self.min_hold, _HOLD_FACTOR * self._usual))

    def created(self, run_id: str, task_queue: str) -> None:
        """The start being handled (in this task) has created run ``run_id``: its place is
        held on until the run's first workflow task is reported (``going``), at most
        ``hold`` seconds, if reports of ``task_queue`` were seen here within ``live_for``.
        Outside a start, or with no limit, nothing happens."""
        place = _place.get()
        if place is None or place.run_id:
            return
        seen = self._live.get(task_queue)
        if seen is not None and asyncio.get_running_loop().time() - seen < self.live_for:
            place.run_id = run_id
            self._inside[run_id] = place

    def going(self, run_id: str, task_queue: str) -> None:
        """Run ``run_id`` of ``task_queue`` has had a workflow task reported: the place its
        start kept is free, and the queue's next runs are held for theirs (it has workers).
        Any other run: nothing more happens."""
        loop = asyncio.get_running_loop()
        self._live[task_queue] = loop.time()
        self._live.move_to_end(task_queue)
        while len(self._live) > _LIVE_QUEUES:
            self._live.popitem(last=False)
        inside = self._inside.get(run_id)
        if inside is not None:
            inside.going = True  # its start is not done yet: its place is not held on
        held = self._held.pop(run_id, None)
        if held is None:
            since = self._late.pop(run_id, None)
            if since is not None:  # its place was given back: the report still says how long
                self._learn(min(self.hold, loop.time() - since))
            return
        held.handle.cancel()
        self._learn(loop.time() - held.since)
        self._wake()

    def _learn(self, took: float) -> None:
        """A first report took ``took`` seconds: the moving average of them moves 1/8 there."""
        self._usual += (took - self._usual) / 8

    def _given_up(self, run_id: str) -> None:
        held = self._held.pop(run_id, None)
        if held is not None:
            # kept a while: a report that comes later still counts towards how long they take
            # (else a step up of more than _HOLD_FACTOR times is never learned)
            self._late[run_id] = held.since
            while len(self._late) > max(_LATE_MIN, 4 * self.limit):
                self._late.popitem(last=False)
            self._wake()

    def _room(self) -> bool:
        """Whether a start may go in: fewer than ``limit`` being handled, and fewer than
        ``_HELD_FACTOR`` times as many new runs waiting for their first report besides."""
        return (
            self._starts < self.limit and self._starts + len(self._held) < self.limit * _HELD_FACTOR
        )

    @property
    def held(self) -> int:
        """New runs whose first report this gate waits for now."""
        return len(self._held)

    async def _admit(
        self, keep_alive: Callable[[], Awaitable[None]] | None, max_wait: float
    ) -> None:
        if not self._waiting and self._room():
            self._starts += 1
            return
        self.waited += 1
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        loop = asyncio.get_running_loop()
        until = loop.time() + max_wait
        try:
            while True:
                left = until - loop.time()
                if left <= 0:
                    if place.done():
                        return  # handed over just now
                    self.overdue += 1
                    place.cancel()
                    self._waiting.remove(place)
                    self._starts += 1  # over the limit: it has waited long enough
                    return
                done, _ = await asyncio.wait({place}, timeout=min(self.keepalive, left))
                if done:
                    return  # the place was handed over (counted by ``_wake``)
                if loop.time() >= until:
                    continue
                if keep_alive is not None:
                    with contextlib.suppress(Exception):  # redelivered if lost: harmless
                        await keep_alive()
        except BaseException:
            if place.done() and not place.cancelled():
                self._starts -= 1  # handed over, but this start is gone: pass it on
                self._wake()
            else:
                place.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(place)
            raise

    def _wake(self) -> None:
        while self._waiting and self._room():
            place = self._waiting.popleft()
            if place.done():
                continue  # its start was cancelled
            self._starts += 1
            place.set_result(None)
