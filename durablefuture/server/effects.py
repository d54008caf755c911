"""Effects: what a recorded decision implies, sent after the history append.

Dispatching tasks, arming timers (a JetStream schedule, plus a local fast path), notifying
parents and children, cancelling activities and writing the status index. Which effect means
what is decided once, in ``core.interpretation`` (the in-memory Simulation uses the same
table); this module is the NATS handler of that interpreter. Every message has a
``Nats-Msg-Id`` derived from stable facts, so deriving an effect twice (a redelivered input,
another server's view) is harmless; all are pipelined and their PubAcks awaited together.

Effects that fail after the append (no PubAck while a stream leader changes, a df-server
killed in between) are derived again, from the run as it is now (``effects_again``), by what
brings the input back: a stored input is acknowledged only after its effects (it returns as a
duplicate; dead-lettered with the reason after ``input_max_deliver - 1`` failures); a report
asked of df-server is answered ``store`` or not at all, and stored by its worker, or, that
worker lost, its unacknowledged task returns and the next worker reports the decision or
outcome it finds in history again, wherever it is (other inputs are recorded on top of it
meanwhile); a new run's first task is stored before its WorkflowStarted (``starts.py``); a
timer fired from memory has its JetStream schedule, so the timers a batch leaves spent, and a
closed run's, are purged only once the batch's other effects are stored. A stored task stays
until its outcome is recorded: workers ack after their report, record a give-up before they
dead-letter, and the compactor purges below two rounds' acknowledged floor only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine, Mapping, Sequence

from attrs import evolve

from durablefuture import metrics
from durablefuture.codec.records import Removal, encode_cancel_request, encode_removal
from durablefuture.codec.wire import InputEnvelope, WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    IndexRun,
    RunStatus,
    RunSummary,
    StartRun,
    UpdateStatus,
)
from durablefuture.core.errors import DurableFutureError, TransportError
from durablefuture.core.interpretation import RunMessage, interpret
from durablefuture.server.expiries import ExpiryLists
from durablefuture.server.grants import Grants
from durablefuture.server.runs import RunCache
from durablefuture.server.sources import SERVER
from durablefuture.transport.buckets import read_entry
from durablefuture.transport.compaction import purge
from durablefuture.transport.guard import max_payload
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    MSG_ID,
    SCHEDULE,
    SCHEDULE_TARGET,
    PubAck,
    WrongLastSequence,
    settled,
    unless_present,
)
from durablefuture.transport.publisher import schedule_at as _at

__all__ = ["FULL_HISTORY_IN_TASK", "MAX_TASK_BYTES", "Effects", "Guard", "await_ack"]

Later = list[Coroutine[object, object, None]]
"""Work started only once every effect's message is stored."""
Guard = Mapping[str, str]
"""Headers that make a publish conditional on a history's last sequence (a new run's first
effects, stored only if its WorkflowStarted can still be appended: ``server/starts.py``)."""

log = logging.getLogger("durablefuture.server")

MAX_TASK_BYTES = 512 * 1024
"""A workflow task carrying more than this leaves the events out (the worker reads them)."""
FULL_HISTORY_IN_TASK = 400
"""Histories up to this many events travel inside the workflow task (no read needed)."""


