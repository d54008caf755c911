"""Payload objects against the garbage collector: what a run, a schedule or an attempt still
needs is not deleted, and what nothing holds any more goes (no marker outlives its holder):
heartbeat details of a long attempt, a deleter frozen or killed mid-deletion, dead letters'
bodies, chunks of an upload killed before its record, markers of deleted schedules and of
starts that created no run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.payload_gc import ORIGINAL_HEADER
from durablefuture.transport.payload_meta import newest_record, purge_object
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.stored import leader_get
from tests.conftest import ROOT, Daemon, Daemons, connected, wait_for

pytestmark = pytest.mark.asyncio


def _name(value: object) -> str:
    """The payload object a plain JSON value travels in (no codec)."""
    return hashlib.sha256(orjson.dumps(value)).hexdigest()


async def _stored(client: df.Client, name: str) -> bool:
    return await newest_record(client.pub.nc, client.layout.payloads_bucket, name) is not None


async def _held(env: LocalEnvironment, name: str) -> bool:
    """Whether any marker (a run's, a schedule's) holds object ``name``."""
    return bool(await _holder(env, name))


async def _holder(env: LocalEnvironment, name: str) -> str:
    """The holder of the newest marker of object ``name`` ("" if none)."""
    client = env.client
    lay = client.layout
    found = await leader_get(
        client.pub.nc, lay.stream, {"last_by_subj": lay.payload_refs(name)}, "", 5.0
    )
    return "" if found is None else found.subject.rpartition(".")[2]


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


async def test_heartbeat_details_of_a_long_attempt_reach_the_next_attempt_after_sigkill(
    tmp_path: Path,
) -> None:
    """Nothing marks the object of a running attempt's details (the bucket entry is not a
    history message): its worker stores the unchanged details again once their last put is
    older than TOUCH_AFTER, so the sweep leaves them, and the attempt after a SIGKILL gets
    them. The grace here is a few seconds, TOUCH_AFTER half a second (``touching_worker``),
    as the default grace is to the default TOUCH_AFTER."""
    global RESCUE
    grace = 2.0
    options = ServerOptions(payload_grace=grace, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        daemons = Daemons(tmp_path, env.nats_url)
        mod = __name__
        try:
            worker = daemons.special(
                "worker",
                "tests.integration.touching_worker",
                *("--nats", env.nats_url, "--task-queue", "hb", "--workflow-task-timeout", "2"),
                *("--workflows", f"{mod}:runs_checkpointed"),
                *("--activities", f"{mod}:checkpointed"),
                # the heartbeat timeout, not the lease, ends the killed attempt
                *("--activity-lease", "30"),
            )
            handle = await env.client.start_workflow(runs_checkpointed, id="hb", task_queue="hb")
            name = _name(HB)
            await wait_for(lambda: _stored(env.client, name), timeout=60)
            first = await newest_record(env.client.pub.nc, env.client.layout.payloads_bucket, name)
            assert first is not None and first.stored_at is not None
            # sweeps well past the grace of the first put: the object is still there, put again
            while time.time() < first.stored_at + 3 * grace:
                await _sweeps(env, 1)
            newest = await newest_record(env.client.pub.nc, env.client.layout.payloads_bucket, name)
            assert newest is not None and newest.live, "the sweep took the details' object"
            assert newest.stored_at is not None and newest.stored_at > first.stored_at
            assert worker.proc is not None and worker.proc.poll() is None, "still heartbeating"
            worker.kill()
            RESCUE = True
            rescuer = env.worker(
                task_queue="hb", workflows=[runs_checkpointed], activities=[checkpointed]
            )
            async with rescuer:
                # the heartbeat timeout is recorded, and attempt 2 gets the last details
                assert await handle.result(timeout=60) == [2, len(HB)]
            [timed_out] = [
                e for e in await handle.fetch_history() if isinstance(e, ev.ActivityRetryScheduled)
            ]
            assert timed_out.failure.timeout_type == "heartbeat", timed_out.failure
        finally:
            RESCUE = False
            daemons.stop_all()


async def test_a_heartbeat_timeout_whose_details_are_gone_is_recorded_without_them(
    tmp_path: Path,
) -> None:
    """The details' object of a killed attempt went (purged here by hand): the server's
    heartbeat timeout is recorded without the details, not refused and dead-lettered, and the
    next attempt runs (from no checkpoint) and completes the run."""
    global RESCUE
    async with LocalEnvironment(server_options=ServerOptions(status_delay=0)) as env:
        client = env.client
        layout = client.layout
        daemons = Daemons(tmp_path, env.nats_url)
        mod = __name__
        try:
            worker = daemons.worker(
                *("--workflows", f"{mod}:runs_checkpointed"),
                *("--activities", f"{mod}:checkpointed"),
                *("--activity-lease", "30"),  # the heartbeat timeout ends the killed attempt
                task_queue="hb",
            )
            handle = await client.start_workflow(runs_checkpointed, id="hb", task_queue="hb")
            name = _name(HB)
            await wait_for(lambda: _stored(client, name), timeout=60)
            assert await purge_object(client.pub.nc, layout.payloads_bucket, name)
            assert not await _stored(client, name)
            assert worker.proc is not None and worker.proc.poll() is None, "still heartbeating"
            worker.kill()
            RESCUE = True
            rescuer = env.worker(
                task_queue="hb", workflows=[runs_checkpointed], activities=[checkpointed]
            )
            async with rescuer:
                # attempt 2 runs with no details: the lost checkpoint is dropped
                assert await handle.result(timeout=60) == [2, 0]
            [timed_out] = [
                e for e in await handle.fetch_history() if isinstance(e, ev.ActivityRetryScheduled)
            ]
            assert timed_out.failure.timeout_type == "heartbeat", timed_out.failure
            assert timed_out.heartbeat_details == ()
            dead = await leader_get(
                client.pub.nc,
                layout.stream,
                {"last_by_subj": layout.dead_letter("server-input")},
                "",
                5.0,
            )
            assert dead is None, "an input was dead-lettered"
        finally:
            RESCUE = False
            daemons.stop_all()


# -- schedules -----------------------------------------------------------------------------

ARG = "s" * (300 * 1024)


def echo_len(text: str):  # type: ignore[no-untyped-def]
    return len(text)
    yield  # a workflow


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
        assert await _stored(env.client, name) and await _held(env, name)
        await handle.delete()
        await _sweeps(env, 2)  # each past the grace: nothing else names the object
        assert not await _held(env, name), "the deleted schedule's marker is still there"
        assert not await _stored(env.client, name)


# -- refused starts ------------------------------------------------------------------------

FIRST = "f" * (300 * 1024)
SECOND = "g" * (300 * 1024)


def waiting_echo(text: str):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go")
    return len(text)


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
        assert not await _stored(env.client, name)


async def test_a_reused_workflow_id_leaves_no_marker_behind_its_removed_runs() -> None:
    options = ServerOptions(payload_grace=0.5, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(workflows=[echo_len]):
            first = await client.start_workflow(echo_len, "small", id="again")
            assert await first.result(timeout=30) == len("small")
            second = await client.start_workflow(echo_len, SECOND, id="again")
            assert await second.result(timeout=30) == len(SECOND)
            assert second.run_id != first.run_id
            for handle in (first, second):
                await handle.delete()
        name = _name(SECOND)
        await _sweeps(env, 2)  # each past the grace: no run of "again" is left
        holder = await _holder(env, name)
        assert holder not in (first.run_id, second.run_id)  # neither run's: their removal went
        assert not holder, f"a marker of run {holder}, which never existed, holds it"
        assert not await _stored(env.client, name)


async def test_a_start_refused_for_an_object_being_deleted_leaves_no_marker_behind() -> None:
    async with LocalEnvironment(server_options=ServerOptions(status_delay=0)) as env:
        client = env.client
        lay = client.layout
        name = _name(SECOND)
        data = orjson.dumps(SECOND)
        await ObjectPayloads(client.pub.js, lay).put(name, data)
        # a deletion under way (its deleter killed right then): a start naming it is refused
        await client.pub.publish(lay.payload_deleting(name), b"")
        with pytest.raises(df.DurableFutureError, match=name):
            await client.start_workflow(waiting_echo, SECOND, id="m", task_queue="none")
        with pytest.raises(df.WorkflowNotFoundError):
            await client.get_workflow_handle("m").describe()  # no run was created
        info = await client.pub.js.stream_info(lay.stream, subjects_filter=lay.payload_refs(name))
        left = {s for s, n in (info.state.subjects or {}).items() if n}
        assert left == {lay.payload_deleting(name)}, "the refused start's run marked the object"


# -- uploads cut short ---------------------------------------------------------------------

_CUT_SHORT = """
import asyncio, hashlib, sys
from durablefuture.transport.connection import connect
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.subjects import Layout

