"""Activity attempts in the Simulation: run for real, timed on the simulated clock.

An attempt runs as a worker runs it: ``df.activity_info()`` describes it (the previous
attempt's heartbeat details included), ``df.heartbeat()`` records progress, and its
start-to-close, schedule-to-close and heartbeat timeouts end it the way the worker ends it (a
timeout failure carrying the latest heartbeat details). How long it takes, in simulated time:

* an **async** activity runs on a :class:`~durablefuture.testing._virtual_loop.VirtualLoop`:
  ``await asyncio.sleep(x)`` takes ``x`` simulated seconds and no real time, and timeouts fall
  on that clock (a 0.3 s sleep against a 0.1 s start-to-close times out at 0.1 s);
* a **sync** activity takes no simulated time, but the wall-clock time it runs counts towards
  its own timeouts: one that blocks past its deadline times out at its deadline, as on a worker.

Real code is waited for, never interrupted: the simulation cannot stop a sync activity or a
thread (``asyncio.to_thread``) half-way, so one that blocks for ever blocks the test, and a
thread's wall time counts neither as simulated time nor towards an async activity's timeouts.

The attempt runs to its end when the simulation starts it; :class:`AttemptRun` says what it
reported, how long it took and when it heartbeated, and the simulation delivers the report at
that simulated time (after any timer due earlier). Activities never see a cancellation
request here (``df.heartbeat`` does not raise): test that with ``LocalEnvironment``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from attrs import define, field

from durablefuture.activity_context import (
    ActivityContext,
    info_for,
    reset_activity_context,
    set_activity_context,
)
from durablefuture.codec.payloads import JsonPayloads
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import ActivityDefinition
from durablefuture.core.effects import ActivityTask
from durablefuture.core.errors import PayloadError
from durablefuture.core.failure import Failure, FailureKind, failure_from_exception
from durablefuture.core.types import JsonValue
from durablefuture.testing._virtual_loop import VirtualLoop

__all__ = ["AttemptRun", "Beat", "run_attempt"]

Beat = tuple[float, tuple[JsonValue, ...]]
"""A heartbeat: simulated seconds since the attempt started, and the details as encoded."""


@define
class AttemptRun:
    """What one attempt did: its report, how long it took (simulated) and its heartbeats."""

    report: inp.RunInput
    took: float = 0.0
    beats: list[Beat] = field(factory=list)


def run_attempt(
    task: ActivityTask,
    definition: ActivityDefinition | None,
    payloads: JsonPayloads,
    started: float,
    known: Sequence[str] = (),
) -> AttemptRun:
    """Run attempt ``task`` of ``definition``, started at simulated time ``started``."""
    t = task
    if definition is None:
        failure = Failure(
            f"activity {t.name!r} is not registered; registered: {sorted(known)}",
            type="ActivityNotRegistered",
        )
        return AttemptRun(inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure))
    try:
        args = definition.structure_args(payloads, t.args)
    except Exception as exc:  # as the worker reports it: arguments never fit on a retry
        f = failure_from_exception(exc)
        message = f.message
        if not isinstance(exc, PayloadError):
            message = f"cannot decode the arguments of activity {t.name!r}: {message}"
        failure = Failure(message=message, type=f.type, non_retryable=True)
        return AttemptRun(inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure))
    return _Attempt(task, payloads, started).run(definition, args)


class _Attempt:
    def __init__(self, task: ActivityTask, payloads: JsonPayloads, started: float) -> None:
        self.task = task
        self.payloads = payloads
        self.started = started
        self.clock: Callable[[], float] = lambda: 0.0  # seconds since the attempt started
        self.details: tuple[object, ...] = tuple(task.heartbeat_details)
        self.beats: list[Beat] = []
        opts = task.options
        limits: list[tuple[float, str]] = []
        if opts.start_to_close_timeout is not None:
            limits.append((opts.start_to_close_timeout, "start_to_close"))
        if opts.schedule_to_close_timeout is not None:
            left = task.scheduled_at + opts.schedule_to_close_timeout - started
            limits.append((max(0.0, left), "schedule_to_close"))
        self.deadline = min(limits) if limits else None
        self.heartbeat_timeout = opts.heartbeat_timeout

    def _on_heartbeat(self, details: tuple[object, ...]) -> None:
        if details:
            self.details = details
        self.beats.append((self.clock(), self._encoded()))

    def _encoded(self) -> tuple[JsonValue, ...]:
        try:
            return tuple(self.payloads.to_payload(d, "heartbeat detail") for d in self.details)
        except Exception:
            return tuple(repr(d) for d in self.details)

    def _context(self) -> ActivityContext:
        return ActivityContext(info_for(self.task, self.started), self._on_heartbeat, _never)

    def run(self, definition: ActivityDefinition, args: Sequence[object]) -> AttemptRun:
        if definition.is_async:
            return self._run_async(definition.fn, args)
        return self._run_sync(definition.fn, args)

    # ------------------------------------------------------------------ sync: timed by the wall

    def _run_sync(self, fn: Callable[..., object], args: Sequence[object]) -> AttemptRun:
        began = time.monotonic()
        self.clock = lambda: time.monotonic() - began
        token = set_activity_context(self._context())
        value: object = None
        error: BaseException | None = None
        try:
            value = fn(*args)
        except Exception as exc:
            error = exc
        finally:
            reset_activity_context(token)
        ended = self.clock()
        expired = self._first_expiry(ended)
        if expired is not None:
            return self._timed_out(*expired)
        return self._finished(value, error, took=0.0)

    def _first_expiry(self, ended: float) -> tuple[float, str] | None:
        """When (and which) timeout ended a sync attempt that ran ``ended`` seconds, if any."""
        found: list[tuple[float, str]] = []
        if self.deadline is not None and ended >= self.deadline[0]:
            found.append(self.deadline)
        hb = self.heartbeat_timeout
        if hb is not None:
            marks = [0.0, *(at for at, _ in self.beats), ended]
            for a, b in itertools.pairwise(marks):
                if b - a >= hb:
                    found.append((a + hb, "heartbeat"))
                    break
        return min(found) if found else None

    # ------------------------------------------------------------------ async: simulated time

    def _run_async(self, fn: Callable[..., Any], args: Sequence[object]) -> AttemptRun:
        def main() -> AttemptRun:
            loop = VirtualLoop()
            self.clock = loop.time
            try:
                return loop.run_until_complete(self._supervise(fn(*args)))
            finally:
                _close(loop)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return main()
        # driven from a running loop (an async test): the simulated one runs in a thread
        context = contextvars.copy_context()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sim-activity") as pool:
            return pool.submit(context.run, main).result()

    async def _supervise(self, coro: Coroutine[Any, Any, object]) -> AttemptRun:
        """Await the activity, ending it at its first timeout (as the worker does)."""
        loop = asyncio.get_running_loop()
        context = self._context()

        async def call() -> object:
            token = set_activity_context(context)
            try:
                return await coro
            finally:
                reset_activity_context(token)

        job = asyncio.ensure_future(call())
        while not job.done():
            limits = [] if self.deadline is None else [self.deadline]
            if self.heartbeat_timeout is not None:
                last = self.beats[-1][0] if self.beats else 0.0
                limits.append((last + self.heartbeat_timeout, "heartbeat"))
            if not limits:
                await asyncio.wait({job})
                break
            at, kind = min(limits)
            if loop.time() >= at:
                job.cancel()
                return self._timed_out(at, kind)
            await asyncio.wait({job}, timeout=at - loop.time())
        error = None if job.cancelled() else job.exception()
        value = None if error is not None or job.cancelled() else job.result()
        if job.cancelled():
            error = asyncio.CancelledError("the activity was cancelled")
        return self._finished(value, error, took=loop.time())

    # ------------------------------------------------------------------ reports

    def _finished(self, value: object, error: BaseException | None, took: float) -> AttemptRun:
        t = self.task
        details = self._encoded()
        if error is None:
            try:
                result = self.payloads.to_payload(value, f"result of activity {t.name!r}")
            except Exception as bad:
                f = failure_from_exception(bad)
                failure = Failure(f.message, type=f.type, non_retryable=True, stack=f.stack)
                report: inp.RunInput = inp.FailActivityTask(
                    t.run_id, t.seq, t.attempt, failure, details
                )
            else:
                report = inp.CompleteActivityTask(t.run_id, t.seq, t.attempt, result)
            return AttemptRun(report, took, self.beats)

        def enc(values: tuple[object, ...]) -> tuple[JsonValue, ...]:
            return tuple(self.payloads.to_payload(d, "error detail") for d in values)

        failure = failure_from_exception(error, enc)
        return AttemptRun(
            inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, details), took, self.beats
        )

    def _timed_out(self, at: float, kind: str) -> AttemptRun:
        t, opts = self.task, self.task.options
        if kind == "heartbeat":
            message = (
                f"attempt {t.attempt} of activity {t.name!r} sent no heartbeat for "
                f"{opts.heartbeat_timeout:g}s (its heartbeat_timeout)"
            )
        else:
            limit = (
                opts.start_to_close_timeout
                if kind == "start_to_close"
                else opts.schedule_to_close_timeout
            )
            message = (
                f"attempt {t.attempt} of activity {t.name!r} did not finish within its "
                f"{kind}_timeout of {limit:g}s"
            )
        failure = Failure(
            message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=kind
        )
        beats = [b for b in self.beats if b[0] <= at]
        details = beats[-1][1] if beats else tuple(self.task.heartbeat_details)
        report = inp.FailActivityTask(t.run_id, t.seq, t.attempt, failure, details)
        return AttemptRun(report, at, beats)


def _never() -> bool:
    return False


def _close(loop: VirtualLoop) -> None:
    """Close ``loop`` as ``asyncio.run`` does: cancel what is left (an attempt abandoned at its
    timeout), then finish async generators and the thread pool."""
    try:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