class Effects(Grants):
    """Sends the messages of effects, and fires local timers."""

    async def _send_input(
        self, workflow_id: str, message: inp.RunInput, msg_id: str = ""
    ) -> asyncio.Future[PubAck]:
        data = self.codec.encode_input(InputEnvelope(workflow_id, input=message))
        headers = {MSG_ID: msg_id or f"{message.run_id}:{message.input_id}"}
        return await self.pub.send(self.layout.input(SERVER), data, headers)

    async def _execute(self, cache: RunCache, effects: Sequence[Effect]) -> None:
        """Send every effect's messages (pipelined), then wait for all their PubAcks."""
        if not effects:
            return
        pending: list[Awaitable[object]] = []
        after: Later = []
        try:
            for e in effects:
                await self._effect(cache, e, pending, after)
            if pending:
                for r in await settled(pending):
                    if isinstance(r, BaseException):
                        raise r
        except BaseException:
            for work in after:
                work.close()  # never started: the effects are derived again, and it with them
            raise
        for work in after:
            self._track(work)

    async def _effect(
        self, cache: RunCache, e: Effect, pending: list[Awaitable[object]], after: Later
    ) -> None:
        await interpret(e, _Sender(self, cache, pending, after=after))

    async def _send_guarded(
        self, cache: RunCache, effects: Sequence[Effect], guard: Guard, one_by_one: bool = False
    ) -> tuple[list[Awaitable[object]], list[Effect]]:
        """Write the messages of a new run's workflow task and timers, each carrying
        ``guard``; returns their PubAck futures (not awaited unless ``one_by_one``: each is
        stored before the next is sent, as a clustered stream needs) and the effects left for
        after the append (a task too large to carry the run's history: its worker reads it)."""
        pending: list[Awaitable[object]] = []
        sender = _Sender(self, cache, pending, guard)
        for e in effects:
            sent = len(pending)
            await interpret(e, sender)
            if one_by_one and len(pending) > sent:
                # outcomes are read by the caller from the same futures
                await settled(pending[sent:])
        return pending, sender.deferred

    def _wrote_status(self, entry: str, body: bytes, summary: RunSummary) -> None:
        """``body``, the encoding of ``summary``, is being written as the status entry
        ``entry``: the visibility index need not decode it when its watch brings it back."""
        if self.visibility is not None:
            self.visibility.wrote(entry, body, summary)

    async def _reindex(self, summary: RunSummary) -> None:
        """Rewrite an open run's status entry with new search attributes: compare-and-set on
        the entry's revision, never over a close or over a later state of the run."""
        key = self.layout.status_key(summary.workflow_id, summary.run_id)
        subject = f"$KV.{self.layout.runs_bucket}.{key}"
        body = self.codec.encode_summary(summary)
        for _ in range(8):
            kv = self._runs_kv or await open_bucket(self.js, self.layout.runs_bucket)
            self._runs_kv = kv
            entry = await read_entry(kv, key)
            expected = "0"
            if entry is not None:
                try:
                    old = self.codec.decode_summary(entry[0])
                except DurableFutureError:
                    old = None
                if old is not None and (
                    old.status != RunStatus.RUNNING or old.history_length >= summary.history_length
                ):
                    return
                expected = str(entry[1])
            try:
                await await_ack(self.pub.send(subject, body, {EXPECTED_LAST_SUBJECT_SEQ: expected}))
                return
            except WrongLastSequence:
                continue  # written meanwhile (a close, another server): look again

    async def _arm(
        self,
        cache: RunCache,
        e: ArmTimer,
        pending: list[Awaitable[object]],
        guard: Guard | None = None,
    ) -> None:
        run_id = cache.state.run_id
        wid = cache.workflow_id
        fire = inp.FireTimer(run_id, e.key)
        now = self.clock.now()
        data = self.codec.encode_input(InputEnvelope(wid, input=fire))
        self._local_timers.cancel(run_id, e.key)  # re-armed (a heartbeat moved the deadline)
        if e.fire_at <= now + 0.001:
            # Already due (a workflow-time timer recorded late, a zero delay): straight to the
            # input stream, the durable copy (a local timer alone would be lost with this
            # process, and nothing else would fire it), and fired from memory at once as
            # well, so the firing does not wait for its turn among the inputs; whichever is
            # recorded second is a duplicate.
            headers = {MSG_ID: f"tmr:{run_id}:{e.key}:{e.fire_at!r}", **(guard or {})}
            pending.append(await self.pub.send(self.layout.input("timer"), data, headers))
        else:
            cache.timers = True  # purged once spent or at the close
            headers = {SCHEDULE: _at(e.fire_at), SCHEDULE_TARGET: self.layout.input("timer")}
            headers.update(guard or {})
            pending.append(await self.pub.send(self.layout.timer(run_id, e.key), data, headers))
        if not self.options.local_timers and not self.clock.skips:
            return
        self._local_timers.arm(wid, run_id, e.key, e.fire_at)

    async def _arm_expiry(
        self, workflow_id: str, run_id: str, closed_at: float
    ) -> asyncio.Future[PubAck]:
        """Arm (or move) a closed run's expiry on its own: the namespace's retention after
        ``closed_at`` (its removal: ``server/removals.py``); a close shares one instead
        (``_expire``)."""
        due = closed_at + self.settings.retention
        headers = {SCHEDULE: _at(due), SCHEDULE_TARGET: self.layout.removal("expire")}
        body = encode_removal(Removal(workflow_id, run_id))
        return await self.pub.send(self.layout.expiry(run_id), body, headers)

    _expiry_lists: ExpiryLists | None = None

    async def _expire(self, workflow_id: str, run_id: str, due: float) -> asyncio.Future[PubAck]:
        """Arm a closed run's expiry, due at ``due`` (its status entry's ``expires_at``), in a
        list shared with the runs closing with it (``server/expiries.py``); the future
        resolves once that list is stored."""
        if self._expiry_lists is None:
            self._expiry_lists = ExpiryLists(self.pub, self.layout, self._track)
        return await self._expiry_lists.arm(Removal(workflow_id, run_id), due)

    def _later(self, when: float, subject: str, data: bytes, msg_id: str) -> None:
        """Publish at ``when`` of a skipping clock (the JetStream schedule keeps wall time)."""

        def due() -> None:
            if not self._stopping.is_set():
                self._track(self._publish_due(subject, data, msg_id))

        self.clock.call_at(when, due)

    async def _publish_due(self, subject: str, data: bytes, msg_id: str) -> None:
        try:
            await await_ack(self.pub.send(subject, data, {MSG_ID: msg_id}))
        except Exception as exc:  # the durable schedule fires anyway
            log.warning("a delayed task for %s failed: %s", subject, exc)

    def _track(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fire_local(self, workflow_id: str, run_id: str, key: str) -> None:
        if self._stopping.is_set():
            return
        self._track(self._fire_local_async(workflow_id, inp.FireTimer(run_id, key)))

    async def _fire_local_async(self, workflow_id: str, fire: inp.FireTimer) -> None:
        try:
            await self._storage.retry(lambda: self._handle_run_input(workflow_id, fire))
        except Exception as exc:  # the durable schedule fires anyway
            log.warning("local timer %s of run %s failed: %s", fire.key, fire.run_id, exc)

    def _cancel_local_timers(self, run_id: str) -> None:
        self._local_timers.cancel_run(run_id)

    async def _purge_timers(self, subject: str) -> None:
        """Cancel the durable timers on ``subject`` (a wildcard); a failure leaves them to fire
        and be ignored."""
        try:
            await purge(self.nc, self.layout.stream, subject)
        except TransportError as exc:
            log.debug("could not cancel the timers on %s: %s", subject, exc)

    async def _purge_run_timers(self, run_id: str) -> None:
        """Cancel the durable timers a closed run still has armed (they would fire only to be
        ignored); should this fail, they fire, are ignored, and are compacted then."""
        try:
            await purge(self.nc, self.layout.stream, self.layout.timer(run_id, ">"))
        except TransportError as exc:
            log.debug("could not cancel the timers of closed run %s: %s", run_id, exc)


class _Sender:
    """The df-server's handler of effects (``core.interpretation.EffectHandler``): each
    effect becomes messages, pipelined; their PubAck futures go to ``pending``."""

    def __init__(
        self,
        server: Effects,
        cache: RunCache,
        pending: list[Awaitable[object]],
        guard: Guard | None = None,
        *,
        after: Later | None = None,
    ) -> None:
        self.server = server
        self.cache = cache
        self.pending = pending
        self.guard = guard
        self.deferred: list[Effect] = []
        self.after = after  # work started once every effect's message is stored (None: now)

    async def dispatch_workflow_task(self, e: DispatchWorkflowTask) -> None:
        server, cache = self.server, self.cache
        task = e.task
        events = cache.events
        if cache.wft_sent_upto:
            delta: Sequence[ev.Event] = events[cache.wft_sent_upto :]
        elif len(events) <= FULL_HISTORY_IN_TASK:
            delta = events
        else:
            delta = ()
        cache.wft_sent_upto = len(events)
        data = server.codec.encode_workflow_task(
            WorkflowTaskMessage(task, tuple(delta), cache.last_seq)
        )
        if len(data) > min(MAX_TASK_BYTES, max_payload(server.nc) // 2):
            if self.guard is not None:
                # the worker would read a history that may not be stored yet: after the append
                cache.wft_sent_upto = 0
                self.deferred.append(e)
                return
            # too big to carry: the worker reads the history
            data = server.codec.encode_workflow_task(WorkflowTaskMessage(task, (), cache.last_seq))
        msg_id = f"{cache.state.run_id}:{task.trigger}:{task.attempt}"
        started = cache.state.started
        if started.continued_from is not None:
            # a run continued as new has its run id chosen before it is created: a creation
            # that failed after writing its first task (df-server killed before the append,
            # the start redelivered) must not make the next one's task a duplicate of it
            msg_id += f":{started.at!r}"
        token = cache.sticky
        if token and server.options.sticky_timeout > 0 and token not in server._gone_sticky:
            # to the worker whose cache holds the run; df-server moves it to the task queue
            # (as "wt:" + the same id) if that worker does not take it in time
            subject = server.layout.sticky_tasks(task.task_queue, token)
            msg_id = "wts:" + msg_id
            route = "sticky"
        else:
            subject = server.layout.workflow_tasks(task.task_queue)
            msg_id = "wt:" + msg_id
            route = "shared"
        sent = await server.pub.send(subject, data, {MSG_ID: msg_id, **(self.guard or {})})
        sent.add_done_callback(lambda f: _count_route(f, server.layout.namespace, route))
        self.pending.append(sent)

    async def dispatch_activity_task(self, e: DispatchActivityTask) -> None:
        server = self.server
        run_id = self.cache.state.run_id
        atask = e.task
        if e.deliver_at is None and (listed := await server._granted(self.cache, atask)):
            self.pending.append(listed)  # run by the reporting worker (``grants.py``)
            return
        data = server.codec.encode_activity_task(atask)
        target = server.layout.activity_tasks(atask.task_queue)
        msg_id = f"at:{run_id}:{atask.seq}:{atask.attempt}"
        if e.deliver_at is None or e.deliver_at <= server.clock.now() + 0.01:
            self.pending.append(await server.pub.send(target, data, {MSG_ID: msg_id}))
        elif server.clock.skips:
            # a test's clock jumps ahead of the wall-clock time a schedule would keep:
            # the backoff lives in that clock (tests need no durability across crashes)
            server._later(e.deliver_at, target, data, msg_id)
        else:
            # the same Msg-Id on the schedule: if this dispatch is derived again (a timer's
            # durable copy arrives after its local fast path) once the retry is due, the
            # direct publish above is a duplicate instead of a second delivery
            headers = {SCHEDULE: _at(e.deliver_at), SCHEDULE_TARGET: target, MSG_ID: msg_id}
            subject = server.layout.timer(run_id, f"r{atask.seq}.{atask.attempt}")
            self.cache.timers = True
            self.pending.append(await server.pub.send(subject, data, headers))

    async def arm_timer(self, e: ArmTimer) -> None:
        await self.server._arm(self.cache, e, self.pending, self.guard)

    async def start_run(self, e: StartRun) -> None:
        server = self.server
        data = server.codec.encode_input(InputEnvelope(e.request.workflow_id, start=e.request))
        headers = {MSG_ID: f"start:{e.request.request_id}"}
        # on the server's own subject: a start carrying a run id or a parent is believed only there
        self.pending.append(await server.pub.send(server.layout.input(SERVER), data, headers))

    async def send_to_run(self, message: RunMessage) -> None:
        workflow_id, msg, msg_id = message
        self.pending.append(await self.server._send_input(workflow_id, msg, msg_id=msg_id))

    async def cancel_activities(self, e: CancelActivities) -> None:
        server = self.server
        layout, run_id = server.layout, self.cache.state.run_id
        raw = encode_cancel_request(e.reason)
        for seq in e.seqs:
            key = f"$KV.{layout.activity_bucket}.{layout.cancel_key(run_id, seq)}"
            self.pending.append(await server.pub.send(key, raw))

    async def update_status(self, e: UpdateStatus) -> None:
        server = self.server
        layout, pub = server.layout, server.pub
        summary = e.summary
        expires = 0.0
        if summary.status in RunStatus.CLOSED:  # its expiry's time, kept (server/janitor.py)
            expires = (summary.close_time or server.clock.now()) + server.settings.retention
            summary = evolve(summary, expires_at=expires)
        body = server.codec.encode_summary(summary)
        entry = layout.status_key(summary.workflow_id, summary.run_id)
        key = f"$KV.{layout.runs_bucket}.{entry}"
        if summary.status in RunStatus.CLOSED:
            server._wrote_status(entry, body, summary)
            self.pending.append(await pub.send(key, body))
        elif server.options.status_delay > 0:
            # only if the run is still open a little later: most close before, and their
            # closed entry is their only one (``server/status_later.py``)
            server._status_later(self.cache, summary)
        else:
            # "running" is a run's first status, written once: a copy derived again later
            # (a start delivered twice, another server's older view) must never overwrite
            # its close, or clients wait for a result that is long there
            self.cache.status_entry = True
            server._wrote_status(entry, body, summary)
            created = await pub.send(key, body, {EXPECTED_LAST_SUBJECT_SEQ: "0"})
            self.pending.append(unless_present(created))
        if summary.status in RunStatus.CLOSED:
            server._status_closed(summary.run_id)
            server._cancel_local_timers(summary.run_id)
            if self.cache.timers or summary.run_id != self.cache.state.run_id:
                # (none stored: no request); after the close's other effects are stored (see
                # the module docstring: a close fired from memory has its timer as the copy)
                purge = server._purge_run_timers(summary.run_id)
                if self.after is None:
                    server._track(purge)
                else:
                    self.after.append(purge)
            self.pending.append(await server._expire(summary.workflow_id, summary.run_id, expires))
            # in history already: waiting clients get the outcome now (the notice carries it)
            with contextlib.suppress(TransportError):
                await pub.notify(layout.closed_notice(summary.workflow_id, summary.run_id), body)

    async def index_run(self, e: IndexRun) -> None:
        self.pending.append(self.server._reindex(e.summary))

    async def unsupported(self, effect: object) -> None:
        raise TypeError(
            f"the df-server has no handler for effect {type(effect).__name__}: {effect!r}; "
            "add one to core.interpretation and to each runtime's handler"
        )


def _count_route(sent: asyncio.Future[PubAck], namespace: str, route: str) -> None:
    """Count a workflow task stored on its route (not one JetStream dropped as a duplicate:
    a dispatch derived again)."""
    if not sent.cancelled() and sent.exception() is None and not sent.result().duplicate:
        metrics.STICKY_TASKS.inc(namespace, route)


async def await_ack(send: Awaitable[asyncio.Future[PubAck]]) -> PubAck:
    return await (await send)
