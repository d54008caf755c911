"""Retention: closed runs are removed (archived first) once the namespace's retention is over;
open runs never are; several df-servers and a SIGKILL mid-removal change neither."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from attrs import define
from click.testing import CliRunner

import durablefuture as df
from daemons.df_cli import main as df_main
from durablefuture.core.errors import RequestRejectedError
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.compaction import purge
from durablefuture.transport.headers import REASON_HEADER
from durablefuture.transport.namespace_settings import write_settings
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.stored import leader_get
from durablefuture.transport.usage import stream_size, stream_usage
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import (
    add_workflow,
    double,
    echo_len,
    expected_add,
    slow_add,
    waiting_add,
    waiting_echo,
)

pytestmark = pytest.mark.asyncio

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")
BIG = "x" * (300 * 1024)  # travels by reference (payload object)


async def _listed(client: df.Client, handle: df.WorkflowHandle) -> bool:
    return await client.summary(handle.id, handle.run_id or "") is not None


async def _runs(client: df.Client) -> int:
    return (await stream_size(client.pub.js, f"KV_{client.layout.runs_bucket}"))[0]


async def test_closed_runs_expire_open_ones_stay_and_archives_read_back(tmp_path: Path) -> None:
    archive = f"dir:{tmp_path / 'archive'}"
    options = ServerOptions(retention=1.0, archive=archive, payload_grace=1.0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        layout = client.layout
        js = client.pub.js
        async with env.worker(
            task_queue="q", workflows=[echo_len, waiting_echo], activities=[slow_add, double]
        ):
            # one open run shares a payload object with a closed one: the object must stay
            waiting = await client.start_workflow(waiting_echo, BIG, id="open", task_queue="q")
            for i in range(3):
                assert await client.execute_workflow(echo_len, BIG, id=f"c{i}", task_queue="q") == (
                    len(BIG)
                )

            async def gone(workflow_id: str) -> bool:
                try:
                    await client.get_workflow_handle(workflow_id).fetch_history()
                except df.WorkflowNotFoundError:
                    return True
                return False

            async def only_the_open_run() -> bool:  # a removal deletes the history last
                usage = await stream_usage(js, layout)
                if usage.by_kind.get("rx", 0) != 0 or await _runs(client) != 1:
                    return False
                return all([await gone(f"c{i}") for i in range(3)])

            await wait_for(only_the_open_run, timeout=30)
            # nothing of the open run went: history, status entry, its payload object
            history = await waiting.fetch_history()
            assert type(history[0]).__name__ == "WorkflowStarted"
            assert history[0].args == (BIG,)
            assert (await waiting.describe()).status == "running"
            # the closed runs are gone from the stream, and read back from the archive
            closed = client.get_workflow_handle("c1")
            with pytest.raises(df.WorkflowNotFoundError):
                await closed.fetch_history()
            events = await closed.fetch_history(archive=archive)
            assert type(events[0]).__name__ == "WorkflowStarted"
            assert type(events[-1]).__name__ == "WorkflowCompleted"
            result = await asyncio.to_thread(
                CliRunner().invoke,
                df_main,
                ["--nats", env.nats_url, "workflow", "history", "c1", "--archive", archive],
            )
            assert result.exit_code == 0, result.output
            assert "WorkflowCompleted" in result.output
            # the open run finishes normally and then expires too, with its payload object
            await waiting.signal("go")
            assert await waiting.result(timeout=15) == len(BIG)

            async def empty() -> bool:
                usage = await stream_usage(js, layout)
                objects = await stream_size(js, f"OBJ_{layout.payloads_bucket}")
                return usage.messages == 0 and await _runs(client) == 0 and objects == (0, 0)

            await wait_for(empty, timeout=30)


async def test_retention_is_stored_with_the_namespace_for_every_server(daemons: Daemons) -> None:
    daemons.server("--retention", "90m")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:

        async def stored() -> bool:  # (the stream exists a moment before its settings)
            return (await client.describe_namespace()).settings.retention == 90 * 60

        await wait_for(stored, timeout=20)
        daemons.server()  # no flag: applies what is stored
        daemons.server("--retention", "2h")  # a new value, stored for all

        async def changed() -> bool:
            return (await client.describe_namespace()).settings.retention == 2 * 3600

        await wait_for(changed, timeout=20)
        result = await asyncio.to_thread(
            CliRunner().invoke, df_main, ["--nats", daemons.url, "namespace", "describe"]
        )
        assert result.exit_code == 0, result.output
        assert "2h (closed runs)" in result.output
    finally:
        await client.close()


async def test_sigkill_of_df_server_mid_removal_deletes_only_closed_runs(
    daemons: Daemons,
) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    daemons.server("--retention", "2s")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    try:
        assert (await client.describe_namespace()).settings.retention == 2
        daemons.server()  # applies the stored retention
        daemons.worker(*WF, *ACT)
        opened = [
            await client.start_workflow(waiting_add, i, id=f"open-{i}", task_queue="tests")
            for i in range(5)
        ]
        closed = [f"closed-{i}" for i in range(40)]
        results = await asyncio.gather(
            *(
                client.execute_workflow(add_workflow, i, id=w, task_queue="tests")
                for i, w in enumerate(closed)
            )
        )
        assert results == [expected_add(i) for i in range(40)]
        # the open runs' status entries are written once they have been open a second
        # (``status_delay``): before that, 40 entries are no sign of removals
        for handle in opened:
            await wait_for(lambda h=handle: _listed(client, h), timeout=30)
        # the first closed runs may already be gone: their 2 s start at their close, and on a
        # loaded machine the last of the 40 closes later than that; removals are under way
        # once fewer than the 45 runs are left

        async def removing() -> bool:
            return await _runs(client) < 45

        await wait_for(removing, timeout=30, interval=0.01)
        for d in daemons.started[:2]:
            d.kill()  # both servers, in the middle of the removals
        daemons.server()

        async def only_open_left() -> bool:
            # a removal the SIGKILL cut short is delivered again once its ack wait is over
            # and finishes then; the status entry goes first and the history last, so both
            # are looked at
            if await _runs(client) != 5:
                return False
            for w in closed:
                try:
                    await client.get_workflow_handle(w).fetch_history()
                    return False
                except df.WorkflowNotFoundError:
                    pass
            return True

        await wait_for(only_open_left, timeout=60)
        for i, handle in enumerate(opened):
            assert (await handle.describe()).status == "running"
            await handle.signal("go", 1)
            assert await handle.result(timeout=30) == 2 * (i + 1)
        for w in closed:
            with pytest.raises(df.WorkflowNotFoundError):
                await client.get_workflow_handle(w).fetch_history()
    finally:
        await client.close()


async def test_df_workflow_delete_removes_a_closed_run_and_refuses_an_open_one() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="q", workflows=[echo_len, waiting_echo]):
            await env.client.execute_workflow(echo_len, "abc", id="done", task_queue="q")
            await env.client.start_workflow(waiting_echo, "abc", id="busy", task_queue="q")

            def cli(*args: str):  # type: ignore[no-untyped-def]
                return CliRunner().invoke(df_main, ["--nats", env.nats_url, *args])

            result = await asyncio.to_thread(cli, "workflow", "delete", "done")
            assert result.exit_code == 0, result.output
            assert "deleted done run" in result.output
            with pytest.raises(df.WorkflowNotFoundError):
                await env.client.get_workflow_handle("done").fetch_history()
            result = await asyncio.to_thread(cli, "workflow", "delete", "busy")
            assert result.exit_code != 0
            assert "still open" in result.output and "terminate or cancel it first" in result.output
            assert await env.client.get_workflow_handle("busy").fetch_history()
            result = await asyncio.to_thread(cli, "workflow", "delete", "never-was")
            assert result.exit_code != 0 and "never-was" in result.output


async def test_archive_to_the_object_store() -> None:
    options = ServerOptions(retention=1.0, archive="objstore")
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(task_queue="q", workflows=[echo_len]):
            await client.execute_workflow(echo_len, "abcd", id="arch", task_queue="q")

            handle = client.get_workflow_handle("arch")

            async def removed() -> bool:  # the status entry goes first, the history last
                try:
                    await handle.fetch_history()
                except df.WorkflowNotFoundError:
                    return await _runs(client) == 0
                return False

            await wait_for(removed, timeout=30)
            events = await handle.fetch_history(archive="objstore")
            assert type(events[-1]).__name__ == "WorkflowCompleted"
            assert events[-1].result == 4
            assert await _runs(client) == 0


async def _removed(client: df.Client, handle: df.WorkflowHandle) -> bool:
    """The run's history and every status entry are gone (the status entry goes first)."""
    try:
        await handle.fetch_history()
    except df.WorkflowNotFoundError:
        return await _runs(client) == 0
    return False