async def main() -> None:
    nc = await connect(sys.argv[1], timeout=10)
    payloads = ObjectPayloads(nc.jetstream(), Layout("default"))
    async def killed_first(name: str, body: bytes) -> None:  # SIGKILL comes before the record
        print("chunks stored", flush=True)
        await asyncio.Event().wait()
    payloads._publish_meta = killed_first  # type: ignore[method-assign]
    data = b"c" * (3 * 128 * 1024)
    await payloads.put(hashlib.sha256(data).hexdigest(), data)

asyncio.run(main())
"""


async def _chunks(env: LocalEnvironment) -> int:
    """Chunk messages stored in the payload bucket."""
    client = env.client
    bucket = client.layout.payloads_bucket
    info = await client.pub.js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
    return sum((info.state.subjects or {}).values())


async def test_the_chunks_of_an_upload_killed_before_its_meta_record_are_swept(
    tmp_path: Path,
) -> None:
    options = ServerOptions(payload_grace=0.5, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        log = open(tmp_path / "writer.log", "wb")  # noqa: SIM115 - handed to the child
        writer = subprocess.Popen(
            [sys.executable, "-c", _CUT_SHORT, env.nats_url],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            await wait_for(lambda: _chunks_at_least(env, 3), timeout=60)
            os.kill(writer.pid, signal.SIGKILL)
            assert writer.wait(10) == -signal.SIGKILL
        finally:
            if writer.poll() is None:
                os.kill(writer.pid, signal.SIGKILL)
                writer.wait(10)
        await _sweeps(env, 2)  # each past the grace: no meta record names the chunks
        assert await _chunks(env) == 0, "chunks no object names are kept"


async def _chunks_at_least(env: LocalEnvironment, n: int) -> bool:
    return await _chunks(env) >= n


# -- a deletion stopped by a crash ---------------------------------------------------------

RESULT = "r" * (300 * 1024)


def big_result() -> str:
    return RESULT


def wants_big_result():  # type: ignore[no-untyped-def]
    retry = df.RetryPolicy(initial_interval=0.2, backoff=df.Backoff.FIXED, maximum_attempts=3)
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
    return len((yield df.activity(big_result, options=opts)))


_DIES_MID_DELETION = """
import os, signal
from durablefuture.server import janitor
from durablefuture.transport import payload_gc

