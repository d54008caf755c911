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
over (the others a few milliseconds late). Each close's future resolves only once the message
listing it is stored, with that message's PubAck or failure, exactly as the run's own message
did: the close's effects, and the input that caused them, are acknowledged only then, and a
close whose message failed is derived again (effects.py). Every close gets a future of its
own: a waiter cancelled (``publisher.settled`` cancels what it waits on) touches no other.

A df-server killed with closes collected and not sent loses nothing: their inputs were not
acknowledged, and their closes are derived again by whichever df-server gets them next.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine

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

__all__ = ["IN_FLIGHT", "ExpiryLists"]

IN_FLIGHT = 1
"""Expiry messages of one df-server on their way at once (a full list goes out regardless)."""

_UNSENT = (
    "the expiry list naming this close was not stored (its send was cancelled): the close is "
    "derived again when its input comes back"
)
_EMPTY = len(encode_expiry_list([]))
"""Bytes of a list naming no run: what every list has besides its runs."""
_Waiting = tuple[Removal, float, "asyncio.Future[PubAck]"]


class ExpiryLists:
    """Collects closes' expiries into shared messages, one (``IN_FLIGHT``) on its way at once."""

    def __init__(
        self,
        pub: Publisher,
        layout: Layout,
        track: Callable[[Coroutine[object, object, None]], None],
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._pub = pub
        self._layout = layout
        self._track = track
        self._limit = max(1, in_flight)
        self._waiting: list[_Waiting] = []
        self._bytes = _EMPTY
        self._in_flight = 0
        self._prefix = secrets.token_hex(8)
        """Tells this df-server's lists from every other's (a list id is its schedule subject:
        one reused would replace a list not yet fired)."""
        self._count = 0
        self.sent = 0
        """Expiry messages sent (for tests and measurements)."""

    async def arm(self, removal: Removal, due: float) -> asyncio.Future[PubAck]:
        """Arm ``removal`` at ``due``; the future resolves once a stored message lists it."""
        out: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        size = expiry_list_size(removal)
        if self._waiting and self._bytes + size > EXPIRY_LIST_BYTES:
            await self._flush()  # full by bytes: the one collected goes first
        self._waiting.append((removal, due, out))
        self._bytes += size
        if self._in_flight < self._limit or len(self._waiting) >= MAX_EXPIRY_LIST:
            await self._flush()
        return out

    async def _flush(self) -> None:
        """Send what is collected as one message. Never raises: a failure goes to the
        futures of the closes it lists."""
        group, self._waiting, self._bytes = self._waiting, [], _EMPTY
        if not group:
            return
        self._in_flight += 1
        self._count += 1
        list_id = f"{self._prefix}{self._count:x}"
        try:
            sent = await self._send(list_id, [r for r, _, _ in group], max(d for _, d, _ in group))
        except BaseException as exc:
            self._in_flight -= 1
            err = exc if isinstance(exc, Exception) else TransportError(_UNSENT)
            for _, _, out in group:
                if not out.done():
                    out.set_exception(err)
            self._next()
            if err is not exc:
                raise
            return
        self.sent += 1
        sent.add_done_callback(lambda f: self._stored(f, group))

    async def _send(
        self, list_id: str, removals: list[Removal], due: float
    ) -> asyncio.Future[PubAck]:
        headers = {
            SCHEDULE: schedule_at(due),
            SCHEDULE_TARGET: self._layout.removal("expire-list"),
        }
        body = encode_expiry_list(removals)
        return await self._pub.send(self._layout.expiry_list(list_id), body, headers)

    def _stored(self, sent: asyncio.Future[PubAck], group: list[_Waiting]) -> None:
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
        if self._waiting and self._in_flight < self._limit:
            self._track(self._flush())
