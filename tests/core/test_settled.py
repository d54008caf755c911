"""``transport.publisher.settled``: what ``asyncio.gather(*pending, return_exceptions=True)`` gives
for an input's PubAck futures, without gathering (pure asyncio, no NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from durablefuture.core.errors import TransportError
from durablefuture.transport.publisher import settled


def _same(a: object, b: object) -> bool:
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return type(a) is type(b) and str(a) == str(b)
    return a == b


async def _both(make: Callable[[], list[Awaitable[object]]]) -> tuple[list[object], list[object]]:
    ours = await settled(make())
    theirs = await asyncio.gather(*make(), return_exceptions=True)
    return ours, list(theirs)


@pytest.mark.parametrize(
    "plan",
    [
        [],
        ["ok"],
        ["ok", "late", "fail"],
        ["fail", "ok", "late-fail", "done"],
        ["done", "done-fail", "cancelled", "late"],
        ["coroutine", "late", "fail"],
    ],
)
def test_outcomes_in_order_like_gather(plan: list[str]) -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()

        def make() -> list[Awaitable[object]]:
            out: list[Awaitable[object]] = []
            for i, kind in enumerate(plan):
                if kind == "coroutine":

                    async def work(i: int = i) -> object:
                        await asyncio.sleep(0)
                        return f"coroutine {i}"

                    out.append(work())
                    continue
                f: asyncio.Future[object] = loop.create_future()
                if kind == "done":
                    f.set_result(i)
                elif kind == "done-fail":
                    f.set_exception(TransportError(f"refused {i}"))
                elif kind == "cancelled":
                    f.cancel()
                elif kind == "ok":
                    loop.call_soon(f.set_result, i)
                elif kind == "fail":
                    loop.call_soon(f.set_exception, TransportError(f"no PubAck {i}"))
                elif kind == "late":
                    loop.call_later(0.01, f.set_result, i)
                elif kind == "late-fail":
                    loop.call_later(0.01, f.set_exception, TransportError(f"late {i}"))
                out.append(f)
            return out

        ours, theirs = await _both(make)
        assert len(ours) == len(theirs) == len(plan)
        for a, b in zip(ours, theirs, strict=True):
            assert _same(a, b), (a, b)

    asyncio.run(go())


def test_waits_for_every_outcome_before_returning() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[object] = loop.create_future()
        second: asyncio.Future[object] = loop.create_future()
        loop.call_soon(first.set_exception, TransportError("first"))
        loop.call_later(0.02, second.set_result, 2)
        results = await settled([first, second])
        assert second.done()
        assert isinstance(results[0], TransportError) and results[1] == 2

    asyncio.run(go())


def test_a_coroutine_runs_alongside_the_futures() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        blocker: asyncio.Future[object] = loop.create_future()

        async def reindex() -> str:
            ran.append("reindex")
            blocker.set_result("unblocked")  # the first future waits for it
            return "indexed"

        results = await asyncio.wait_for(settled([blocker, reindex()]), 1.0)
        assert results == ["unblocked", "indexed"] and ran == ["reindex"]

    asyncio.run(go())


def test_cancelling_the_wait_cancels_every_pending_future() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[object]] = [loop.create_future() for _ in range(3)]
        futures[0].set_result(0)
        waiting = asyncio.create_task(settled(list(futures)))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert futures[0].result() == 0
        assert futures[1].cancelled() and futures[2].cancelled()

    asyncio.run(go())


def test_a_future_cancelled_by_someone_else_is_an_outcome() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        a: asyncio.Future[object] = loop.create_future()
        b: asyncio.Future[object] = loop.create_future()
        loop.call_soon(a.cancel)
        loop.call_later(0.01, b.set_result, "b")
        results = await settled([a, b])
        assert isinstance(results[0], asyncio.CancelledError) and results[1] == "b"

    asyncio.run(go())
