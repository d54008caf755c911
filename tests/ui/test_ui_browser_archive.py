"""A run removed by retention, shown from the archive in a real headless Chromium.

``df ui --archive dir:PATH`` (a subprocess, as a user runs it) next to a df-server with a
one-second retention that archives to PATH: the run's page shows it marked "Archived", with its
history and timeline, and the list finds it by id. Without a browser this skips, unless
DF_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.ui.test_ui_browser import _chromium, _no_page_errors, _until, _wait, df_ui
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.order import order_workflow

WID = "order-archived-b"

ARCHIVED = """
const q = (s) => document.querySelector(s);
const box = q("#archived");
return {
  marker: box ? box.innerText : null,
  live: q("#live") ? q("#live").innerText : null,
  historyRows: document.querySelectorAll("#history tr.ev").length,
  signalDisabled: q("#btn-signal") ? q("#btn-signal").disabled : null,
};
"""


def _look(driver: Any, url: str) -> dict[str, Any]:
    driver.get(f"{url}/workflows/{quote(WID, safe='')}")
    facts = _until(
        driver,
        WID,
        lambda f: f["title"] == WID and f["status"] == "completed" and f["result"],
        "the archived run's page",
    )
    page = dict(driver.execute_script(ARCHIVED))
    driver.get(f"{url}/?q={WID}")
    listed = _wait(
        driver,
        lambda d: d.execute_script(
            "const r = document.querySelector('tr[data-workflow-id=\"' + arguments[0] + '\"]');"
            "return r ? r.innerText : null;",
            WID,
        ),
        "the archived run in the list",
    )
    _no_page_errors(driver)
    driver.get("about:blank")
    return {**facts, **page, "listed": listed}


async def test_the_browser_shows_an_archived_run(tmp_path: Path) -> None:
    archive = f"dir:{tmp_path / 'archive'}"
    with _chromium(tmp_path) as browser:
        options = ServerOptions(retention=1.0, archive=archive)
        async with LocalEnvironment(server_options=options) as env:
            async with env.worker(
                task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES
            ):
                await env.client.execute_workflow(
                    order_workflow, WID, 5.0, id=WID, task_queue=TASK_QUEUE, timeout=30
                )

            async def gone() -> bool:
                try:
                    await env.client.get_workflow_handle(WID).fetch_history()
                except df.WorkflowNotFoundError:
                    return True
                return False

            await wait_for(gone, timeout=30)
            events = await env.client.get_workflow_handle(WID).fetch_history(archive=archive)
            async with df_ui(
                env.nats_url, tmp_path / "ui.log", extra=["--archive", archive]
            ) as url:
                seen = await asyncio.to_thread(_look, browser, url)
    assert seen["marker"] == "Archived", seen
    assert seen["live"] is None  # no live indicator: nothing of it moves any more
    assert seen["historyRows"] == len(events)
    assert seen["signalDisabled"] is True
    assert "activity" in seen["rows"], seen["rows"]
    assert "archived" in seen["listed"], seen["listed"]
