"""df-server follows the closed notices of the runs its schedules watch, one subscription per
workflow id, and no other run's: a closed run that no schedule started sends df-server nothing
(before, every closed run's two notices reached it through one ``closed.>`` subscription)."""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from durablefuture.server.schedule_refresh import ClosedNotices
from tests.conftest import wait_for
from tests.integration.test_schedules import env, every_second, gated, quick

pytestmark = pytest.mark.asyncio


async def test_only_the_watched_actions_closed_notices_reach_df_server() -> None:
    async with env() as e, e.worker("sq", workflows=[quick, gated]):
        client = e.client
        layout = client.layout
        prefix = f"{layout.events_prefix}.closed."

        def followed() -> set[str]:
            subs = e.server.nc._subs.values()  # the real nats-py subscriptions of df-server
            return {s.subject for s in subs if s.subject.startswith(prefix)}

        assert await client.execute_workflow(quick, 1, id="plain", task_queue="sq") == 2
        assert followed() == set()  # no schedule watches anything: no subscription at all

        handle = await client.create_schedule("g", every_second(gated, df.Overlap.SKIP))

        async def running() -> list[str]:
            return [a.workflow_id for a in (await handle.describe()).running_actions]

        await wait_for(lambda: _one(running), timeout=20)
        (wid,) = await running()
        await wait_for(lambda: followed() == {layout.closed_notices(wid)}, timeout=10)

        await handle.pause()
        action = client.get_workflow_handle(wid)
        await action.signal("go")
        assert await action.result(timeout=30) == 1
        # the close steps the schedule (the fast path), which forgets the action
        await wait_for(lambda: followed() == set(), timeout=10)
        d = await handle.describe()
        assert [a.workflow_id for a in d.recent_actions if a.status == "completed"] == [wid]
        assert d.running_actions == ()


async def _one(running):  # type: ignore[no-untyped-def]
    return len(await running()) == 1


def _notices(e, got: list[str], most: int = 32) -> ClosedNotices:  # type: ignore[no-untyped-def]
    layout = e.client.layout
    tasks: set[object] = set()

    async def note(msg):  # type: ignore[no-untyped-def]
        got.append(msg.subject)

    def spawn(coro):  # type: ignore[no-untyped-def]
        t = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    every = f"{layout.events_prefix}.closed.>"
    return ClosedNotices(e.server.nc, layout.closed_notices, every, note, spawn, most=most)


async def _settled(notices: ClosedNotices, subjects: set[str]) -> None:
    await wait_for(lambda: notices.subjects() == subjects and not notices._syncing, timeout=10)


async def _send(nc, layout, wids: tuple[str, ...], run: str) -> None:  # type: ignore[no-untyped-def]
    await nc.flush()
    for wid in wids:
        await nc.publish(layout.closed_notice(wid, run), b"")
    await nc.flush()


async def test_closed_notices_follow_the_ids_given_last() -> None:
    async with env() as e:
        nc, layout, got = e.server.nc, e.client.layout, []
        notices = _notices(e, got)
        notices.follow({"a", "b"})
        notices.follow({"a", "b", "c"})  # while the first subscriptions are being made
        await _settled(notices, {layout.closed_notices(w) for w in "abc"})
        await _send(nc, layout, ("a", "x", "b", "c"), "r1")
        await wait_for(lambda: len(got) >= 3, timeout=10)
        await nc.flush()
        assert got == [layout.closed_notice(w, "r1") for w in ("a", "b", "c")]

        notices.follow({"c"})
        await _settled(notices, {layout.closed_notices("c")})
        got.clear()
        await _send(nc, layout, ("a", "b", "c"), "r2")
        await wait_for(lambda: len(got) >= 1, timeout=10)
        await nc.flush()
        assert got == [layout.closed_notice("c", "r2")]  # a and b: unsubscribed, never seen

        await notices.stop()
        assert notices.subjects() == set()
        notices.follow({"a"})  # after stop: nothing is subscribed again
        await nc.flush()
        assert notices.subjects() == set() and not notices._syncing


async def test_many_watched_runs_share_one_subscription_until_none_is_watched() -> None:
    async with env() as e:
        nc, layout, got = e.server.nc, e.client.layout, []
        every = f"{layout.events_prefix}.closed.>"
        notices = _notices(e, got, most=2)
        notices.follow({"a", "b"})
        await _settled(notices, {layout.closed_notices("a"), layout.closed_notices("b")})
        notices.follow({"a", "b", "c"})  # more than 2: every run's notices, one subscription
        await _settled(notices, {every})
        await _send(nc, layout, ("x", "c"), "r1")
        await wait_for(lambda: len(got) >= 2, timeout=10)
        assert got == [layout.closed_notice("x", "r1"), layout.closed_notice("c", "r1")]
        notices.follow({"c"})  # kept while any run is watched (no switching back and forth)
        await nc.flush()
        await _settled(notices, {every})
        notices.follow(())
        await _settled(notices, set())
        got.clear()
        await _send(nc, layout, ("c",), "r2")
        notices.follow({"d"})
        await _settled(notices, {layout.closed_notices("d")})
        await _send(nc, layout, ("c", "d"), "r3")
        await wait_for(lambda: len(got) >= 1, timeout=10)
        await nc.flush()
        assert got == [layout.closed_notice("d", "r3")]
        await notices.stop()
