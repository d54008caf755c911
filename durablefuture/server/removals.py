"""Removing closed runs: when their retention is over, or when an operator deletes one.

When a run closes, df-server arms its expiry: a JetStream message schedule that fires at
close time + the namespace's retention. The runs that close together share one
(``server/expiries.py``): ``df.<ns>.rx.l.<list>`` lists them and fires, at the latest of their
due times, onto ``df.<ns>.rm.expire-list``; a run's own, ``df.<ns>.rx.<run>`` (armed again when
the retention grew, and what servers before the lists armed at every close), fires onto
``df.<ns>.rm.expire``. ``df workflow delete`` sends ``df.<ns>.rm.delete``. (The fired check
lists of eager activity attempts, ``rm.check-list``, share the consumer: ``server/checks.py``.)
All are read by one
durable consumer (``removals``) shared by every df-server, so each removal is handled by one
server at a time, and only acknowledged when it is done: a list when every run it names is
removed, with in-progress acknowledgements meanwhile. A list that fails part way is delivered
again (or dead-lettered) as a whole; the runs already removed are found gone then. A fired
list's schedule is removed from the stream by JetStream; its ``rm.expire-list`` message, once
acknowledged, by the compactor.

A removal first reads the run's newest history message from the stream leader: a run whose
history does not end with a closing event is open, and nothing of it is touched (a delete
request is refused, naming the run's state). Then, in this order: archive the history and the
payload objects it names (if an archive is configured; every object is read back and checked
before the history is written), delete the status entry, the run's activity records, its
payload-object markers and every payload object no other run, schedule or dead letter still
holds, the expiry
schedule, and the history last. A crash at any point (SIGKILL included) leaves the removal
unacknowledged: it is delivered again, finds the history (or, after it was deleted, only what
is left), and finishes; every step may be repeated. If the retention was made longer since the
run closed, an expiry that comes early is armed again for the new time.

Payload objects are shared by content. A run marks the objects its history names before the
history is written (``df.<ns>.ref.<object>.<run>``); an object goes when no marker is left and
its last put is older than the grace period, behind a fence that refuses a message naming it
from then on (``transport/payload_gc.py``); one put lately is left to the janitor's sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time

from durablefuture.codec.claims import claim_names
from durablefuture.codec.records import REMOVAL_KINDS, decode_expiry_list, decode_removal
from durablefuture.codec.wire import Reply
from durablefuture.core import events as ev
from durablefuture.core.errors import DecodeError, WorkflowNotFoundError, WorkflowStillOpenError
from durablefuture.server.effects import Effects, await_ack
from durablefuture.transport.archive import Archive, open_archive
from durablefuture.transport.compaction import purge
from durablefuture.transport.consumer import Msg, PullConsumer, delivery_count
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.headers import REPLY_HEADER
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer
from durablefuture.transport.payload_gc import collect_released
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.redelivery import lost_reason
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.stored import leader_get

__all__ = ["Removals"]

log = logging.getLogger("durablefuture.server")


class Removals(Effects):
    """Arms expiries and removes closed runs (a part of ``Server``)."""

    archive: Archive | None = None
    _removals: PullConsumer | None = None
    _removals_task: asyncio.Task[None] | None = None

    async def _prepare_removals(self) -> None:
        settings = ConsumerSettings(self.options.input_ack_wait, self.options.input_max_deliver)
        await ensure_consumer(
            self.js, self.layout, self.layout.removal_consumer, self.layout.removals, settings
        )
        if self.options.archive and self.archive is None:
            self.archive = open_archive(self.options.archive, self.layout, self.js)

    async def _start_removals(self) -> None:
        if self._removals_task is not None:
            return
        consumer = PullConsumer(
            self.nc, self.layout.stream, self.layout.removal_consumer, credits=8
        )
        await consumer.start()
        self._removals = consumer
        self._removals_task = asyncio.create_task(self._removal_loop(consumer))

    async def _stop_removals(self) -> None:
        task, self._removals_task = self._removals_task, None
        if self._removals is not None:
            await self._removals.stop()
        if task is not None:
            await cancel_and_wait(task, "the removals loop")

    async def _removal_loop(self, consumer: PullConsumer) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                msg = await consumer.next()
                task = asyncio.create_task(self._removal(consumer, msg))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.wait(running, timeout=10)

    async def _removal(self, consumer: PullConsumer, msg: Msg) -> None:
        reply_to = (msg.headers or {}).get(REPLY_HEADER, "")
        try:
            delivered = delivery_count(msg)
            if self.options.redelivery.abandoned(delivered):
                reason = lost_reason("removal", delivered)
                log.error("giving up on a removal: %s", reason)
                await dead_letter(
                    self.pub, self.layout.dead_letter("removal"), msg, "removal", reason
                )
                return
            kind = msg.subject.rpartition(".")[2]
            if kind == "check-list":  # eager activity attempts (``server/checks.py``)
                await self._check_list_or_retry(msg)
                return
            try:
                if kind not in REMOVAL_KINDS:
                    raise DecodeError(f"unknown removal kind {kind!r}")
                if kind == "expire-list":
                    removals = decode_expiry_list(msg.data)
                else:
                    removals = [decode_removal(msg.data)]
            except DecodeError as exc:
                await dead_letter(
                    self.pub, self.layout.dead_letter("removal"), msg, "removal", str(exc)
                )
                return
            refused: Reply | None = None
            removal = removals[0]
            keepalive = max(0.1, self.options.input_ack_wait / 3)
            alive = time.monotonic()
            try:
                for removal in removals:
                    if time.monotonic() - alive > keepalive:
                        # a long list: still at work, not to be delivered to another server
                        await msg.in_progress()
                        alive = time.monotonic()
                    # a list delivered again re-does only what is left: a removed run is
                    # found gone, and nothing of it is left to delete
                    refused = await self.remove_run(
                        removal.workflow_id, removal.run_id, expire=kind != "delete"
                    )
            except Exception as exc:
                delivered = delivery_count(msg)
                policy = self.options.redelivery
                if policy.exhausted(delivered):
                    log.error("giving up removing run %s: %s", removal.run_id, exc)
                    await dead_letter(
                        self.pub, self.layout.dead_letter("removal"), msg, "removal", str(exc)
                    )
                else:
                    log.warning("removing run %s failed (retried): %s", removal.run_id, exc)
                    await policy.retry_later(msg, delivered)
                return
            if refused is not None:
                await self._reply(reply_to, refused)
            else:
                await self._reply(reply_to, Reply(True, run_id=removal.run_id))
            await msg.ack()
        finally:
            consumer.release()

    async def _check_list(self, msg: Msg) -> None:
        raise NotImplementedError  # checks.EagerChecks

    async def _check_list_or_retry(self, msg: Msg) -> None:
        try:
            await self._check_list(msg)
        except Exception as exc:
            delivered = delivery_count(msg)
            policy = self.options.redelivery
            if policy.exhausted(delivered):
                log.error("giving up on a check list: %s", exc)
                await dead_letter(
                    self.pub, self.layout.dead_letter("removal"), msg, "removal", str(exc)
                )
            else:
                log.warning("checking a list failed (retried): %s", exc)
                await policy.retry_later(msg, delivered)
            return
        await msg.ack()

    async def remove_run(self, workflow_id: str, run_id: str, *, expire: bool) -> Reply | None:
        """Remove closed run ``run_id`` (see the module docstring); a Reply saying why not."""
        last = await self.history.last_batch(workflow_id, run_id)
        status_key = self.layout.status_key(workflow_id, run_id)
        if last is not None:
            closing = last.events[-1] if last.events else None
            if not isinstance(closing, ev.TERMINAL_EVENTS):
                return Reply(
                    False,
                    run_id=run_id,
                    error_type=WorkflowStillOpenError.__name__,
                    message=f"workflow {workflow_id!r} run {run_id} is still open: only closed "
                    "runs can be deleted (terminate or cancel it first)",
                )
            now = self.clock.now()
            if expire and closing.at + self.settings.retention > now + 1.0:
                await await_ack(self._arm_expiry(workflow_id, run_id, closing.at))  # retention grew
                return None
            raw = await self.history.raw(workflow_id, run_id)
            if self.archive is not None and raw:
                # an empty read means another removal of this run got here first and archived
                # it: writing it again would replace that archive with an empty history
                # with the payload objects it names, complete before anything is deleted
                payloads = ObjectPayloads(self.pub.js, self.layout)
                await self.archive.write(workflow_id, run_id, raw, payloads)
            names = set().union(*(claim_names(b) for b in raw)) if raw else set()
        else:
            status = await leader_get(
                self.nc,
                f"KV_{self.layout.runs_bucket}",
                {"last_by_subj": f"$KV.{self.layout.runs_bucket}.{status_key}"},
                "a status entry",
                self.pub.timeout,
            )
            if status is None and not expire:
                return Reply(
                    False,
                    run_id=run_id,
                    error_type=WorkflowNotFoundError.__name__,
                    message=f"no run {run_id} of workflow {workflow_id!r} in namespace "
                    f"{self.layout.namespace!r}",
                )
            names = set()
        await self._remove_records(workflow_id, run_id, names)
        if self.visibility is not None:
            await self.visibility.forget(workflow_id, run_id)
        self._cache.pop(run_id, None)
        log.info(
            "removed closed run %s of %s (%s)",
            run_id,
            workflow_id,
            "retention over" if expire else "deleted on request",
            extra={"workflow_id": workflow_id, "run_id": run_id},
        )
        return None

    async def _remove_records(self, workflow_id: str, run_id: str, names: set[str]) -> None:
        lay = self.layout
        runs = lay.runs_bucket
        await purge(self.nc, f"KV_{runs}", f"$KV.{runs}.{lay.status_key(workflow_id, run_id)}")
        act = lay.activity_bucket
        await purge(self.nc, f"KV_{act}", f"$KV.{act}.*.{run_id}.>")
        await purge(self.nc, lay.stream, lay.payload_refs_of_run(run_id))
        grace = self.options.payload_grace
        await collect_released(self.pub, lay, names, grace=grace, now=time.time())
        await purge(self.nc, lay.stream, lay.expiry(run_id))
        await purge(self.nc, lay.stream, lay.history(workflow_id, run_id))
