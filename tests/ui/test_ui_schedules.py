"""The web UI's schedules: list and detail API, the pages' embedded data, and the pause /
unpause / trigger actions behind the same Origin and login checks as the run actions.

Served by ``durablefuture.ui.serve`` on a free loopback port next to a LocalEnvironment (real
nats-server, in-process df-server, a worker running the schedules' workflow), driven with httpx.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.ui.conftest import UiEnv, served

TOKEN = "s3cret-ui-token-for-tests-0123456789"
EVIL = "http://evil.example"


def gated(n: int):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go", timeout=300)
    return n


def _every_second(prefix: str) -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(gated, 1, id_prefix=prefix, task_queue="sq"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=timedelta(seconds=1))]),
        policy=df.SchedulePolicy(overlap=df.Overlap.SKIP),
    )


def _nightly() -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow("report", "eu", task_queue="reports"),
        spec=df.ScheduleSpec(cron=["30 2 * * *"], timezone="Europe/Berlin"),
        policy=df.SchedulePolicy(catchup_window=timedelta(minutes=10), pause_on_failure=True),
        paused=True,
        note="created paused",
    )


async def _env(token: str | None) -> AsyncIterator[UiEnv]:
    options = ServerOptions(schedules=ScheduleOptions(poll_interval=0.5))
    async with LocalEnvironment(server_options=options) as env:
        async with env.worker(task_queue="sq", workflows=[gated]):
            async with served(env, auth_token=token) as url:
                yield UiEnv(env, url)


@pytest.fixture
async def ui() -> AsyncIterator[UiEnv]:
    async for e in _env(None):
        yield e


@pytest.fixture
async def secured() -> AsyncIterator[UiEnv]:
    async for e in _env(TOKEN):
        yield e


def _http(env: UiEnv, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=env.url, timeout=20, **kwargs)


def _initial(html: str) -> Any:
    match = re.search(r'<script id="df-initial" type="application/json">(.*?)</script>', html)
    assert match is not None, html
    return orjson.loads(match.group(1))


async def test_list_and_detail_show_next_runs_running_and_recent_actions(ui: UiEnv) -> None:
    client = ui.client
    await client.create_schedule("team/nightly", _nightly())  # ids may hold "/"
    handle = await client.create_schedule("every", _every_second("ev"))

    async def skipped() -> bool:
        return (await handle.describe()).actions_skipped >= 1

    await wait_for(skipped, timeout=20)
    async with _http(ui) as http:
        listed = (await http.get("/api/schedules")).json()
        assert listed["namespace"] == "default"
        every, nightly = listed["schedules"]  # by id
        assert (every["schedule_id"], nightly["schedule_id"]) == ("every", "team/nightly")
        assert every["paused"] is False and len(every["next_action_times"]) == 3
        assert every["spec"]["intervals"] == [{"every_s": 1.0, "offset_s": 0.0}]
        assert every["overlap"] == "SKIP" and every["running"] == 1
        assert every["actions_taken"] == 1 and every["actions_skipped"] >= 1
        assert nightly["paused"] is True and nightly["next_action_times"] == []
        assert nightly["spec"]["cron"] == ["30 2 * * *"]
        assert nightly["spec"]["timezone"] == "Europe/Berlin"
        assert nightly["note"] == "created paused" and nightly["last_action"] is None

        res = await http.get("/api/schedules/every")
        assert res.status_code == 200, res.text
        one = res.json()
        assert one["status"] == "active" and len(one["next_action_times"]) == 10
        assert one["next_action_times"] == sorted(one["next_action_times"])
        [running] = one["running_actions"]
        assert running["workflow_id"].startswith("ev-") and running["source"] == "spec"
        assert one["action"] == {
            "workflow_type": "gated",
            "task_queue": "sq",
            "id_prefix": "ev",
            "args": [1],
            "execution_timeout": None,
        }
        assert one["policy"]["overlap"] == "SKIP"
        kinds = [j["kind"] for j in one["journal"]]
        assert kinds[-1] == "created" and "skipped" in kinds  # newest first
        assert any("overlap SKIP" in r for r in one["why"]), one["why"]
        assert any(r.startswith("next action at") for r in one["why"])

        await client.get_workflow_handle(running["workflow_id"]).signal("go")

        async def recent() -> Any:
            body = (await http.get("/api/schedules/every")).json()
            return body if body["recent_actions"] else None

        done = await wait_for(recent, timeout=20)
        first = done["recent_actions"][-1]  # newest first: the oldest is last
        assert first["workflow_id"] == running["workflow_id"]
        assert first["status"] == "completed" and first["run_id"]

        nested = (await http.get("/api/schedules/team%2Fnightly")).json()
        assert nested["schedule_id"] == "team/nightly" and nested["status"] == "paused"
        assert (
            nested["why"][0].startswith("paused since it was created")
            and "created paused" in nested["why"][0]
        )

        missing = await http.get("/api/schedules/nobody")
        assert missing.status_code == 404 and "nobody" in missing.json()["error"]


async def test_the_pages_carry_the_schedules_they_show_first(ui: UiEnv) -> None:
    await ui.client.create_schedule("</script><b>x", _nightly())
    async with _http(ui) as http:
        page = await http.get("/schedules")
        one = await http.get("/schedules/%3C%2Fscript%3E%3Cb%3Ex")
        gone = await http.get("/schedules/nobody")
        js = (await http.get("/static/app.js")).text
    assert page.status_code == 200 and 'href="/schedules"' in page.text  # in the top bar
    first = _initial(page.text)
    assert first["route"] == "schedules"
    assert [s["schedule_id"] for s in first["data"]["schedules"]] == ["</script><b>x"]
    detail = _initial(one.text)
    assert (detail["route"], detail["schedule_id"]) == ("schedule", "</script><b>x")
    assert detail["data"]["paused"] is True and one.text.count("</script>") == 2
    missing = _initial(gone.text)
    assert (missing["route"], missing["status"]) == ("schedule", 404)
    assert "schedulesPage" in js and '"/api/schedules"' in js and "btn-trigger" in js


async def test_pause_trigger_and_unpause_from_the_api(ui: UiEnv) -> None:
    handle = await ui.client.create_schedule("every", _every_second("ev"))
    await wait_for(lambda: _taken(handle, 1), timeout=20)
    async with _http(ui) as http:
        res = await http.post("/api/schedule-pause/every", json={"note": "freeze"})
        assert res.status_code == 200, res.text
        assert res.json() == {"ok": True, "message": "paused every"}
        d = await handle.describe()
        assert d.paused and d.schedule.note == "freeze"
        body = (await http.get("/api/schedules/every")).json()
        assert body["status"] == "paused" and body["next_action_times"] == []

        taken = d.actions_taken
        res = await http.post("/api/schedule-trigger/every", json={})
        assert res.status_code == 200, res.text
        await wait_for(lambda: _trigger_seen(handle), timeout=20)  # even while paused
        assert (await handle.describe()).actions_taken >= taken  # SKIP: taken or skipped

        res = await http.post("/api/schedule-unpause/every", json={})
        assert res.status_code == 200, res.text
        assert not (await handle.describe()).paused
        default_note = await http.post("/api/schedule-pause/every", json={})
        assert default_note.status_code == 200
        assert (await handle.describe()).schedule.note == "paused from the web UI"

        form = await http.post("/api/schedule-pause/every", data={"note": "x"})
        assert form.status_code == 415  # a cross-site form cannot post JSON
        bad = await http.post("/api/schedule-pause/every", json={"note": 3})
        assert bad.status_code == 400 and "note" in bad.json()["error"]
        missing = await http.post("/api/schedule-trigger/nobody", json={})
        assert missing.status_code == 404, missing.text
        get = await http.get("/api/schedule-trigger/every")
        assert get.status_code == 405 and "/api/schedule-trigger/{id}" in get.json()["error"]


async def _taken(handle: df.ScheduleHandle, n: int) -> bool:
    return (await handle.describe()).actions_taken >= n


async def _trigger_seen(handle: df.ScheduleHandle) -> bool:
    return any(j.kind == "triggered" for j in (await handle.describe()).journal)


async def test_a_foreign_origin_cannot_pause_or_trigger(ui: UiEnv) -> None:
    handle = await ui.client.create_schedule("n", _nightly())
    await handle.unpause()
    async with _http(ui) as http:
        for kind in ("pause", "trigger", "unpause"):
            res = await http.post(f"/api/schedule-{kind}/n", json={}, headers={"Origin": EVIL})
            assert res.status_code == 403, res.text
            assert "cross-origin request refused" in res.json()["error"]
        own = await http.post(
            "/api/schedule-pause/n", json={"note": "mine"}, headers={"Origin": ui.url}
        )
        assert own.status_code == 200, own.text
    d = await handle.describe()
    assert d.schedule.note == "mine"
    assert not any(j.kind == "triggered" for j in d.journal)  # the foreign trigger never ran


async def test_with_a_login_schedule_actions_need_a_session_or_the_token(secured: UiEnv) -> None:
    handle = await secured.client.create_schedule("n", _nightly())
    async with _http(secured) as http:
        assert (await http.get("/api/schedules")).status_code == 401
        assert (await http.get("/api/schedules/n")).status_code == 401
        page = await http.get("/schedules/n")
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        same_origin = await http.post(
            "/api/schedule-unpause/n", json={}, headers={"Origin": secured.url}
        )
        assert same_origin.status_code == 401  # not signed in
        no_origin = await http.post("/api/schedule-unpause/n", json={})
        assert no_origin.status_code == 403  # neither an Origin nor the token
        assert (await handle.describe()).paused
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/schedules", headers=bearer)).status_code == 200
        ok = await http.post("/api/schedule-unpause/n", json={}, headers=bearer)
        assert ok.status_code == 200, ok.text
        evil = await http.post("/api/schedule-pause/n", json={}, headers={**bearer, "Origin": EVIL})
        assert evil.status_code == 403  # the token does not excuse a foreign origin
    assert not (await handle.describe()).paused
