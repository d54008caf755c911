"""Runs whose history retention removed, shown from the archive (``df ui --archive``).

A df-server with a one-second retention archives closed runs to a directory, then removes
them from the stream; the UI given that archive still shows them (marked archived), finds
them by id, and time-travels through them. A real nats-server, the example worker; the waits
are on what the engine shows (the stream no longer has the run), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.ui.conftest import served
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow

pytestmark = pytest.mark.asyncio

WID = "order-archived"


async def _gone_from_stream(client: df.Client, wid: str) -> bool:
    try:
        await client.get_workflow_handle(wid).fetch_history()
    except df.WorkflowNotFoundError:
        return True
    return False


@pytest.mark.parametrize("kind", ["dir", "objstore"])
async def test_a_run_removed_by_retention_is_shown_from_the_archive(
    tmp_path: Path, kind: str
) -> None:
    archive = f"dir:{tmp_path / 'archive'}" if kind == "dir" else "objstore"
    options = ServerOptions(retention=1.0, archive=archive)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            await client.execute_workflow(
                order_workflow, WID, 42.0, id=WID, task_queue=TASK_QUEUE, timeout=20
            )
            await client.start_workflow(
                approval_workflow, "req-a", 600.0, id="approval-open", task_queue=TASK_QUEUE
            )
            await wait_for(lambda: _gone_from_stream(client, WID), timeout=30)
            archived = await client.get_workflow_handle(WID).fetch_history(archive=archive)

            async with served(env, archive=archive) as url:
                async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                    res = await http.get(f"/api/workflows/{WID}")
                    assert res.status_code == 200, res.text
                    run = res.json()
                    assert run["archived"] is True and run["workflow"]["archived"] is True
                    bucket = f"{client.layout.stream}_archive"
                    assert run["archive"] == (archive if kind == "dir" else f"objstore ({bucket})")
                    assert run["workflow"]["workflow_id"] == WID
                    assert run["workflow"]["status"] == "completed"
                    assert run["workflow"]["history_length"] == len(archived)
                    assert len(run["history"]) == len(archived)
                    assert run["history"][0]["t"] == "WorkflowStarted"
                    assert run["history"][-1]["t"] == "WorkflowCompleted"
                    assert run["input"] == [WID, 42.0]
                    kinds = {r["kind"] for r in run["timeline"]["rows"]}
                    assert "activity" in kinds, kinds
                    assert run["why"] == []

                    # the page itself carries it (first paint), and time travel reads it too
                    page = await http.get(f"/workflows/{quote(WID, safe='')}")
                    assert page.status_code == 200 and '"archived":true' in page.text
                    state = await http.get(f"/api/history-state/{WID}", params={"event": "2"})
                    assert state.status_code == 200, state.text
                    assert state.json()["event"]["event_id"] == 2

                    # the list finds it by its id, marked, and counts it where it belongs
                    found = (await http.get("/api/workflows", params={"q": WID})).json()
                    assert [(w["workflow_id"], w.get("archived")) for w in found["workflows"]] == [
                        (WID, True)
                    ]
                    assert found["total"] == 1 and found["counts"]["completed"] == 1
                    running = (
                        await http.get("/api/workflows", params={"q": WID, "status": "running"})
                    ).json()
                    assert running["workflows"] == [] and running["counts"]["completed"] == 1
                    other_type = (
                        await http.get("/api/workflows", params={"q": WID, "type": "x_workflow"})
                    ).json()
                    assert other_type["workflows"] == []

                    # the open run is untouched and not archived
                    open_run = (await http.get("/api/workflows/approval-open")).json()
                    assert open_run["workflow"]["status"] == "running"
                    assert "archived" not in open_run

                    missing = await http.get("/api/workflows/never-was")
                    assert missing.status_code == 404 and archive in missing.json()["error"]

            # without --archive the run is gone, and the list does not find it
            async with served(env) as url:
                async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                    gone = await http.get(f"/api/workflows/{WID}")
                    assert gone.status_code == 404
                    assert (await http.get("/api/workflows", params={"q": WID})).json()[
                        "workflows"
                    ] == []


async def test_a_wrong_archive_is_refused_before_serving(tmp_path: Path) -> None:
    async with LocalEnvironment() as env:
        with pytest.raises(df.InvalidArgumentError, match="dir:PATH"):
            async with served(env, archive="s3://bucket"):
                pass  # pragma: no cover
        await asyncio.sleep(0)
