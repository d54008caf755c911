"""Stopping a background task for sure.

On Python 3.11 a cancellation can be lost: ``asyncio.wait_for`` (used by nats-py's requests,
subscriptions and KV watches) returns the inner result instead of raising ``CancelledError``
when the inner future completes in the same loop turn as the cancel (CPython gh-86296, fixed in
3.12). A task whose one cancel was swallowed that way goes on to its next await, a KV watch's
next update for instance, and a shutdown awaiting it waits forever: a daemon that neither works
nor exits. :func:`cancel_and_wait` cancels again until the task has ended, within a bound.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)

AGAIN_AFTER = 0.5
"""Seconds to wait for a cancelled task before cancelling it again."""
TRIES = 20
"""Cancels at most (about 10 s in all); then the task is left behind, with a warning."""


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Task[None], what: str) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again each ``AGAIN_AFTER``
    seconds while it goes on (a swallowed cancellation); its outcome is retrieved and
    dropped. ``what`` names it in the warning logged if it outlives every try."""
    for _ in range(TRIES):
        if task.done():
            break
        task.cancel()
        await asyncio.wait([task], timeout=AGAIN_AFTER)
    if not task.done():
        log.warning("%s did not stop after %d cancellations; left behind", what, TRIES)
        return
    if not task.cancelled():
        _ = task.exception()  # retrieved: an error at the end of a stopped task is not news
