"""Local activities: run in the workflow worker, inside the workflow task that issued them.

The replay leaves a ``df.local_activity`` pending (``WorkflowExecution.pending_local_activities``);
the workflow task runs each here, with its retry policy, and hands the outcome back
(``resolve_local``), which records it as one ``LocalActivityRecorded`` event with the task's
other decisions. No task queue round trip, no activity task; limits: a start_to_close_timeout of
at most 60 s per attempt and 60 s for all attempts, and at-least-once (a worker that dies before
the workflow task is recorded runs it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import cast

from durablefuture.core.commands import LocalActivityCall
from durablefuture.core.definitions import ActivityDefinition, PayloadConverter
from durablefuture.core.errors import NotRegisteredError
from durablefuture.core.failure import Failure, FailureKind, failure_from_exception
from durablefuture.core.options import ActivityOptions
from durablefuture.core.retry import decide_retry
from durablefuture.core.types import JsonValue

__all__ = ["MAX_LOCAL_SECONDS", "run_local_activity"]

MAX_LOCAL_SECONDS = 60.0
"""The longest a local activity may run, all attempts included."""


async def run_local_activity(
    item: LocalActivityCall,
    activities: Mapping[str, ActivityDefinition],
    payloads: PayloadConverter,
    *,
    executor: Executor | None = None,
    keep_alive: Callable[[], Awaitable[object]] | None = None,
    key: str = "",
) -> tuple[JsonValue, Failure | None, int]:
    """Run ``item`` to its outcome: ``(result payload, failure, attempts)``."""
    definition = _definition(item, activities)
    options = (item.options or ActivityOptions()).resolved("local")
    policy = options.retry_policy
    assert policy is not None and options.start_to_close_timeout is not None
    budget = min(options.schedule_to_close_timeout or MAX_LOCAL_SECONDS, MAX_LOCAL_SECONDS)
    began = time.time()
    attempt = 1
    while True:
        try:
            args = definition.structure_args(payloads, item.args)
            value = await _attempt(
                definition, args, options.start_to_close_timeout, executor, keep_alive
            )
            what = f"the result of local activity {item.name!r}"
            return payloads.to_payload(value, what), None, attempt
        except Exception as exc:
            failure = _failure(exc, options.start_to_close_timeout)
        decision = decide_retry(
            policy,
            failure,
            attempt,
            now=time.time(),
            scheduled_at=began,
            schedule_to_close_timeout=budget,
            jitter_key=f"{key}:{attempt}",
        )
        if not decision.retry:
            return None, failure, attempt
        await _wait(decision.delay, keep_alive)
        attempt += 1


def _definition(
    item: LocalActivityCall, activities: Mapping[str, ActivityDefinition]
) -> ActivityDefinition:
    if item.fn is not None:
        return ActivityDefinition.from_fn(item.fn)
    found = activities.get(item.name)
    if found is None:
        raise NotRegisteredError(
            f"local activity {item.name!r} was given by name but this worker registers no "
            f"activity of that name (it has {sorted(activities) or 'none'}); pass the function "
            "itself to df.local_activity, or register it with the worker"
        )
    return found


async def _attempt(
    definition: ActivityDefinition,
    args: list[object],
    timeout: float,
    executor: Executor | None,
    keep_alive: Callable[[], Awaitable[object]] | None,
) -> object:
    fn = definition.fn
    if definition.is_async:
        job: asyncio.Future[object] = asyncio.ensure_future(cast(Awaitable[object], fn(*args)))
    else:
        job = asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args))
    deadline = time.monotonic() + timeout
    while not job.done():
        left = deadline - time.monotonic()
        if left <= 0:
            job.cancel()  # a sync one runs on in its thread; its result is dropped
            raise _AttemptTimedOut(
                f"did not finish within its start_to_close_timeout of {timeout:g}s"
            )
        await asyncio.wait({job}, timeout=min(left, 1.0))
        if keep_alive is not None and not job.done():
            with contextlib.suppress(Exception):
                await keep_alive()
    return job.result()


class _AttemptTimedOut(Exception):
    """An attempt ran past its start_to_close_timeout (not an error the activity raised)."""


def _failure(exc: BaseException, timeout: float) -> Failure:
    failure = failure_from_exception(exc)
    if isinstance(exc, _AttemptTimedOut):
        return Failure(
            message=failure.message,
            type="TimeoutError",
            kind=FailureKind.TIMEOUT,
            timeout_type="start_to_close",
        )
    return failure


async def _wait(delay: float, keep_alive: Callable[[], Awaitable[object]] | None) -> None:
    end = time.monotonic() + delay
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 1.0))
        if keep_alive is not None:
            with contextlib.suppress(Exception):
                await keep_alive()