async def test_a_closed_run_whose_expiry_was_never_stored_is_removed_once_overdue() -> None:
    """A run closed, and its expiry list is gone before it fired (as when df-server and the
    worker that reported the close are both killed between the close and the list): the
    janitor asks for its removal once its recorded removal time is ``overdue_removal`` past,
    and the run goes as an expiry would remove it. An expiry that fired would have removed it
    before the janitor saw it overdue: the count says which did."""
    options = ServerOptions(retention=8.0, overdue_removal=1.0, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        layout = client.layout
        js = client.pub.js
        async with env.worker(task_queue="q", workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, "abcd", id="lost", task_queue="q")
            assert await handle.result() == 4

        async def armed() -> bool:
            return (await stream_usage(js, layout)).by_kind.get("rx", 0) > 0

        await wait_for(armed, timeout=4)
        assert await purge(client.nc, layout.stream, f"{layout.prefix}.rx.>") >= 1
        assert (await stream_usage(js, layout)).by_kind.get("rx", 0) == 0
        summary = await client.summary("lost", handle.run_id or "-")
        assert summary is not None and summary.close_time is not None
        assert summary.expires_at == summary.close_time + 8.0
        assert env.server.stats["overdue_removals"] == 0

        await wait_for(lambda: _removed(client, handle), timeout=30)
        assert env.server.stats["overdue_removals"] == 1


async def test_overdue_removals_keep_to_the_removal_time_recorded_at_the_close() -> None:
    """A run closed under a 60 s retention that is lowered to 1 s afterwards keeps its 60 s:
    the janitor does not ask for it before then (its expiry, armed for 60 s, is what removes
    it, as the README promises for a retention made shorter), nor while its own expiry, armed
    again for a retention made longer, is stored; asks once after, and not again from the
    same df-server; the removal then applies today's retention."""
    # no janitor of its own (compact_interval=0): the test's rounds are the only ones, and
    # nothing reads the settings back meanwhile
    options = ServerOptions(retention=60.0, overdue_removal=5.0, status_delay=0, compact_interval=0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(task_queue="q", workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, "ab", id="kept", task_queue="q")
            assert await handle.result() == 2
        summary = await client.summary("kept", handle.run_id or "-")
        assert summary is not None and summary.close_time is not None
        closed = summary.close_time
        assert summary.expires_at == closed + 60.0
        server = env.server
        server.settings = await write_settings(client.pub.js, client.layout, {"retention": 1.0})

        async def listed() -> bool:  # the index follows the status bucket
            assert server.visibility is not None
            return any(
                r.summary.run_id == handle.run_id for r in server.visibility.index.runs.values()
            )

        await wait_for(listed, timeout=10)
        assert await server.ask_overdue_removals(closed + 1.0 + 5.0 + 10.0) == 0
        assert await handle.fetch_history()  # still there
        # a removal that found the retention made longer (600 s) armed the run's own expiry
        # again; the retention is lowered once more: that expiry is what removes the run
        js, layout, run_id = client.pub.js, client.layout, handle.run_id or "-"
        server.settings = await write_settings(js, layout, {"retention": 600.0})
        await (await server._arm_expiry("kept", run_id, closed))
        server.settings = await write_settings(js, layout, {"retention": 1.0})
        assert await server.ask_overdue_removals(closed + 60.0 + 5.0 + 1.0) == 0
        assert await handle.fetch_history()  # still there
        # that expiry gone too (say, a NATS store lost): the janitor asks, a day later (it
        # looked at this run already), once
        assert await purge(client.nc, layout.stream, layout.expiry(run_id)) == 1
        later = closed + 60.0 + 5.0 + 1.0 + 86400.0
        assert await server.ask_overdue_removals(later) == 1
        assert await server.ask_overdue_removals(later + 1.0) == 0
        await wait_for(lambda: _removed(client, handle), timeout=30)
        assert server.stats["overdue_removals"] == 1


@define
class Race:
    client: df.Client
    start_b: asyncio.Task[df.WorkflowHandle]
    name: str
    """The payload object "a" and "b" name."""
    left: set[str]
    """The objects left once "a" was removed."""
    server: Server
    running: asyncio.Task[None]

    async def stop(self) -> None:
        await self.server.shutdown()
        await self.running
        await self.client.close()


async def _start_waits_while_the_last_holder_expires(url: str, grace: float) -> Race:
    """Run "a" (a large argument: one payload object) to completion with a df-server that
    then stops; start "b" with the same argument (the client finds the object stored and does
    not store it again) while no df-server handles inputs; let a df-server that removes runs
    but pulls no input (started, not running) expire "a"; then let it handle "b"'s start."""
    client = await df.Client.connect(url)
    client.request_timeout = 60
    layout, js = client.layout, client.pub.js
    first = await Server.connect(url, ServerOptions(retention=2.0))
    await first.start()
    running = asyncio.create_task(first.run())
    async with df.Worker(client, task_queue="q", workflows=[echo_len]):
        assert await client.execute_workflow(echo_len, BIG, id="a", task_queue="q") == len(BIG)
    await first.shutdown()
    await running
    payloads = ObjectPayloads(js, layout)
    [name] = await payloads.names()
    start_b = asyncio.create_task(client.start_workflow(echo_len, BIG, id="b", task_queue="q"))

    async def queued() -> bool:
        info = await js.consumer_info(layout.stream, layout.start_consumer)
        return info.num_pending >= 1

    await wait_for(queued, timeout=20)
    remover = await Server.connect(url, ServerOptions(retention=2.0, payload_grace=grace))
    await remover.start()  # removals and the janitor run; no input is pulled

    async def a_removed() -> bool:
        try:
            await client.get_workflow_handle("a").fetch_history()
        except df.WorkflowNotFoundError:
            return True
        return False

    await wait_for(a_removed, timeout=30)
    left = await payloads.names()
    return Race(client, start_b, name, left, remover, asyncio.create_task(remover.run()))


async def test_a_start_that_did_not_store_its_payload_again_keeps_it_through_retention(
    nats_server: NatsServer,
) -> None:
    race = await _start_waits_while_the_last_holder_expires(nats_server.url, grace=3600.0)
    client, start_b, name, left = race.client, race.start_b, race.name, race.left
    try:
        # the object was put moments ago: a message naming it may be on its way
        assert left == {name}
        handle = await start_b
        async with df.Worker(client, task_queue="q", workflows=[echo_len]):
            assert await handle.result(timeout=30) == len(BIG)
        assert (await handle.fetch_history())[0].args == (BIG,)  # type: ignore[union-attr]
    finally:
        await race.stop()


async def test_a_start_whose_payload_went_before_it_was_handled_is_refused_naming_it(
    nats_server: NatsServer,
) -> None:
    # no grace at all (or a df-server down for longer than it): the object goes with "a"
    race = await _start_waits_while_the_last_holder_expires(nats_server.url, grace=0.0)
    client, start_b, name, left = race.client, race.start_b, race.name, race.left
    try:
        assert left == set()
        with pytest.raises(RequestRejectedError) as refused:
            await start_b
        assert name in str(refused.value) and "send it again" in str(refused.value)
        with pytest.raises(df.WorkflowNotFoundError):  # no run "b" that cannot read its input
            await client.get_workflow_handle("b").fetch_history()
        dead = await leader_get(
            client.pub.nc,
            client.layout.stream,
            {"last_by_subj": client.layout.dead_letter("server-input")},
            "the dead letter",
            5.0,
        )
        assert dead is not None and name in dead.headers.get(REASON_HEADER, "")
        # started again, the client stores the payload anew and the run completes
        async with df.Worker(client, task_queue="q", workflows=[echo_len]):
            handle = await client.start_workflow(echo_len, BIG, id="b", task_queue="q")
            assert await handle.result(timeout=30) == len(BIG)
    finally:
        await race.stop()
