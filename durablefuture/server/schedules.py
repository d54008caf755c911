"""df-server's schedule component: steps schedules when their timer fires or a client asks.

Each input (a tick from the schedule's ``@at`` timer, or a control request) is handled as:
load the state record and its sequence (a tick: the record this process wrote last, if any) ->
observe the schedule's running actions (their workflow ids' latest runs) -> the pure step
(``core.schedules``) -> write the new record with ``Nats-Expected-Last-Subject-Sequence`` (a
conflict: reload and step again) -> perform the effects (starts, in this process's start path
when it has one, else through the server's start input; cancel/terminate requests) -> re-arm
the timer at the next wake-up -> answer -> ack. A crash anywhere leaves the input unacked; its
redelivery finds the record as far as it got, and derives the same starts again: they are
idempotent (stable workflow id, request id and ``Nats-Msg-Id``; id reuse REJECT_DUPLICATE).

Under ALLOW_ALL a step records the next action *ahead* (``ScheduleOptions.ahead``) and arms the
timer for its fire time, whose firing then only starts it (``due_starts``: nothing is observed;
the record is written again as it is, so that a pause, an update or a delete another process
stepped before the fire time conflicts with the start instead of withdrawing a started action);
the step ``poll_interval`` later observes the runs and records the next one ahead. A pause, an
update or a delete before the fire time withdraws it.

While an action is "starting" (its run not seen yet) the timer is armed ``poll_interval`` ahead:
the step that sees its run is durable. An action whose workflow id has no run is closed: seen
running before, "removed"; never seen, "lost" once its start is older than the namespace's
retention and twice ``ack_wait`` (no start of it can still be under way), never started again.

Closed-run notices are a fast path only: a run of a schedule this process knows closed, so
the schedule is stepped now instead of at its next poll."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping

from durablefuture import metrics
from durablefuture.codec.schedules import ScheduleCodec, ScheduleInput
from durablefuture.codec.wire import Codec, Reply
from durablefuture.core import inputs as inp
from durablefuture.core.errors import (
    DecodeError,
    DurableFutureError,
    InvalidArgumentError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
)
from durablefuture.core.schedule_draft import ahead
from durablefuture.core.schedules import (
    Observed,
    ScheduleState,
    StartAction,
    Step,
    due_starts,
    new_state,
    step,
)
from durablefuture.server.schedule_effects import (
    count_step,
    observe,
    perform,
    start_once,
    start_request,
)
from durablefuture.server.schedule_holds import release_schedule, save_held
from durablefuture.server.schedule_options import ScheduleOptions
from durablefuture.server.schedule_refresh import ClosedNotices, Refresher
from durablefuture.server.schedule_requests import request_step
from durablefuture.server.schedule_states import StateCache
from durablefuture.transport.consumer import PullConsumer, delivery_count, stored_time
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.headers import CLOSING_HEADER, REPLY_HEADER
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer
from durablefuture.transport.publisher import Publisher, WrongLastSequence
from durablefuture.transport.redelivery import lost_reason
from durablefuture.transport.schedule_store import ScheduleStore
from durablefuture.transport.startup import until_ready
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.subjects import Layout

__all__ = ["ScheduleOptions", "ScheduleService"]

log = logging.getLogger("durablefuture.schedules")


class ScheduleService:
    def __init__(
        self,
        pub: Publisher,
        layout: Layout,
        codec: Codec,
        history: HistoryStore,
        options: ScheduleOptions | None = None,
        start: Callable[[inp.StartWorkflowRequest], Awaitable[object]] | None = None,
        retention: Callable[[], float] | None = None,
    ) -> None:
        self.nc = pub.nc
        self.pub = pub
        self.layout = layout
        self.codec = codec
        self.scodec = ScheduleCodec(codec)
        self.history = history
        self.options = options or ScheduleOptions()
        self.store = ScheduleStore(pub.nc, pub, layout)
        self.states = StateCache()
        self._start = start  # df-server's own start path (else: through its input stream)
        self._retention = retention  # the namespace's, as df-server last read it
        self._consumer: PullConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        every = f"{layout.events_prefix}.closed.>"
        self.closed = ClosedNotices(
            self.nc, layout.closed_notices, every, self._on_closed, self._spawn
        )
        self.refresher = Refresher(
            lambda sid: self.handle(ScheduleInput(sid, "tick")),
            self._spawn,
            follow=self.closed.follow,
        )
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    async def prepare(pub: Publisher, layout: Layout, options: ScheduleOptions) -> None:
        """The schedules' consumer (JetStream API calls only, safe to retry)."""
        settings = ConsumerSettings(options.ack_wait, options.max_deliver)
        await ensure_consumer(
            pub.js,
            layout,
            layout.schedule_consumer,
            layout.schedule_inputs,
            settings,
            update=True,
        )

    async def start(self) -> None:
        """Consume schedule inputs (after :meth:`prepare`)."""
        self._consumer = PullConsumer(
            self.nc,
            self.layout.stream,
            self.layout.schedule_consumer,
            credits=self.options.concurrency,
        )
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._loop(), name="df-schedules")
        self._spawn(self._reconcile())

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.refresher.stop()
        await self.closed.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._loop_task is not None:
            await cancel_and_wait(self._loop_task, "the schedules loop")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            msg = await consumer.next()
            self._spawn(self._process(msg))

    async def _reconcile(self) -> None:
        """Step every schedule once at start-up: whatever was lost with a crashed process
        (a timer that was never armed) is re-derived from the state records."""
        try:  # JetStream may still be failing over when a server starts
            ids = await until_ready("listing schedules to reconcile", self.store.ids, 120.0)
        except DurableFutureError as exc:
            log.error("could not list schedules to reconcile: %s", exc)
            return
        minute = int(time.time() // 60)
        for sid in ids:
            data = self.scodec.encode_input(ScheduleInput(sid, "tick"))
            with contextlib.suppress(DurableFutureError):
                await self.store.send_input("tick", data, msg_id=f"reconcile:{sid}:{minute}")

    # ------------------------------------------------------------------ inputs

    async def _process(self, msg: object) -> None:
        consumer = self._consumer
        try:
            delivered = delivery_count(msg)  # type: ignore[arg-type]
            if self.options.redelivery.abandoned(delivered):
                reason = lost_reason("schedule input", delivered)
                log.error("giving up on a schedule input: %s", reason)
                subject = self.layout.dead_letter("schedule-input")
                await dead_letter(self.pub, subject, msg, "schedule", reason)  # type: ignore[arg-type]
                return
            data: bytes = msg.data  # type: ignore[attr-defined]
            try:
                message = self.scodec.decode_input(data)
            except DecodeError as exc:
                await dead_letter(
                    self.pub,
                    self.layout.dead_letter("schedule-input"),
                    msg,  # type: ignore[arg-type]
                    "schedule",
                    str(exc),
                )
                return
            headers: Mapping[str, str] = msg.headers or {}  # type: ignore[attr-defined]
            reply_to = headers.get(REPLY_HEADER, "")
            timer = message.kind == "tick" and message.due is not None
            try:
                with self.refresher.tick() if timer else contextlib.nullcontext():
                    reply = await self.handle(message, stored_time(msg))  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except InvalidArgumentError as exc:
                reply = Reply(False, error_type=InvalidArgumentError.__name__, message=str(exc))
            except Exception as exc:
                delivered = delivery_count(msg)  # type: ignore[arg-type]
                policy = self.options.redelivery
                log.warning(
                    "schedule %s: handling %s failed (delivery %d): %s",
                    message.schedule_id,
                    message.kind,
                    delivered,
                    exc,
                    exc_info=not isinstance(exc, DurableFutureError),
                )
                if policy.exhausted(delivered):
                    await dead_letter(
                        self.pub,
                        self.layout.dead_letter("schedule-input"),
                        msg,  # type: ignore[arg-type]
                        "schedule",
                        f"failed {delivered} times: {exc}",
                    )
                else:
                    await policy.retry_later(msg, delivered)  # type: ignore[arg-type]
                return
            if reply_to:
                with contextlib.suppress(DurableFutureError):
                    await self.pub.notify(
                        check_reply_subject(reply_to), self.codec.encode_reply(reply)
                    )
            await msg.ack()  # type: ignore[attr-defined]
        finally:
            if consumer is not None:
                consumer.release()

    def _lock(self, schedule_id: str) -> asyncio.Lock:
        lock = self._locks.get(schedule_id)
        if lock is None:
            lock = self._locks[schedule_id] = asyncio.Lock()
        return lock

    async def handle(self, message: ScheduleInput, stored: float | None = None) -> Reply:
        """Apply one input (stored by nats-server at ``stored``) to its schedule (the lock keeps
        one step per schedule at a time in this process; the sequence check does it across
        processes)."""
        async with self._lock(message.schedule_id):
            for _ in range(30):
                try:
                    return await self._handle_once(message, stored)
                except WrongLastSequence:
                    metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                    self.states.drop(message.schedule_id)
                    continue
            raise DurableFutureError(
                f"schedule {message.schedule_id!r}: too many concurrent writers; retrying"
            )

    async def _handle_once(self, message: ScheduleInput, stored: float | None) -> Reply:
        sid = message.schedule_id
        poll = self.options.poll_interval
        kind = message.kind
        cached = self.states.get(sid) if kind == "tick" else None
        loaded = None if cached is not None else await self.store.load(sid)
        now = time.time()
        if kind == "create":
            if message.schedule is None:
                raise InvalidArgumentError("create needs a schedule")
            if loaded is not None:
                old = self.scodec.decode_state(loaded[0])
                if message.request_id not in old.requests:
                    return Reply(
                        False,
                        error_type=ScheduleAlreadyExistsError.__name__,
                        message=f"schedule {sid!r} already exists; update or delete it",
                    )
                result = step(old, now, await self._observe(old, now), poll, self.options.ahead)
                seq = await self._commit(old, loaded[1], result)
                await self._after(result, message, loaded[1], seq)
            else:
                fresh = new_state(sid, message.schedule, now, message.request_id)
                result = step(fresh, now, {}, poll, self.options.ahead)
                seq = await self._save(sid, result.state, 0, b"")
                self.states.put(sid, result.state, seq)
                log.info("created schedule %s", sid, extra={"schedule_id": sid})
                await self._after(result, message, 0, seq)
            return Reply(True)
        if cached is not None:
            state, seq = cached
        elif loaded is None:
            if kind in ("tick", "delete"):
                return Reply(True)
            return Reply(
                False,
                error_type=ScheduleNotFoundError.__name__,
                message=f"no schedule {sid!r} in namespace {self.layout.namespace!r}",
            )
        else:
            state, seq = self.scodec.decode_state(loaded[0]), loaded[1]
        if kind == "delete":
            data = self.scodec.encode_state(state)
            await release_schedule(self.pub, self.layout, sid, data, self.options.payload_grace)
            await self.store.delete(sid)
            self.states.drop(sid)
            log.info("deleted schedule %s", sid, extra={"schedule_id": sid})
            return Reply(True)
        if kind == "tick":
            started = due_starts(state, now, message.due, poll)
            if started is not None:  # only starts are due: no observation
                # the record written again as it is, with the sequence check, before anything
                # starts: a pause, update or delete that another process stepped before the
                # fire time but writes after it then conflicts, and is stepped again at a time
                # the action is due (else it would withdraw an action that has started)
                new_seq = await self.store.save(sid, self.scodec.encode_state(state), seq)
                self.states.put(sid, state, new_seq)
                count_step(self.layout.namespace, started)
                await self._after(started, message, seq, new_seq)
                return Reply(True)
        observed = await self._observe(state, now)
        result = request_step(state, message, now, stored, observed, self.options)
        if cached is not None and result.state == state:
            await self._confirm(sid, seq)
        new_seq = await self._commit(state, seq, result)
        await self._after(result, message, seq, new_seq)
        return Reply(True)

    async def _observe(self, state: ScheduleState, now: float) -> dict[str, Observed]:
        """What became of the running actions; an action never seen running is lost once its
        start was due longer ago than the retention and twice the inputs' ack wait (its run
        may have closed and been removed by then, and no start of it can still be under way)."""
        lost = None
        if self._retention is not None:
            lost = max(self._retention(), 2 * self.options.ack_wait)
        return await observe(self.history, state, now, lost)

    async def _confirm(self, sid: str, seq: int) -> None:
        """Nothing to write, so no sequence check: confirm the cached record is the latest."""
        latest = await self.store.load(sid)
        if latest is None or latest[1] != seq:
            raise WrongLastSequence(
                self.layout.schedule_state(sid), seq, latest[1] if latest else 0
            )

    async def _save(self, sid: str, state: ScheduleState, seq: int, before: bytes) -> int:
        """Store the record in place of ``before``, the payload objects it names held by the
        schedule (``schedule_holds.py``): its runs come and go while it still needs them."""
        data = self.scodec.encode_state(state)
        return await save_held(self.pub, self.layout, self.store, sid, data, before, seq)

    async def _commit(self, old: ScheduleState, seq: int, result: Step) -> int:
        """Write the new record (if it changed); its sequence."""
        sid = old.schedule_id
        if result.state != old:
            seq = await self._save(sid, result.state, seq, self.scodec.encode_state(old))
        self.states.put(sid, result.state, seq)
        count_step(self.layout.namespace, result)
        return seq

    async def _after(self, result: Step, message: ScheduleInput, began: int, seq: int) -> None:
        """Perform the effects (idempotent) and re-arm the timer, all at once: always after the
        timer's own firing; after another input only if this process has not armed the same
        wake-up since the record the step began from (``began``; ``seq`` is the one it wrote).
        """
        state = result.state
        sid = state.schedule_id
        pending: list[Awaitable[object]] = []
        for effect in result.effects:
            if isinstance(effect, StartAction) and self._start is not None:
                if self.states.begin_start(rid := effect.request_id, effect.workflow_id):
                    request = start_request(state, effect)
                    forget = functools.partial(self.states.start_failed, rid)
                    pending.append(start_once(self._start, request, forget))
                continue
            fut = await perform(self.pub, self.layout, self.codec, self._start, state, effect)
            if fut is not None:
                pending.append(fut)
        # an action still "starting" keeps the durable poll (``now + poll``): the step that
        # sees its run must not depend on this process living on
        self.refresher.watch(state, starting=not ahead(state, self.options.ahead))
        wake = result.wake_at
        own = message.due is not None  # the timer's own firing
        if wake is not None and (
            own or wake <= time.time() or not self.states.armed(sid, began, wake)
        ):
            tick = self.scodec.encode_input(ScheduleInput(sid, "tick", due=wake))
            pending.append(self.store.arm(sid, wake, tick))
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        if wake is not None:
            self.states.mark_armed(sid, seq, wake)

    async def give_way(self, workflow_id: str) -> None:
        """Inputs of a schedule's runs wait a little while timer ticks are handled."""
        if self.states.is_action(workflow_id):
            await self.refresher.give_way()

    async def _on_closed(self, msg: object) -> None:
        if CLOSING_HEADER in (getattr(msg, "headers", None) or {}):
            return  # sent before the close is stored: the usual notice follows it
        self.refresher.on_closed(msg.subject)  # type: ignore[attr-defined]