real_sweep = janitor.sweep

async def sweep(pub, layout, *, grace, now):  # type: ignore[no-untyped-def]
    return await real_sweep(pub, layout, grace=0.5, now=now)  # its first sweep, grace 0.5 s

async def killed(*args: object) -> bool:  # between the deletion marker and the purge
    os.kill(os.getpid(), signal.SIGKILL)
    return False

janitor.sweep = sweep
payload_gc.purge_object = killed
from daemons.df_server import main
main()
"""


async def test_a_deletion_stopped_by_sigkill_does_not_use_up_an_activitys_attempts(
    daemons: Daemons, tmp_path: Path
) -> None:
    daemons.server()
    async with connected(daemons) as client:
        layout = client.layout
        data = orjson.dumps(RESULT)
        name = hashlib.sha256(data).hexdigest()
        # the object of an earlier run, put long enough ago for a grace of 0.5 s
        await ObjectPayloads(client.pub.js, layout).put(name, data)

        async def put_before(age: float) -> bool:
            record = await newest_record(client.pub.nc, layout.payloads_bucket, name)
            return record is not None and time.time() - (record.stored_at or 0.0) > age

        await wait_for(lambda: put_before(1.0), timeout=10)
        args = [sys.executable, "-c", _DIES_MID_DELETION, "--nats", daemons.url]
        doomed = Daemon("doomed", args[1:], tmp_path / "doomed.log", daemons.env)
        with open(doomed.log_path, "wb") as log:
            doomed.proc = subprocess.Popen(
                args, cwd=ROOT, env=daemons.env, stdout=log, stderr=subprocess.STDOUT
            )
        daemons.started.append(doomed)
        await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 60)
        assert doomed.proc.returncode == -signal.SIGKILL
        fence = await leader_get(
            client.pub.nc, layout.stream, {"last_by_subj": layout.payload_deleting(name)}, "", 5
        )
        assert fence is not None and await _stored(client, name)
        daemons.worker(
            "--workflows",
            f"{__name__}:wants_big_result",
            "--activities",
            f"{__name__}:big_result",
        )
        handle = await client.start_workflow(wants_big_result, id="fenced", task_queue="tests")

        async def closed() -> list[ev.Event] | None:
            history = await handle.fetch_history()
            return history if isinstance(history[-1], ev.TERMINAL_EVENTS) else None

        history = await wait_for(closed, timeout=60)
        # the worker found the deletion marker and stored the result anew, after its cut: the
        # report was accepted at once, the run completed with it, and it reads back whole
        refused = [
            e
            for e in history
            if isinstance(e, ev.ActivityRetryScheduled) and e.failure.type == "MissingPayloadError"
        ]
        assert refused == [], refused
        assert await handle.result(timeout=30) == len(RESULT)
        assert await ObjectPayloads(client.pub.js, layout).get(name) == data
        # the fence still stands for what was stored before it (until a janitor finishes)
        still = await leader_get(
            client.pub.nc, layout.stream, {"last_by_subj": layout.payload_deleting(name)}, "", 5
        )
        assert still is not None and still.seq == fence.seq


# -- dead letters --------------------------------------------------------------------------

LOST = "d" * (300 * 1024)


async def test_a_dead_letter_keeps_the_objects_its_body_names() -> None:
    options = ServerOptions(payload_grace=0.5, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        layout, nc = client.layout, client.pub.nc
        ghost = client.get_workflow_handle("ghost", run_id="0" * 32)
        with contextlib.suppress(df.DurableFutureError):
            await ghost.signal("lost", LOST)  # a signal for a run that does not exist
        name = _name(LOST)

        async def dead_letter():  # type: ignore[no-untyped-def]
            found = await leader_get(
                nc, layout.stream, {"last_by_subj": layout.dead_letter("server-input")}, "", 5.0
            )
            return found if found is not None and name.encode() in found.data else None

        dead = await wait_for(dead_letter, timeout=30)
        assert ORIGINAL_HEADER not in (dead.headers or {})  # whole: nothing cut
        await _sweeps(env, 2)  # each past the grace
        # the dead letter is still kept; what it names by reference must be too
        assert await leader_get(nc, layout.stream, {"seq": dead.seq}, "", 5.0) is not None
        assert await _stored(env.client, name), "the refused signal's argument is gone"


# -- a deleter frozen past ABANDONED_AFTER -------------------------------------------------

_FROZEN_DELETER = """
import asyncio, os, signal, sys, time
from durablefuture.transport import payload_gc
from durablefuture.transport.connection import connect
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.subjects import Layout

