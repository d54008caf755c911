"""One activity attempt as it runs on a worker.

Sync functions run in the worker's thread pool, async ones on its event loop. While the attempt
runs, its start-to-close, schedule-to-close and heartbeat timeouts are enforced here, its lease
is renewed (a sign of life for other workers given a copy of its task), its heartbeats are
flushed to the activity bucket, and it is reported as started once it runs for a while (the
server then enforces its timeouts with durable timers too). Its outcome is a report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from durablefuture.activity_context import (
    ActivityContext,
    ActivityInfo,
    info_for,
    reset_activity_context,
    set_activity_context,
)
from durablefuture.codec.envelope import is_claim
from durablefuture.codec.heartbeats import encode_heartbeat
from durablefuture.codec.payloads import JsonPayloads
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition
from durablefuture.core.effects import ActivityTask
from durablefuture.core.errors import CancelledError, PayloadError, TransportError
from durablefuture.core.failure import Failure, FailureKind, failure_from_exception
from durablefuture.core.types import JsonValue
from durablefuture.transport.activity_bucket import ActivityBucket
from durablefuture.transport.messages import Msg
from durablefuture.transport.payload_meta import TOUCH_AFTER
from durablefuture.worker.handover import Handover
from durablefuture.worker.options import WorkerOptions
from durablefuture.worker.reports import Reports

__all__ = ["Attempt"]

log = logging.getLogger("durablefuture.worker")

CANCEL_CHECK_EVERY = 0.5
"""Seconds between two looks at a running attempt's cancel request (one KV read each)."""
CANCEL_GRACE = 0.3
"""Seconds a cancelled async activity has to stop by itself (its df.heartbeat() raises)
before asyncio.CancelledError is raised at its current await."""


