"""Payload objects against the garbage collector: what a run, a schedule or an attempt still
needs is not deleted, and what nothing holds any more goes (no marker outlives its holder).

The tests marked ``xfail(strict=True)`` show holes still open: each names the hole."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.payload_meta import newest_record
from durablefuture.transport.stored import leader_get
from tests.conftest import Daemons, wait_for

pytestmark = pytest.mark.asyncio


def _name(value: object) -> str:
    """The payload object a plain JSON value travels in (no codec)."""
    return hashlib.sha256(orjson.dumps(value)).hexdigest()


async def _stored(env: LocalEnvironment, name: str) -> bool:
    client = env.client
    return await newest_record(client.pub.nc, client.layout.payloads_bucket, name) is not None


async def _held(env: LocalEnvironment, name: str) -> bool:
    """Whether any marker (a run's, a schedule's) holds object ``name``."""
    client = env.client
    lay = client.layout
    found = await leader_get(
        client.pub.nc, lay.stream, {"last_by_subj": lay.payload_refs(name)}, "", 5.0
    )
    return found is not None


async def _sweeps(env: LocalEnvironment, more: int) -> None:
    """Wait until the janitor has swept ``more`` times from now."""
    server = env.server
    assert server is not None
    target = server.stats["payload_sweeps"] + more
    await wait_for(lambda: server.stats["payload_sweeps"] >= target, timeout=30)


# -- heartbeat details ---------------------------------------------------------------------

HB = "h" * (300 * 1024)  # over the claim threshold: the details travel by reference
RESCUE = False
"""True in the test's process: its worker, taking over from the killed one, reports what the
attempt it was given saw."""


def checkpointed() -> list[int]:
    info = df.activity_info()
    if RESCUE:
        details = info.heartbeat_details
        return [info.attempt, len(details[0]) if details else 0]  # type: ignore[arg-type]
    while True:  # a long attempt whose checkpoint does not change
        df.heartbeat(HB)
        time.sleep(0.1)


def runs_checkpointed():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=600),
        heartbeat_timeout=timedelta(seconds=2),
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=5),
    )
    return (yield df.activity(checkpointed, options=opts))


@pytest.mark.xfail(
    strict=True,
    reason="heartbeat details stored by reference are held by nothing (the KV entry marks no "
    "object, and a worker re-sending unchanged details does not put them again): swept while "
    "the attempt still heartbeats them; the heartbeat timeout of its killed worker is then "
    "refused (MissingPayloadError, dead-lettered: server/missing_payloads.py has no case for "
    "FireTimer) and the next attempt gets no details",
)
async def test_heartbeat_details_of_a_long_attempt_reach_the_next_attempt_after_sigkill(
    tmp_path: Path,
) -> None:
    global RESCUE
    options = ServerOptions(payload_grace=1.0, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        daemons = Daemons(tmp_path, env.nats_url)
        mod = __name__
        try:
            worker = daemons.worker(
                "--workflows",
                f"{mod}:runs_checkpointed",
                "--activities",
                f"{mod}:checkpointed",
                "--activity-lease",
                "30",  # the heartbeat timeout, not the lease, ends the killed attempt
                task_queue="hb",
            )
            handle = await env.client.start_workflow(runs_checkpointed, id="hb", task_queue="hb")
            name = _name(HB)
            await wait_for(lambda: _stored(env, name), timeout=60)
            # the attempt goes on heartbeating the same details; the sweep takes their object
            await wait_for(lambda: _gone(env, name), timeout=30)
            assert worker.proc is not None and worker.proc.poll() is None, "still heartbeating"
            worker.kill()
            RESCUE = True
            rescuer = env.worker(
                task_queue="hb", workflows=[runs_checkpointed], activities=[checkpointed]
            )
            async with rescuer:
                # the heartbeat timeout is recorded, and attempt 2 gets the last details
                assert await handle.result(timeout=60) == [2, len(HB)]
        finally:
            RESCUE = False
            daemons.stop_all()


async def _gone(env: LocalEnvironment, name: str) -> bool:
    return not await _stored(env, name)


# -- schedules -----------------------------------------------------------------------------

ARG = "s" * (300 * 1024)


def echo_len(text: str):  # type: ignore[no-untyped-def]
    return len(text)
    yield  # a workflow


@pytest.mark.xfail(
    strict=True,
    reason="deleting a schedule leaves its markers (df.<ns>.ref.<object>.s<hash>): the "
    "objects of its arguments are kept for good (server/schedules.py, kind == 'delete')",
)
async def test_deleting_a_schedule_releases_the_objects_of_its_arguments() -> None:
    options = ServerOptions(
        payload_grace=0.5, status_delay=0, schedules=ScheduleOptions(poll_interval=0.5)
    )
    async with LocalEnvironment(server_options=options) as env:
        sched = df.Schedule(
            action=df.ScheduleStartWorkflow(echo_len, ARG, id_prefix="job", task_queue="sq"),
            spec=df.ScheduleSpec(intervals=[df.Interval(every=3600)]),
            paused=True,
        )
        handle = await env.client.create_schedule("s", sched)
        name = _name(ARG)
        assert await _stored(env, name) and await _held(env, name)
        await handle.delete()
        await _sweeps(env, 2)  # each past the grace: nothing else names the object
        assert not await _held(env, name), "the deleted schedule's marker is still there"
        assert not await _stored(env, name)


# -- refused starts ------------------------------------------------------------------------

FIRST = "f" * (300 * 1024)
SECOND = "g" * (300 * 1024)


def waiting_echo(text: str):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go")
    return len(text)


@pytest.mark.xfail(
    strict=True,
    reason="a start first tries to create a run without looking (server/starts.py "
    "_start_locked, attempt 0): _create_run marks the objects for a fresh run id before the "
    "append's id check fails, and that marker of a run that never exists is never purged",
)
async def test_a_start_refused_as_already_started_leaves_no_marker_behind() -> None:
    options = ServerOptions(payload_grace=0.5, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(workflows=[waiting_echo]):
            handle = await client.start_workflow(waiting_echo, FIRST, id="w")
            with pytest.raises(df.WorkflowAlreadyStartedError):
                await client.start_workflow(waiting_echo, SECOND, id="w")
            await handle.signal("go")
            assert await handle.result(timeout=30) == len(FIRST)
            # the run that exists holds the first argument, and only it
            assert await _held(env, _name(FIRST))
            await handle.delete()  # and then it is removed: no run of "w" is left
        name = _name(SECOND)
        await _sweeps(env, 2)  # each past the grace
        assert not await _held(env, name), "a marker of a run that never existed holds it"
        assert not await _stored(env, name)
