"""The df-server's visibility index: list and count runs without reading every status entry.

Why a server-side index (and not KV keys per filter): queries combine any fields and search
attributes with AND / OR / ranges / ORDER BY, which no fixed key layout answers without a scan,
while every df-server already sees each status entry written. Each df-server follows the status
bucket with one KV watch (every key's latest value, then each put and delete in order) into an
in-memory :class:`~durablefuture.core.visibility.RunIndex`, and answers core NATS requests on
``dfev.<ns>.visibility`` in the queue group ``df-server`` (one server answers each, and only
on an inbox: an asker cannot make a df-server write its answer into the stream, on a run's
history say). A query touches only the runs its equality filters select
(see ``core/visibility.py``); the index costs a few hundred bytes per run
(``bench/visibility.py`` measures it) and a full read of the bucket when a server starts
(queries wait for that, up to ``READY_TIMEOUT``). A status entry deleted (retention,
``df workflow delete``) leaves the index through the same watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from durablefuture.codec.visibility import (
    VisibilityReply,
    decode_page_token,
    decode_visibility_request,
    encode_page_token,
    encode_visibility_error,
    encode_visibility_reply,
    listed,
)
from durablefuture.codec.wire import Codec
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import DurableFutureError, InvalidQueryError, MessageRejectedError
from durablefuture.core.query import cursor_of, parse_query
from durablefuture.core.visibility import RunIndex
from durablefuture.transport.buckets import watch_bucket
from durablefuture.transport.connection import NATS
from durablefuture.transport.guard import check_reply_subject, max_payload
from durablefuture.transport.layout import KeyValue
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.transport.reconnects import on_reconnect
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.subjects import Layout

__all__ = ["READY_TIMEOUT", "VisibilityIndex"]

log = logging.getLogger("durablefuture.server")

READY_TIMEOUT = 10.0
"""How long a query waits for a starting server to finish reading the status bucket."""
WROTE_KEEP = 4096
"""Status entries this server wrote, kept until the watch brings them back (the oldest are
forgotten beyond this many: a write that failed, or a watch being rebuilt, never brings one)."""


class VisibilityIndex:
    """Follows the status bucket into a :class:`RunIndex` and answers list/count requests."""

    def __init__(self, nc: NATS, layout: Layout, codec: Codec) -> None:
        self.nc = nc
        self.layout = layout
        self.codec = codec
        self.index = RunIndex()
        self.ready = asyncio.Event()
        # queries run in a thread (a query no value index serves evaluates every run: the
        # event loop must go on handling inputs meanwhile); changes wait while one runs
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._removed_sub: Subscription | None = None
        self._wrote: dict[str, tuple[bytes, RunSummary]] = {}  # oldest first
        self._building: RunIndex | None = None  # the index a rebuild is filling
        self._reconnected = asyncio.Event()
        self.rebuilds = 0
        """Times the bucket was read again (its watch lost, or NATS reconnected)."""

    async def start(self, kv: KeyValue) -> None:
        # a reconnect may leave the watch's consumer gone with a restarted nats-server: nats-py
        # notices only after missed heartbeats, so the bucket is read again at once instead
        on_reconnect(self.nc, self._reconnected.set)
        self._task = asyncio.create_task(self._follow(kv), name="df-visibility")
        self._sub = await self.nc.subscribe(
            self.layout.visibility, queue="df-server", cb=self._on_request
        )
        self._removed_sub = await self.nc.subscribe(
            self.layout.visibility_removed, cb=self._on_removed
        )

    async def forget(self, workflow_id: str, run_id: str) -> None:
        """The run's status entry was removed (retention, ``df workflow delete``): drop it here
        and tell every other df-server.

        A removal purges the entry from the bucket's stream, which a KV watch does not see, so
        whatever removes status entries calls this (``server/removals.py`` does).
        """
        key = self.layout.status_key(workflow_id, run_id)
        async with self._lock:
            self.index.remove(key)
        with contextlib.suppress(Exception):  # best effort: the others may be reached later
            await self.nc.publish(self.layout.visibility_removed, key.encode())

    def wrote(self, key: str, body: bytes, summary: RunSummary) -> None:
        """This server is writing ``body``, the encoding of ``summary``, as the status entry
        ``key``: when the watch brings these very bytes back, the index takes ``summary``
        instead of decoding them again (bytes that differ in any way are decoded and checked
        as every entry is)."""
        wrote = self._wrote
        wrote.pop(key, None)  # the newest last
        wrote[key] = (body, summary)
        if len(wrote) > WROTE_KEEP:
            del wrote[next(iter(wrote))]

    async def _on_removed(self, msg: Msg) -> None:
        key = msg.data.decode(errors="replace")
        if 0 < len(key) <= 1024:
            async with self._lock:
                self.index.remove(key)
                if self._building is not None:  # (it may have read the entry already)
                    self._building.remove(key)

    async def stop(self) -> None:
        for sub in (self._sub, self._removed_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._sub = self._removed_sub = None
        task, self._task = self._task, None
        if task is not None:  # cancelled again if a cancel is swallowed (transport/stopping.py)
            await cancel_and_wait(task, "the status bucket's watch")

    # ------------------------------------------------------------------ following the bucket

    async def _follow(self, kv: KeyValue) -> None:
        delay = 0.5
        while True:
            # a rebuild (after a lost watch) fills a new index while the old one still answers
            self._reconnected.clear()
            self._building = building = RunIndex()
            watching = asyncio.create_task(self._watch(kv, building), name="df-visibility-watch")
            reconnected = asyncio.create_task(self._reconnected.wait())
            try:
                await asyncio.wait({watching, reconnected}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(reconnected, "the reconnect wait")
                if not watching.done():
                    await cancel_and_wait(watching, "the status bucket's watch")
            self._building = None
            self.rebuilds += 1
            if self.index is building:
                delay = 0.5  # it had read the whole bucket: a new failure starts over
            if watching.cancelled():
                log.info("reconnected to NATS: reading the status bucket again")
                delay = 0.5
                continue
            exc = watching.exception()
            log.warning("following the status bucket failed (%s); reading it again", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _watch(self, kv: KeyValue, building: RunIndex) -> None:
        """Fill ``building`` from the bucket, make it the index once it holds every entry
        stored when the watch began, then follow each change; returns only by raising."""
        async for item in watch_bucket(kv):
            if item is None:
                self.index = building
                self.ready.set()
            else:
                async with self._lock:
                    self._apply(building, *item)
        raise DurableFutureError("the status bucket's watch ended")

    def _apply(self, index: RunIndex, key: str, value: bytes | None) -> None:
        if value is None:
            index.remove(key)
            return
        mine = self._wrote.get(key)
        if mine is not None and mine[0] == value:
            del self._wrote[key]
            index.put(key, listed(mine[1]))
            return
        try:
            summary = self.codec.decode_summary(value)
        except DurableFutureError as exc:
            log.debug("status entry %s is not readable: %s", key, exc)
            index.remove(key)
            return
        index.put(key, listed(summary))

    # ------------------------------------------------------------------ requests

    async def _on_request(self, msg: Msg) -> None:
        try:  # answer an inbox only: never write where the asker names (a run's history)
            check_reply_subject(msg.reply, "visibility reply subject", imported=True)
        except MessageRejectedError as exc:
            log.error("refused a visibility request: %s", exc)
            return
        try:
            body = await self.answer(msg.data)
        except DurableFutureError as exc:
            position = exc.position if isinstance(exc, InvalidQueryError) else -1
            body = encode_visibility_error(type(exc).__name__, str(exc), position)
        except Exception as exc:  # never a dead subscription
            log.exception("answering a visibility request failed")
            body = encode_visibility_error("DurableFutureError", f"the df-server failed: {exc}")
        with contextlib.suppress(Exception):
            await msg.respond(body)

    async def answer(self, data: bytes) -> bytes:
        """The reply to one request (raises a DurableFutureError to refuse it)."""
        req = decode_visibility_request(data)
        query = parse_query(req.query)
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT)
            except TimeoutError:
                raise DurableFutureError(
                    f"the df-server is still reading the status of every run (more than "
                    f"{READY_TIMEOUT:g}s so far); try again shortly"
                ) from None
        if req.op == "count":
            async with self._lock:
                n = await asyncio.to_thread(self.index.count, query)
            return encode_visibility_reply(self.codec, VisibilityReply(count=n))
        after = None
        if req.token:
            after = cursor_of(decode_page_token(req.token, req.query), query.order_by)
        # a page must fit in one NATS message: a smaller one (and a token for the rest) if not
        limit = max_payload(self.nc) - 1024
        size = req.page_size
        while True:
            async with self._lock:
                runs, cursor = await asyncio.to_thread(self.index.page, query, size, after)
            token = None if cursor is None else encode_page_token(req.query, cursor)
            body = encode_visibility_reply(
                self.codec, VisibilityReply(tuple(runs), token, len(runs))
            )
            if len(body) <= limit or size == 1:
                return body
            size = max(1, size // 2)
