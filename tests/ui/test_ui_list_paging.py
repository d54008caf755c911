"""The runs list with an empty filter box reads the df-servers' visibility index one page at a
time: ``limit`` runs and a ``next_page_token`` that ``next=`` follows (the page's "More").

The index is fed by a KV watch, so the tests wait until it has the runs they started.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.ui.conftest import UiEnv, served
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow

pytestmark = pytest.mark.asyncio

OPEN = [f"approval-p{i}" for i in range(5)]


async def _pages(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    """Every page of the list for ``params``, two runs at a time, following the tokens."""
    pages: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        query = {**params, "limit": "2", **({"next": token} if token else {})}
        res = await http.get("/api/workflows", params=query)
        assert res.status_code == 200, res.text
        pages.append(res.json())
        token = pages[-1]["next_page_token"]
        if token is None:
            return pages
        assert len(pages) < 10, "the tokens do not end"


async def test_the_list_pages_through_the_index(ui_env: UiEnv) -> None:
    client = ui_env.client
    await client.execute_workflow(
        order_workflow, "order-p", 3.0, id="order-p", task_queue=TASK_QUEUE, timeout=20
    )
    for wid in OPEN:
        await client.start_workflow(approval_workflow, wid, 600.0, id=wid, task_queue=TASK_QUEUE)

    async with httpx.AsyncClient(base_url=ui_env.url, timeout=20) as http:

        async def all_indexed() -> bool:
            body = (await http.get("/api/workflows")).json()
            return bool(body["total"] == 6 and body["counts"]["running"] == 5)

        await wait_for(all_indexed, 20)
        everything = (await http.get("/api/workflows")).json()
        assert everything["next_page_token"] is None  # one page of 200 holds them
        newest_first = [w["workflow_id"] for w in everything["workflows"]]
        assert newest_first == [*reversed(OPEN), "order-p"]

        pages = await _pages(http)
        assert [len(p["workflows"]) for p in pages] == [2, 2, 2]
        assert [w["workflow_id"] for p in pages for w in p["workflows"]] == newest_first
        for p in pages:  # every page says the same totals
            assert p["total"] == 6 and p["counts"]["running"] == 5
            assert p["counts"]["completed"] == 1

        running = await _pages(http, status="running")
        assert [len(p["workflows"]) for p in running] == [2, 2, 1]
        assert [w["workflow_id"] for p in running for w in p["workflows"]] == list(reversed(OPEN))
        # open runs' event counts are read from their histories, page by page
        assert all(w["history_length"] >= 1 for p in running for w in p["workflows"])

        typed = await _pages(http, type="order_workflow")
        assert [[w["workflow_id"] for w in p["workflows"]] for p in typed] == [["order-p"]]

        bad = await http.get("/api/workflows", params={"next": "not-a-token"})
        assert bad.status_code == 400, bad.text
        assert "token" in bad.json()["error"]


async def test_without_a_df_server_the_list_falls_back_to_the_status_entries() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            await env.client.execute_workflow(
                order_workflow, "order-f", 3.0, id="order-f", task_queue=TASK_QUEUE, timeout=20
            )
        async with served(env) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:

            async def indexed() -> bool:
                body = (await http.get("/api/workflows")).json()
                return [w["workflow_id"] for w in body["workflows"]] == ["order-f"]

            await wait_for(indexed, 20)
            assert "note" not in (await http.get("/api/workflows")).json()
            server = env.server
            assert server is not None
            await server.shutdown()
            env.server = None  # shut down here; the environment cancels its task on exit

            body = (await http.get("/api/workflows")).json()
            assert [w["workflow_id"] for w in body["workflows"]] == ["order-f"]
            assert body["counts"]["completed"] == 1 and body["next_page_token"] is None
            assert "no df-server answered" in body["note"], body
            # a query or a next page needs the index: they say that no df-server answered
            queried = await http.get("/api/workflows", params={"q": "WorkflowId = 'order-f'"})
            assert queried.status_code == 503 and "df-server" in queried.json()["error"]
            paged = await http.get("/api/workflows", params={"next": "x"})
            assert paged.status_code == 503, paged.text