class Attempt:
    """One activity attempt: run it, keep its lease, enforce timeouts, flush heartbeats."""

    def __init__(
        self,
        task: ActivityTask,
        definition: ActivityDefinition,
        msg: Msg,
        *,
        payloads: JsonPayloads,
        reports: Reports,
        handover: Handover,
        bucket: ActivityBucket | None,
        executor: Executor,
        identity: str,
        options: WorkerOptions,
        seal: Callable[[list[JsonValue]], Awaitable[list[JsonValue]]] | None = None,
        claim_after: float | None = None,
    ) -> None:
        self.payloads = payloads
        self.claim_after = claim_after
        """An attempt granted to this worker (no stored task, no lease yet): claim its lease
        only if it still runs this many seconds after it started (``worker/eager.py``)."""
        self.seal = seal
        """Encodes heartbeat details with the payload codec, large ones stored by reference
        (records outside engine messages)."""
        self._sealed: tuple[list[JsonValue], list[JsonValue], float] | None = None
        """The last details sealed, what they became, and when (``time.monotonic()``):
        unchanged details are not stored again at each flush, only once their last put is
        older than ``TOUCH_AFTER`` (a touch: nothing else holds the objects of a running
        attempt's details, see ``transport/payload_gc.py``)."""
        self.reports = reports
        self.handover = handover
        self.bucket = bucket
        self.executor = executor
        self.identity = identity
        self.options = options
        self.task = task
        self.d = definition
        self.msg = msg
        self.clock = options.clock
        self.started = self.clock.now()
        self.details: tuple[object, ...] = tuple(task.heartbeat_details)
        self.last_heartbeat = self.started
        self.dirty = False
        self.cancelled = False
        opts = task.options
        deadlines: list[tuple[float, str]] = []
        if opts.start_to_close_timeout is not None:
            deadlines.append((self.started + opts.start_to_close_timeout, "start_to_close"))
        if opts.schedule_to_close_timeout is not None:
            deadlines.append(
                (task.scheduled_at + opts.schedule_to_close_timeout, "schedule_to_close")
            )
        self.deadline = min(deadlines) if deadlines else None

    def _info(self) -> ActivityInfo:
        return info_for(self.task, self.started)

    def _on_heartbeat(self, details: tuple[object, ...]) -> None:
        self.last_heartbeat = self.clock.now()
        if details:
            self.details = details
        self.dirty = True

    def _timeout(self, kind: str, message: str) -> inp.RunInput:
        failure = Failure(
            message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=kind
        )
        return inp.FailActivityTask(
            self.task.run_id, self.task.seq, self.task.attempt, failure, self._details()
        )

    def _details(self) -> tuple[JsonValue, ...]:
        payloads = self.payloads
        try:
            return tuple(payloads.to_payload(d, "heartbeat detail") for d in self.details)
        except Exception:
            return tuple(repr(d) for d in self.details)

    async def run(self) -> inp.RunInput:
        t = self.task
        payloads = self.payloads
        try:
            args = self.d.structure_args(payloads, t.args)
        except Exception as exc:
            failure = failure_from_exception(exc)
            message = failure.message  # a PayloadError names the argument and the activity
            if not isinstance(exc, PayloadError):
                message = f"cannot decode the arguments of activity {t.name!r}: {message}"
            failure = Failure(
                message=message,
                type=failure.type,
                non_retryable=True,
            )
            return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure)
        ctx = ActivityContext(self._info(), self._on_heartbeat, lambda: self.cancelled)
        job = self._launch(ctx, args)
        opts = t.options
        lease = self.options.activity_lease
        report_after = (
            0.0
            if opts.schedule_to_start_timeout is not None or opts.heartbeat_timeout is not None
            else self.options.started_report_after
        )
        reported = False
        report_at = self.started + report_after
        last_lease = time.monotonic()
        last_flush = 0.0
        flush_every = max(0.2, opts.heartbeat_timeout * 0.5) if opts.heartbeat_timeout else 2.0
        tick = min(0.5, lease / 4)
        if opts.heartbeat_timeout:
            tick = min(tick, max(0.05, opts.heartbeat_timeout / 4))
        next_cancel_check = time.monotonic() + CANCEL_CHECK_EVERY
        cancel_sent = False
        cancel_seen = 0.0
        first = self.d.is_async
        unclaimed = self.claim_after is not None
        claim_at = time.monotonic() + (self.claim_after or 0.0)
        try:
            while True:
                if time.monotonic() >= next_cancel_check:
                    # a cancellation reaches the attempt whether or not it sends heartbeats
                    next_cancel_check = time.monotonic() + CANCEL_CHECK_EVERY
                    await self._check_cancelled()
                if self.cancelled and self.d.is_async and not cancel_sent:
                    # its next df.heartbeat() raises df.CancelledError; if it has not stopped
                    # a moment later, asyncio.CancelledError at its current await (once)
                    cancel_seen = cancel_seen or time.monotonic()
                    if time.monotonic() - cancel_seen >= CANCEL_GRACE:
                        cancel_sent = True
                        job.cancel()
                now = self.clock.now()
                if not reported and now >= report_at:
                    try:
                        await self.reports.send(
                            t.workflow_id,
                            inp.ReportActivityStarted(t.run_id, t.seq, t.attempt, self.identity),
                        )
                        reported = True
                    except TransportError as exc:  # NATS is away: the attempt runs on
                        log.debug("could not report activity %s started: %s", t.seq, exc)
                        report_at = self.clock.now() + 1.0
                wait = tick
                if not reported:
                    wait = min(wait, max(0.0, report_at - now))
                if self.deadline is not None:
                    wait = min(wait, max(0.0, self.deadline[0] - now))
                if cancel_seen and not cancel_sent:
                    wait = min(wait, 0.05)
                if unclaimed:
                    wait = min(wait, max(0.0, claim_at - time.monotonic()))
                if first:
                    # an async activity that awaits nothing is done after its first step: one
                    # turn of the event loop tells, before a timer is armed for the wait
                    first = False
                    await asyncio.sleep(0)
                if await _finished(job, wait):
                    break
                now = self.clock.now()
                if self.deadline is not None and now >= self.deadline[0]:
                    job.cancel()
                    kind = self.deadline[1]
                    limit = (
                        opts.start_to_close_timeout
                        if kind == "start_to_close"
                        else opts.schedule_to_close_timeout
                    )
                    return self._timeout(
                        kind,
                        f"attempt {t.attempt} of activity {t.name!r} did not finish within its "
                        f"{kind}_timeout of {limit:g}s",
                    )
                if opts.heartbeat_timeout and now - self.last_heartbeat >= opts.heartbeat_timeout:
                    job.cancel()
                    return self._timeout(
                        "heartbeat",
                        f"attempt {t.attempt} of activity {t.name!r} sent no heartbeat for "
                        f"{opts.heartbeat_timeout:g}s (its heartbeat_timeout)",
                    )
                if unclaimed:
                    if time.monotonic() >= claim_at and await self._claim_late():
                        unclaimed = False
                        last_lease = time.monotonic()
                elif time.monotonic() - last_lease >= lease / 4:
                    last_lease = time.monotonic()
                    with contextlib.suppress(Exception):
                        await self.msg.in_progress()
                    await self.handover.renew(t)  # a sign of life for other workers
                if (self.dirty and now - last_flush >= flush_every) or self._touch_due():
                    last_flush = now
                    self.dirty = False
                    await self._flush()
        except asyncio.CancelledError:
            job.cancel()
            raise
        if self.dirty:
            with contextlib.suppress(Exception):
                await self._flush()
        return self._outcome(job)

    async def _claim_late(self) -> bool:
        """Claim the lease of a granted attempt still running (its check list then finds it
        alive); False if NATS is away (tried again at the next tick)."""
        t = self.task
        try:
            holder = await self.handover.claim(t)
        except Exception as exc:
            log.debug("could not claim the lease of activity %s: %s", t.seq, exc)
            return False
        if holder is not None and holder.holder != self.identity:
            log.warning(
                "attempt %d of activity %s (#%d of run %s), granted to this worker, has its "
                "lease held by %s",
                t.attempt,
                t.name,
                t.seq,
                t.run_id,
                holder.holder,
                extra={"workflow_id": t.workflow_id, "run_id": t.run_id},
            )
        return True

    def _launch(self, ctx: ActivityContext, args: list[object]) -> asyncio.Future[Any]:
        fn = self.d.fn
        loop = asyncio.get_running_loop()
        if self.d.is_async:

            async def call() -> Any:
                token = set_activity_context(ctx)
                try:
                    return await fn(*args)  # type: ignore[misc]
                finally:
                    reset_activity_context(token)

            return asyncio.ensure_future(call())

        def call_sync() -> Any:
            token = set_activity_context(ctx)
            try:
                return fn(*args)
            finally:
                reset_activity_context(token)

        return loop.run_in_executor(self.executor, call_sync)

    async def _check_cancelled(self) -> None:
        if self.cancelled or self.bucket is None:
            return
        try:
            if await self.bucket.cancel_requested(self.task.run_id, self.task.seq):
                self.cancelled = True
        except Exception as exc:  # NATS away: look again next time
            log.debug("cannot read the cancel request of activity %s: %s", self.task.seq, exc)

    async def _flush(self) -> None:
        bucket = self.bucket
        if bucket is None:
            return
        t = self.task
        try:
            details = await self._sealed_details()
        except TransportError as exc:  # large details not stored: the next flush tries again
            log.debug("heartbeat details not stored: %s", exc)
            return
        body = encode_heartbeat(t.attempt, self.last_heartbeat, details)
        try:
            await bucket.put_heartbeat(t.run_id, t.seq, body)
            if await bucket.cancel_requested(t.run_id, t.seq):
                self.cancelled = True
        except Exception as exc:
            log.debug("heartbeat flush failed: %s", exc)

    def _touch_due(self) -> bool:
        """Whether the details last flushed are to be stored again, changed or not (the
        flush re-seals them): some are stored by reference and their objects' last put is
        older than ``TOUCH_AFTER`` (small details have no object to keep)."""
        sealed = self._sealed
        return (
            sealed is not None
            and time.monotonic() - sealed[2] >= TOUCH_AFTER
            and any(is_claim(v) for v in sealed[1])
        )

    async def _sealed_details(self) -> list[JsonValue]:
        details = list(self._details())
        if self.seal is None:
            return details
        if self._sealed is None or self._sealed[0] != details or self._touch_due():
            at = time.monotonic()
            self._sealed = (details, await self.seal(details), at)
        return self._sealed[1]

    def _outcome(self, job: asyncio.Future[Any]) -> inp.RunInput:
        t = self.task
        exc = job.exception() if not job.cancelled() else CancelledError("activity cancelled")
        if exc is None:
            try:
                result = self.payloads.to_payload(job.result(), f"result of activity {t.name!r}")
            except Exception as bad:
                f = failure_from_exception(bad)
                failure = Failure(f.message, type=f.type, non_retryable=True, stack=f.stack)
                return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, self._details())
            return inp.CompleteActivityTask(t.run_id, t.seq, t.attempt, result)
        enc_details = self.payloads

        def enc(details: tuple[object, ...]) -> tuple[JsonValue, ...]:
            return tuple(enc_details.to_payload(d, "error detail") for d in details)

        failure = failure_from_exception(exc, enc)
        return inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, self._details())


async def _finished(job: asyncio.Future[Any], timeout: float) -> bool:
    """Whether ``job`` is done within ``timeout`` seconds (it goes on if not): what
    ``asyncio.wait({job}, timeout=timeout)`` tells, without the sets and the second pass over
    them it makes on every call (once per tick of every attempt)."""
    if not job.done():
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def release(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        handle = asyncio.get_running_loop().call_later(timeout, release)
        job.add_done_callback(release)
        try:
            await waiter
        finally:
            handle.cancel()
            job.remove_done_callback(release)
    return job.done()
