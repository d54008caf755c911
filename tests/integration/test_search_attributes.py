"""Search attributes and memos through the real daemons: set at start, upserted from workflow
code (recorded in history, checked on replay), visible in describe() and the status entry."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from attrs import evolve

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.query import parse_query
from durablefuture.testing import LocalEnvironment, Replayer
from durablefuture.transport.connection import connect
from tests.conftest import wait_for

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def tagging_flow(region: str):  # type: ignore[no-untyped-def]
    current = df.workflow.upsert_search_attributes({"Region": region, "Stage": "charged"})
    assert current["Customer"].value == "c-7"  # the start's attributes are still there
    yield df.wait_signal("go")
    df.workflow.upsert_search_attributes({"Stage": None, "Tags": ["a", "b"], "Due": WHEN})
    return region


def tagging_flow_changed(region: str):  # type: ignore[no-untyped-def]
    df.workflow.upsert_search_attributes({"Region": region.upper(), "Stage": "charged"})
    yield df.wait_signal("go")
    df.workflow.upsert_search_attributes({"Stage": None, "Tags": ["a", "b"], "Due": WHEN})
    return region


async def test_start_attributes_upserts_and_memo_are_recorded_and_described() -> None:
    opts = df.WorkflowOptions(
        task_queue="sa",
        search_attributes={"Customer": "c-7", "Priority": 3, "Note": df.Text("rush order")},
        memo={"owner": "ops", "when": WHEN},
    )
    async with LocalEnvironment() as env, env.worker("sa", workflows=[tagging_flow]):
        handle = await env.client.start_workflow(tagging_flow, "eu", id="sa-1", options=opts)

        async def upserted() -> bool:
            d = await handle.describe()
            return d.search_attributes.get("Region") == "eu"

        await wait_for(upserted, timeout=20)
        d = await handle.describe()
        assert d.search_attributes == {
            "Customer": "c-7",
            "Priority": 3,
            "Note": "rush order",
            "Region": "eu",
            "Stage": "charged",
        }
        assert d.memo == {"owner": "ops", "when": WHEN.isoformat()}
        # the status entry (what listing reads) has them too while the run is open
        [listed] = await env.client.list_workflows(workflow_type="tagging_flow")
        assert listed.search_attributes["Stage"] == "charged"

        await handle.signal("go")
        assert await handle.result(timeout=20) == "eu"
        d = await handle.describe()
        assert "Stage" not in d.search_attributes
        assert d.search_attributes["Tags"] == ("a", "b")
        assert d.search_attributes["Due"] == WHEN
        [listed] = await env.client.list_workflows(workflow_type="tagging_flow")
        assert listed.search_attributes == d.search_attributes
        assert listed.memo == d.memo

        history = await handle.fetch_history()
        ups = [e for e in history if isinstance(e, ev.SearchAttributesUpserted)]
        assert [sorted(e.search_attributes) for e in ups] == [
            ["Region", "Stage"],
            ["Due", "Stage", "Tags"],
        ]
        assert ups[1].search_attributes["Due"].type == "datetime"
        started = history[0]
        assert isinstance(started, ev.WorkflowStarted)
        assert started.search_attributes["Note"] == df.SearchAttribute("text", "rush order")

        # replay: the same upserts pass, changed values are non-determinism
        Replayer(workflows=[tagging_flow]).replay(history)
        with pytest.raises(df.NonDeterminismError, match="upsert_search_attributes"):
            Replayer(workflows=[df.defn(name="tagging_flow")(tagging_flow_changed)]).replay(history)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"WorkflowId": "x"}, "built-in field"),
        ({"bad name": 1}, "not valid"),
        ({"X": object()}, "has no search attribute type"),
        ({"X": "y" * 3000}, "more than 2048"),
        ({"X": float("nan")}, "not finite"),
        ({f"A{i}": i for i in range(65)}, "more than 64"),
        ({"X": [1, 2]}, "expected a string"),
    ],
)
def test_bad_search_attributes_are_refused_at_the_call(
    attrs: dict[str, object], message: str
) -> None:
    with pytest.raises(df.InvalidArgumentError, match=message):
        df.WorkflowOptions(search_attributes=attrs)


# ---------------------------------------------------------------------- listing and counting


def quick(n: int):  # type: ignore[no-untyped-def]
    if False:
        yield
    return n


async def test_list_and_count_with_queries_and_pages() -> None:
    async with LocalEnvironment() as env, env.worker("vq", workflows=[quick]):
        for i in range(12):
            opts = df.WorkflowOptions(
                task_queue="vq",
                search_attributes={"Region": "eu" if i % 3 else "us", "Priority": i % 4},
            )
            await env.client.execute_workflow(quick, i, id=f"vq-{i}", options=opts, timeout=20)

        async def indexed() -> bool:
            return await env.client.count_workflows("ExecutionStatus = 'Completed'") == 12

        await wait_for(indexed, timeout=20)
        c = env.client
        assert await c.count_workflows() == 12
        q = "WorkflowType = 'quick' AND ExecutionStatus = 'completed' AND Region = 'eu'"
        assert await c.count_workflows(q) == 8
        page = await c.list_workflows(q, page_size=3)
        seen = [d.workflow_id for d in page]
        while page.next_page_token:
            page = await c.list_workflows(q, page_size=3, next_page_token=page.next_page_token)
            seen += [d.workflow_id for d in page]
        assert sorted(seen) == sorted(f"vq-{i}" for i in range(12) if i % 3)
        assert len(set(seen)) == 8
        ordered = await c.list_workflows("Priority >= 2 ORDER BY Priority DESC", page_size=100)
        assert [d.search_attributes["Priority"] for d in ordered] == [3, 3, 3, 2, 2, 2]
        # the older keyword filters are ANDed to a query
        assert len(await c.list_workflows("Region = 'us'", status="completed")) == 4
        assert await c.list_workflows("Region = 'us'", status="failed") == []
        assert isinstance(await c.list_workflows(page_size=5), df.WorkflowPage)
        # errors: position in the message, a token of another query refused
        with pytest.raises(df.InvalidQueryError, match="position 9") as info:
            await c.list_workflows("Region = ")
        assert info.value.position == 9
        first = await c.list_workflows(q, page_size=1)
        with pytest.raises(df.InvalidArgumentError, match="another query"):
            await c.list_workflows("Region = 'us'", next_page_token=first.next_page_token)
        with pytest.raises(df.InvalidArgumentError, match="not a page token"):
            await c.list_workflows(q, next_page_token="%%%")


async def test_client_and_admin_may_list_and_count_workers_may_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with LocalEnvironment(auth=True) as env, env.worker("vq", workflows=[quick]):
        opts = df.WorkflowOptions(task_queue="vq", search_attributes={"Region": "eu"})
        await env.client.execute_workflow(quick, 1, id="auth-1", options=opts, timeout=20)

        async def listed() -> bool:
            return await env.client.count_workflows("Region = 'eu'") == 1

        await wait_for(listed, timeout=20)
        admin = await df.Client.connect(env.nats_url, creds=env.creds("admin"))
        try:
            [run] = await admin.list_workflows("Region = 'eu'", page_size=10)
            assert run.workflow_id == "auth-1"
            assert await admin.count_workflows() == 1
        finally:
            await admin.close()
        worker = await connect(env.nats_url, creds=env.creds("worker"), timeout=10)
        try:
            await worker.publish(env.client.layout.visibility, b"{}")
            await worker.flush()

            def refused() -> bool:
                return any(
                    "permissions violation" in r.getMessage().lower()
                    and env.client.layout.visibility in r.getMessage()
                    for r in caplog.records
                )

            await wait_for(refused, 10)
        finally:
            await worker.close()


async def test_a_deleted_run_leaves_the_index() -> None:
    async with LocalEnvironment() as env, env.worker("vq", workflows=[quick]):
        opts = df.WorkflowOptions(task_queue="vq", search_attributes={"Region": "eu"})
        for i in range(2):
            await env.client.execute_workflow(quick, i, id=f"del-{i}", options=opts, timeout=20)

        async def both() -> bool:
            return await env.client.count_workflows("Region = 'eu'") == 2

        await wait_for(both, timeout=20)
        await env.client.get_workflow_handle("del-0").delete()

        async def one_left() -> bool:
            return await env.client.count_workflows("Region = 'eu'") == 1

        await wait_for(one_left, timeout=20)
        [left] = await env.client.list_workflows("Region = 'eu'")
        assert left.workflow_id == "del-1"


async def test_a_df_server_started_later_reads_every_run_into_its_index() -> None:
    from durablefuture.server import Server

    async with LocalEnvironment() as env, env.worker("vq", workflows=[quick]):
        for i in range(5):
            opts = df.WorkflowOptions(task_queue="vq", search_attributes={"Priority": i})
            await env.client.execute_workflow(quick, i, id=f"late-{i}", options=opts, timeout=20)
        assert env.server is not None
        second = await Server.connect(env.nats_url, evolve(env.server.options))
        try:
            await second.start()
            index = second.visibility
            assert index is not None
            await asyncio.wait_for(index.ready.wait(), 20)
            assert len(index.index) == 5
            assert index.index.count(parse_query("Priority >= 3")) == 2
            # and it follows what happens next
            opts = df.WorkflowOptions(task_queue="vq", search_attributes={"Priority": 9})
            await env.client.execute_workflow(quick, 9, id="late-9", options=opts, timeout=20)

            async def followed() -> bool:
                return index.index.count(parse_query("Priority >= 3")) == 3

            await wait_for(followed, timeout=20)
        finally:
            await second.shutdown()


async def test_the_index_follows_on_after_nats_server_restarts() -> None:
    async with LocalEnvironment() as env, env.worker("vq", workflows=[quick]):
        opts = df.WorkflowOptions(task_queue="vq", search_attributes={"Region": "eu"})
        await env.client.execute_workflow(quick, 1, id="nr-1", options=opts, timeout=20)

        async def count_is(n: int) -> bool:
            try:
                return await env.client.count_workflows("Region = 'eu'") == n
            except df.DurableFutureError:
                return False  # reconnecting

        await wait_for(lambda: count_is(1), timeout=20)
        server = env.server
        assert server is not None and server.visibility is not None
        index = server.visibility
        assert index.rebuilds == 0
        env.nats.stop(kill=True)
        env.nats.start()
        # the reconnect has the bucket read again at once (the watch's consumer went with
        # the nats-server it lived on; nats-py would notice only after missed heartbeats)
        await wait_for(lambda: index.rebuilds >= 1, timeout=30)
        await env.client.execute_workflow(quick, 2, id="nr-2", options=opts, timeout=60)
        await wait_for(lambda: count_is(2), timeout=60)


async def test_a_page_too_large_for_one_message_comes_smaller_with_a_token() -> None:
    async with LocalEnvironment() as env, env.worker("vq", workflows=[quick]):
        opts = df.WorkflowOptions(
            task_queue="vq", search_attributes={"Big": "yes"}, memo={"blob": "x" * 30_000}
        )
        for i in range(40):  # 40 x 30 KB of memo: more than a 1 MB NATS message
            await env.client.start_workflow(quick, i, id=f"big-{i}", options=opts)

        async def indexed() -> bool:
            return await env.client.count_workflows("Big = 'yes'") == 40

        await wait_for(indexed, timeout=30)
        page = await env.client.list_workflows("Big = 'yes'", page_size=100)
        assert 0 < len(page) < 40 and page.next_page_token is not None
        seen = [d.workflow_id for d in page]
        while page.next_page_token:
            page = await env.client.list_workflows(
                "Big = 'yes'", page_size=100, next_page_token=page.next_page_token
            )
            seen += [d.workflow_id for d in page]
        assert sorted(seen) == sorted(f"big-{i}" for i in range(40))