real = payload_gc.purge_object

async def frozen(*args):  # type: ignore[no-untyped-def]
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen (a paused VM, a stopped container) here
    return await real(*args)

payload_gc.purge_object = frozen

async def main() -> None:
    nc = await connect(sys.argv[1], timeout=10)
    deleted = await payload_gc.collect(
        Publisher(nc), Layout("default"), sys.argv[2], grace=0.0, now=time.time()
    )
    print("deleted", deleted, flush=True)

asyncio.run(main())
"""

KEPT = "k" * (300 * 1024)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


async def test_a_deleter_frozen_past_abandoned_after_does_not_delete_a_new_holders_object(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from durablefuture.server import janitor
    from durablefuture.transport import payload_gc

    # 2 s stands for the 5 minutes a deletion marker is trusted to a live deleter
    monkeypatch.setattr(payload_gc, "ABANDONED_AFTER", 2.0)
    monkeypatch.setattr(janitor, "ABANDONED_AFTER", 2.0)
    async with LocalEnvironment(server_options=ServerOptions(status_delay=0)) as env:
        client = env.client
        layout = client.layout
        data = orjson.dumps(KEPT)
        name = hashlib.sha256(data).hexdigest()
        await ObjectPayloads(client.pub.js, layout).put(name, data)  # nothing holds it
        log = open(tmp_path / "deleter.log", "wb")  # noqa: SIM115 - handed to the child
        deleter = subprocess.Popen(
            [sys.executable, "-c", _FROZEN_DELETER, env.nats_url, name],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            await wait_for(lambda: _state(deleter.pid) == "T", timeout=30)

            async def fence_up() -> bool:
                found = await leader_get(
                    client.pub.nc,
                    layout.stream,
                    {"last_by_subj": layout.payload_deleting(name)},
                    "",
                    5.0,
                )
                return found is not None

            assert await fence_up()
            # the janitor takes the marker for one a crash left, and finishes the deletion
            await wait_for(lambda: _finished(env, name), timeout=30)
            # a new run stores the object again, and holds it
            async with env.worker(workflows=[echo_len]):
                handle = await client.start_workflow(echo_len, KEPT, id="kept")
                assert await handle.result(timeout=30) == len(KEPT)
            assert await _held(env, name) and await _stored(env.client, name)
            # the frozen deleter wakes up and goes on with its purge
            os.kill(deleter.pid, signal.SIGCONT)
            await wait_for(lambda: deleter.poll() is not None, timeout=30)
            said = (tmp_path / "deleter.log").read_text()
            assert deleter.returncode == 0, said
        finally:
            if deleter.poll() is None:
                os.kill(deleter.pid, signal.SIGKILL)
                deleter.wait(10)
        # the run's history still reads back whole
        assert await _stored(env.client, name), "the held object was purged"
        assert (await handle.fetch_history())[0].args == (KEPT,)  # type: ignore[union-attr]


async def _finished(env: LocalEnvironment, name: str) -> bool:
    """The deletion of ``name`` is done: the object and its deletion marker are gone."""
    client = env.client
    lay = client.layout
    fence = await leader_get(
        client.pub.nc, lay.stream, {"last_by_subj": lay.payload_deleting(name)}, "", 5.0
    )
    return fence is None and not await _stored(client, name)
