"""Closed runs' expiries, many to one stored message (group commit).

A closed run's expiry is a JetStream message schedule that fires once the namespace's
retention after its close is over (``server/removals.py`` removes the run then). One schedule
per run was one stored message per workflow, written under the same fsync as its history;
here the runs that close together share one: while one expiry message of this df-server is
on its way (sent, PubAck not back), the closes that come meanwhile are collected, and the
next message, listing them all, goes out when that PubAck comes back. The first close with
nothing on its way goes out at once, alone: no close waits longer than one message's store,
and at low load nothing waits at all. A list is bounded (``MAX_EXPIRY_LIST`` runs,
``EXPIRY_LIST_BYTES``): a full one goes out at once, whatever is on its way.

A list fires at the latest due time of its runs, so no run is removed before its retention is
over (the others a few milliseconds late), and never more than ``EXPIRY_SPREAD`` after any of
them: due times further apart (runs closing on each side of a retention change) go in separate
lists, so a run's list has fired long before the janitor would take its expiry for lost
(``server/janitor.py``, overdue removals). Each close's future resolves only once the message
listing it is stored, with that message's PubAck or failure, exactly as the run's own message
did: the close's effects, and the input that caused them, are acknowledged only then, and a
close whose message failed is derived again (effects.py). Every close gets a future of its
own: a waiter cancelled (``publisher.settled`` cancels what it waits on) touches no other.

A df-server killed with closes collected and not sent loses nothing: their inputs were not
acknowledged, and their closes are derived again by whichever df-server gets them next.

The group commit itself (``ScheduleLists``) serves the check lists of eager activity attempts
as well (``server/checks.py``). Their due times differ (an attempt is checked at its
start_to_close when that comes before ``eager_check``): items whose due times lie further
apart than the lists' ``spread`` are collected for separate messages (at most ``MAX_GROUPS``
at once), so none fires later than its item's due time plus ``spread``.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Coroutine
from typing import Generic, TypeVar

from durablefuture.codec.records import (
    EXPIRY_LIST_BYTES,
    MAX_EXPIRY_LIST,
    Removal,
    encode_expiry_list,
    expiry_list_size,
)
from durablefuture.core.errors import TransportError
from durablefuture.transport.publisher import (
    SCHEDULE,
    SCHEDULE_TARGET,
    PubAck,
    Publisher,
    schedule_at,
)
from durablefuture.transport.subjects import Layout

__all__ = ["IN_FLIGHT", "ExpiryLists", "ScheduleLists"]

EXPIRY_SPREAD = 60.0
"""Seconds a run's expiry list may fire after the run's own due time at most."""

IN_FLIGHT = 1
"""List messages of one df-server on their way at once (a full list goes out regardless)."""

_UNSENT = (
    "the list naming this item was not stored (its send was cancelled): it is derived again "
    "when its input comes back"
)

T = TypeVar("T")
_Waiting = tuple[T, float, "asyncio.Future[PubAck]"]

MAX_GROUPS = 8
"""Lists of one ``ScheduleLists`` collected at once, each for its own due times (one more, and
the oldest goes out at once, whatever is on its way)."""


class _Group(Generic[T]):
    """Items collected for one list: their due times lie within the lists' ``spread``."""

    __slots__ = ("bytes", "high", "items", "low")

    def __init__(self, empty: int, due: float) -> None:
        self.items: list[_Waiting[T]] = []
        self.bytes = empty
        self.low = self.high = due

    def fits(self, due: float, spread: float) -> bool:
        return max(self.high, due) - min(self.low, due) <= spread

    def add(self, waiting: _Waiting[T], size: int) -> None:
        self.items.append(waiting)
        self.bytes += size
        self.low, self.high = min(self.low, waiting[1]), max(self.high, waiting[1])


