"""A background task whose cancellation is swallowed once (as ``asyncio.wait_for`` does on
Python 3.11 when its inner future completes in the same turn) is still stopped."""

from __future__ import annotations

import asyncio

from durablefuture.transport.stopping import cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()  # a watch's next update, never coming
            except asyncio.CancelledError:
                if swallowed < 2:
                    swallowed += 1  # lost, as in wait_for's race: go on to the next await
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, "a stubborn task"), 10)
    assert task.cancelled()
    assert swallowed == 2


async def test_a_task_that_never_ends_is_left_behind_with_a_warning(caplog: object) -> None:
    import logging

    from durablefuture.transport import stopping

    deaf_until = asyncio.Event()

    async def deaf() -> None:
        while not deaf_until.is_set():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    old = stopping.AGAIN_AFTER, stopping.TRIES
    stopping.AGAIN_AFTER, stopping.TRIES = 0.01, 3
    try:
        with caplog.at_level(logging.WARNING):  # type: ignore[attr-defined]
            await cancel_and_wait(task, "a deaf task")
    finally:
        stopping.AGAIN_AFTER, stopping.TRIES = old
    assert not task.done()
    assert "a deaf task did not stop after 3 cancellations" in caplog.text  # type: ignore[attr-defined]
    deaf_until.set()  # the test's own clean-up: the next cancel ends it
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


async def test_a_task_that_ended_by_itself_is_left_as_it_is() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait(task, "a finished task")
    assert task.result() == 1
