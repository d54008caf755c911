"""How df-server steps a schedule cheaply without giving up exactness: it reuses the state
record it wrote last (a record another writer moved on fails the sequence check and is read
again), starts the actions in its own start path, and leaves an armed timer alone after steps
that are not the timer's own firing."""

from __future__ import annotations

from datetime import timedelta

from attrs import evolve

import durablefuture as df
from durablefuture.codec.schedules import ScheduleInput
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions, ScheduleService
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for


def quick(n: int):  # type: ignore[no-untyped-def]
    return n + 1
    yield  # a generator: a workflow


def hourly() -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(quick, 1, id_prefix="job", task_queue="sq"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=timedelta(hours=1))]),
        policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
    )


def env() -> LocalEnvironment:
    return LocalEnvironment(
        server_options=ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    )


def service(e: LocalEnvironment) -> ScheduleService:
    assert e.server is not None and e.server.schedules is not None
    return e.server.schedules


async def test_a_stale_cached_record_is_read_again_and_takes_no_action_twice() -> None:
    async with env() as e:
        handle = await e.client.create_schedule("c1", hourly())
        svc = service(e)
        cached = svc.states.get("c1")
        assert cached is not None
        state, seq = cached
        # another writer stores the record again (as another df-server's step would), while
        # this process still holds an older one whose last three hours look due
        data = svc.scodec.encode_state(state)
        latest = await svc.store.save("c1", data, seq)
        stale = evolve(state, processed_upto=state.processed_upto - 3 * 3600 - 1)
        svc.states.put("c1", stale, seq)

        await svc.handle(ScheduleInput("c1", "tick"))

        # the stale step's write failed its sequence check; the step from the latest record
        # found nothing due
        d = await handle.describe()
        assert d.actions_taken == 0 and d.running_actions == ()
        assert svc.states.get("c1") == (state, latest)


async def test_a_step_that_writes_nothing_confirms_its_cached_record() -> None:
    async with env() as e:
        handle = await e.client.create_schedule("c2", hourly())
        svc = service(e)
        cached = svc.states.get("c2")
        assert cached is not None
        state, seq = cached
        paused = evolve(state, schedule=evolve(state.schedule, paused=True, note="elsewhere"))
        await svc.store.save("c2", svc.scodec.encode_state(paused), seq)  # another writer
        assert svc.states.get("c2") == (state, seq)  # this process has not seen it

        await svc.handle(ScheduleInput("c2", "tick"))

        d = await handle.describe()
        assert d.paused and d.schedule.note == "elsewhere"
        again = svc.states.get("c2")
        assert again is not None and again[0].paused and again[1] > seq


async def test_steps_between_firings_leave_the_armed_timer_alone() -> None:
    async with env() as e, e.worker("sq", workflows=[quick]):
        handle = await e.client.create_schedule("c3", hourly())
        svc = service(e)
        await handle.trigger()  # an action now, stepped again when its run closes

        async def completed() -> bool:
            d = await handle.describe()
            return [a.status for a in d.recent_actions] == ["completed"]

        await wait_for(completed, timeout=20)
        d = await handle.describe()
        assert d.actions_taken == 1 and d.running_actions == ()
        [action] = d.recent_actions
        assert await e.client.get_workflow_handle(action.workflow_id).result() == 2
        [nxt] = [t.timestamp() for t in d.next_action_times[:1]]
        js, subject = svc.pub.js, svc.layout.schedule_timer("c3")
        msg = await js.get_last_msg(svc.layout.stream, subject)
        assert msg.data is not None
        due = svc.scodec.decode_input(msg.data).due
        # ALLOW_ALL: armed for the step that records the action ahead, or (recorded already,
        # when the hour is less than ``ahead`` away) for its fire time
        assert due in (nxt - svc.options.ahead, nxt)

        async def armed() -> int:
            msg = await js.get_last_msg(svc.layout.stream, subject)
            assert msg.headers is not None and msg.data is not None
            assert svc.scodec.decode_input(msg.data).due == due  # armed for the next step
            return int(msg.seq)

        before = await armed()
        for _ in range(3):  # steps that are not the timer's firing: the same wake-up
            await svc.handle(ScheduleInput("c3", "tick"))
        assert await armed() == before
        await svc.handle(ScheduleInput("c3", "tick", due=due))  # the timer's own firing
        assert await armed() > before