class ScheduleLists(Generic[T]):
    """Collects items into shared ``@at`` schedule messages, one (``IN_FLIGHT``) on its way
    at once; a message fires at the latest due time of what it lists. Items whose due times
    differ by more than ``spread`` seconds never share a message (each message collected
    meanwhile goes out in turn, oldest first)."""

    def __init__(
        self,
        pub: Publisher,
        track: Callable[[Coroutine[object, object, None]], None],
        *,
        subject: Callable[[str], str],
        target: str,
        encode: Callable[[list[T]], bytes],
        size: Callable[[T], int],
        max_items: int,
        max_bytes: int,
        in_flight: int = IN_FLIGHT,
        spread: float = math.inf,
    ) -> None:
        self._pub = pub
        self._track = track
        self._subject = subject
        self._target = target
        self._encode = encode
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._limit = max(1, in_flight)
        self._spread = spread
        self._empty = len(encode([]))
        """Bytes of a list naming nothing: what every list has besides its items."""
        self._groups: list[_Group[T]] = []
        """Lists collected, not sent, oldest first (at most ``MAX_GROUPS``)."""
        self._in_flight = 0
        self._prefix = secrets.token_hex(8)
        """Tells this df-server's lists from every other's (a list id is its schedule subject:
        one reused would replace a list not yet fired)."""
        self._count = 0
        self.sent = 0
        """List messages sent (for tests and measurements)."""

    async def arm(self, item: T, due: float) -> asyncio.Future[PubAck]:
        """List ``item`` due at ``due``; the future resolves once a stored message lists it."""
        out: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        size = self._size(item)
        group = await self._group_for(due, size)
        group.add((item, due, out), size)
        if self._in_flight < self._limit or len(group.items) >= self._max_items:
            await self._flush(group)
        return out

    async def _group_for(self, due: float, size: int) -> _Group[T]:
        """The list collected that ``due`` fits (its due times within ``spread``), with room
        for ``size`` more bytes, or a new one."""
        for group in self._groups:
            if group.fits(due, self._spread):
                if group.bytes + size <= self._max_bytes:
                    return group
                await self._flush(group)  # full by bytes: the one collected goes first
                break
        if len(self._groups) >= MAX_GROUPS:
            await self._flush(self._groups[0])
        fresh: _Group[T] = _Group(self._empty, due)
        self._groups.append(fresh)
        return fresh

    async def _flush(self, group: _Group[T] | None = None) -> None:
        """Send ``group`` (by default the oldest collected) as one message. Never raises: a
        failure goes to the futures of the items it lists."""
        if group is None:
            group = self._groups[0] if self._groups else None
        if group is None or group not in self._groups:
            return  # (sent meanwhile)
        self._groups.remove(group)
        items = group.items
        if not items:
            return
        self._in_flight += 1
        self._count += 1
        list_id = f"{self._prefix}{self._count:x}"
        try:
            sent = await self._send(list_id, [r for r, _, _ in items], group.high)
        except BaseException as exc:
            self._in_flight -= 1
            err = exc if isinstance(exc, Exception) else TransportError(_UNSENT)
            for _, _, out in items:
                if not out.done():
                    out.set_exception(err)
            self._next()
            if err is not exc:
                raise
            return
        self.sent += 1
        sent.add_done_callback(lambda f: self._stored(f, items))

    async def _send(self, list_id: str, items: list[T], due: float) -> asyncio.Future[PubAck]:
        headers = {SCHEDULE: schedule_at(due), SCHEDULE_TARGET: self._target}
        return await self._pub.send(self._subject(list_id), self._encode(items), headers)

    def _stored(self, sent: asyncio.Future[PubAck], group: list[_Waiting[T]]) -> None:
        self._in_flight -= 1
        for _, _, out in group:
            if out.done():
                continue  # its waiter was cancelled
            if sent.cancelled():
                out.set_exception(TransportError(_UNSENT))
            elif (exc := sent.exception()) is not None:
                out.set_exception(exc)
            else:
                out.set_result(sent.result())
        self._next()

    def _next(self) -> None:
        if self._groups and self._in_flight < self._limit:
            self._track(self._flush())


class ExpiryLists(ScheduleLists[Removal]):
    """Collects closes' expiries into shared messages (``df.<ns>.rx.l.<list>``, firing on
    ``df.<ns>.rm.expire-list``)."""

    def __init__(
        self,
        pub: Publisher,
        layout: Layout,
        track: Callable[[Coroutine[object, object, None]], None],
        in_flight: int = IN_FLIGHT,
    ) -> None:
        super().__init__(
            pub,
            track,
            subject=layout.expiry_list,
            target=layout.removal("expire-list"),
            encode=encode_expiry_list,
            size=expiry_list_size,
            max_items=MAX_EXPIRY_LIST,
            max_bytes=EXPIRY_LIST_BYTES,
            in_flight=in_flight,
            spread=EXPIRY_SPREAD,
        )
