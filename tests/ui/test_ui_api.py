"""The web UI's JSON API, live stream and CLI wiring, against a real engine (LocalEnvironment).

The UI is served by ``durablefuture.ui.serve`` on a free loopback port in the test's event loop
(next to the in-process df-server and the example worker), and driven with httpx.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from daemons import ui_command
from daemons.df_cli import main as df_main
from durablefuture.core import events as ev
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions
from durablefuture.ui.timeline import build_timeline
from tests.conftest import ROOT, wait_for
from tests.ui.conftest import UiEnv
from workflows_examples import TASK_QUEUE
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow
from workflows_examples.recovery import recovery_workflow

JSON = {"Content-Type": "application/json"}


async def _http(env: UiEnv) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=env.url, timeout=20)


async def _wait_status(env: UiEnv, wid: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with await _http(env) as http:
        while True:
            body: dict[str, Any] = (await http.get(f"/api/workflows/{wid}")).json()
            if body["workflow"]["status"] == status:
                return body
            assert time.monotonic() < deadline, f"{wid} is {body['workflow']['status']}"
            await asyncio.sleep(0.1)


async def _order(env: UiEnv, wid: str = "order-1") -> None:
    await env.client.execute_workflow(
        order_workflow, wid, 42.0, id=wid, task_queue=TASK_QUEUE, timeout=20
    )


# ------------------------------------------------------------------ list


async def test_list_filters_by_status_type_and_id_with_counts(ui_env: UiEnv) -> None:
    await _order(ui_env)
    await ui_env.client.execute_workflow(
        recovery_workflow, "o-2", id="recovery-1", task_queue=TASK_QUEUE, timeout=20
    )
    await ui_env.client.start_workflow(
        approval_workflow, "req-1", 600.0, id="approval-1", task_queue=TASK_QUEUE
    )
    async with await _http(ui_env) as http:
        # the list reads the df-servers' visibility index, fed by a watch: wait for the runs
        async def listed() -> bool:
            return len((await http.get("/api/workflows")).json()["workflows"]) == 3

        await wait_for(listed, 20)
        everything = (await http.get("/api/workflows")).json()
        assert [w["workflow_id"] for w in everything["workflows"]] == [
            "approval-1",
            "recovery-1",
            "order-1",
        ]  # newest first
        assert everything["total"] == 3
        assert everything["counts"]["completed"] == 2
        assert everything["counts"]["running"] == 1
        assert everything["types"] == ["approval_workflow", "order_workflow", "recovery_workflow"]
        row = everything["workflows"][2]
        assert row["workflow_type"] == "order_workflow"
        assert row["status"] == "completed"
        assert row["close_time"] >= row["start_time"] > 0

        running = (await http.get("/api/workflows", params={"status": "running"})).json()
        assert [w["workflow_id"] for w in running["workflows"]] == ["approval-1"]

        by_type = (await http.get("/api/workflows", params={"type": "order_workflow"})).json()
        assert [w["workflow_id"] for w in by_type["workflows"]] == ["order-1"]
        assert by_type["counts"]["completed"] == 1  # counts follow the type/id filters

        by_id = (await http.get("/api/workflows", params={"q": "RECOV"})).json()
        assert [w["workflow_id"] for w in by_id["workflows"]] == ["recovery-1"]

        none = (await http.get("/api/workflows", params={"q": "nothing-like-this"})).json()
        assert none["workflows"] == [] and none["total"] == 0

        # the filter box takes the visibility query language (the df-server's index)
        q = "WorkflowType IN ('order_workflow', 'recovery_workflow') ORDER BY StartTime ASC"

        async def indexed() -> bool:
            return await ui_env.client.count_workflows(q) == 2

        await wait_for(indexed, 20)
        queried = (await http.get("/api/workflows", params={"q": q})).json()
        assert [w["workflow_id"] for w in queried["workflows"]] == ["order-1", "recovery-1"]
        assert queried["counts"]["completed"] == 2 and queried["counts"]["running"] == 0
        assert queried["total"] == 2 and queried["query"] == q
        narrowed = (
            await http.get("/api/workflows", params={"q": q, "type": "recovery_workflow"})
        ).json()
        assert [w["workflow_id"] for w in narrowed["workflows"]] == ["recovery-1"]
        bad_query = await http.get("/api/workflows", params={"q": "WorkflowType = "})
        assert bad_query.status_code == 400 and "position 14" in bad_query.text

        bad = await http.get("/api/workflows", params={"limit": "many"})
        assert bad.status_code == 400


async def test_list_counts_the_events_of_running_runs_too(ui_env: UiEnv) -> None:
    await _order(ui_env)
    await ui_env.client.start_workflow(
        approval_workflow, "req-2", 600.0, id="approval-2", task_queue=TASK_QUEUE
    )
    # the run has started and is waiting: it recorded more than the start the index knows of
    run = await _wait_until(ui_env, "approval-2", lambda b: len(b["timeline"]["rows"]) == 1)
    recorded = len(run["history"])
    assert recorded >= 2 and run["workflow"]["history_length"] == recorded
    async with await _http(ui_env) as http:

        async def both_listed() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (await http.get("/api/workflows")).json()["workflows"]
            return found if len(found) == 2 else None

        rows = await wait_for(both_listed, 20)
    counts = {r["workflow_id"]: (r["status"], r["history_length"]) for r in rows}
    order = (await _http_json(ui_env, "/api/workflows/order-1"))["history"]
    assert counts == {"approval-2": ("running", recorded), "order-1": ("completed", len(order))}
    [listed] = await ui_env.client.list_workflows(status="running")
    assert listed.history_length == recorded  # the library's list says the same
    [indexed] = await ui_env.client.list_workflows(status="running", count_open=False)
    assert indexed.history_length < recorded  # what the index alone knows


async def _http_json(env: UiEnv, path: str) -> dict[str, Any]:
    async with await _http(env) as http:
        body: dict[str, Any] = (await http.get(path)).json()
    return body


# ------------------------------------------------------------------ one run


async def test_run_has_describe_inputs_result_history_timeline_and_why(ui_env: UiEnv) -> None:
    await _order(ui_env)
    async with await _http(ui_env) as http:
        res = await http.get("/api/workflows/order-1")
    assert res.status_code == 200
    body = res.json()
    wf = body["workflow"]
    assert wf["status"] == "completed"
    assert wf["workflow_type"] == "order_workflow"
    assert body["input"] == ["order-1", 42.0]
    assert wf["result"] == {
        "charge": {"order_id": "order-1", "amount": 42.0, "status": "charged"},
        "tracking": "TRACK-ORDER-1",
    }
    types = [e["t"] for e in body["history"]]
    assert types[0] == "WorkflowStarted" and types[-1] == "WorkflowCompleted"
    assert types.count("ActivityScheduled") == 2
    assert [e["event_id"] for e in body["history"]] == list(range(1, len(types) + 1))
    assert body["why"] and "closed: completed" in body["why"][0]

    tl = body["timeline"]
    assert tl["status"] == "completed"
    assert tl["workflow"]["end"] == body["history"][-1]["at"]
    rows = tl["rows"]
    assert [(r["kind"], r["name"], r["status"]) for r in rows] == [
        ("activity", "charge_credit_card", "completed"),
        ("activity", "ship_package", "completed"),
    ]
    charge, ship = rows
    for row in rows:
        assert tl["start"] <= row["start"] <= row["end"] <= tl["end"]
        [attempt] = row["attempts"]
        assert attempt["attempt"] == 1 and attempt["status"] == "completed"
        assert (attempt["start"], attempt["end"]) == (row["start"], row["end"])
    assert ship["start"] >= charge["end"]  # the second activity is scheduled after the first


async def test_timeline_marks_each_failed_attempt_and_the_backoff(ui_env: UiEnv) -> None:
    await ui_env.client.execute_workflow(
        recovery_workflow, "o-2", id="recovery-1", task_queue=TASK_QUEUE, timeout=20
    )
    async with await _http(ui_env) as http:
        body = (await http.get("/api/workflows/recovery-1")).json()
    [row] = body["timeline"]["rows"]
    assert row["name"] == "reserve_inventory" and row["status"] == "completed"
    attempts = row["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    for n, a in enumerate(attempts[:2], start=1):
        assert a["failure"]["message"] == f"inventory service unavailable (attempt {n})"
        assert a["failure"]["type"] == "ApplicationError"
        assert a["retry_at"] - a["end"] >= 0.15  # the backoff (200 ms, then 400 ms) is a gap
    # the next attempt starts when its retry was due, not before
    assert attempts[1]["start"] == pytest.approx(attempts[0]["retry_at"], abs=1e-6)
    assert attempts[2]["start"] == pytest.approx(attempts[1]["retry_at"], abs=1e-6)
    assert attempts[2]["end"] == row["end"]


async def test_unknown_workflow_is_404(ui_env: UiEnv) -> None:
    async with await _http(ui_env) as http:
        res = await http.get("/api/workflows/no-such-run")
        assert res.status_code == 404
        assert "no-such-run" in res.json()["error"]
        sse = await http.get("/api/live/no-such-run")
        assert "event: failure" in sse.text and '"status":404' in sse.text


# ------------------------------------------------------------------ actions


async def test_signal_from_the_api_moves_a_waiting_run_to_completion(ui_env: UiEnv) -> None:
    await ui_env.client.start_workflow(
        approval_workflow, "req-9", 600.0, id="approval-9", task_queue=TASK_QUEUE
    )
    body = await _wait_until(ui_env, "approval-9", lambda b: len(b["timeline"]["rows"]) == 1)
    assert body["workflow"]["status"] == "running"
    assert any("waiting for signal 'decision'" in r for r in body["why"]), body["why"]
    [wait] = body["timeline"]["rows"]
    assert (wait["kind"], wait["name"], wait["status"], wait["end"]) == (
        "signal_wait",
        "decision",
        "waiting",
        None,
    )

    async with await _http(ui_env) as http:
        res = await http.post(
            "/api/signal/approval-9",
            json={"name": "decision", "args": ["approved"]},
        )
        assert res.status_code == 200, res.text
        assert res.json()["ok"] is True
    done = await _wait_status(ui_env, "approval-9", "completed")
    assert done["workflow"]["result"]["decision"] == "approved"
    tl = done["timeline"]
    assert [s["name"] for s in tl["signals"]] == ["decision"]
    assert tl["signals"][0]["args"] == ["approved"]
    wait, notify = tl["rows"]
    assert wait["status"] == "received" and wait["end"] == tl["signals"][0]["at"]
    assert notify["name"] == "notify_requester" and notify["status"] == "completed"


async def test_cancel_and_terminate_from_the_api(ui_env: UiEnv) -> None:
    for wid in ("approval-c", "approval-t"):
        await ui_env.client.start_workflow(
            approval_workflow, wid, 600.0, id=wid, task_queue=TASK_QUEUE
        )
    async with await _http(ui_env) as http:
        res = await http.post("/api/cancel/approval-c", json={"reason": "no longer"})
        assert res.status_code == 200, res.text
        res = await http.post("/api/terminate/approval-t", json={"reason": "stuck"})
        assert res.status_code == 200, res.text
    cancelled = await _wait_status(ui_env, "approval-c", "cancelled")
    assert [e["t"] for e in cancelled["history"]][-1] == "WorkflowCancelled"
    assert any(m["kind"] == "cancel_requested" for m in cancelled["timeline"]["markers"])
    terminated = await _wait_status(ui_env, "approval-t", "terminated")
    assert terminated["history"][-1]["reason"] == "stuck"
    assert terminated["timeline"]["workflow"]["reason"] == "stuck"
    [wait] = terminated["timeline"]["rows"]
    assert wait["status"] == "abandoned"  # still waiting when the run ended


async def test_actions_refuse_bad_requests(ui_env: UiEnv) -> None:
    await ui_env.client.start_workflow(
        approval_workflow, "r", 600.0, id="approval-x", task_queue=TASK_QUEUE
    )
    async with await _http(ui_env) as http:
        form = await http.post("/api/cancel/approval-x", data={"reason": "x"})
        assert form.status_code == 415  # a cross-site form cannot post JSON
        nameless = await http.post("/api/signal/approval-x", json={"args": []})
        assert nameless.status_code == 400 and "name" in nameless.json()["error"]
        args = await http.post("/api/signal/approval-x", json={"name": "d", "args": 1})
        assert args.status_code == 400
        garbage = await http.post("/api/terminate/approval-x", content=b"{nope", headers=JSON)
        assert garbage.status_code == 400
        missing = await http.post("/api/cancel/nobody", json={})
        assert missing.status_code == 404, missing.text
        get = await http.get("/api/cancel/approval-x")
        assert get.status_code == 405 and "POST /api/cancel/{id}" in get.json()["error"]
        old = await http.post("/api/workflows/approval-x/cancel", json={})
        assert old.status_code == 405  # the id is the last part of the path: this is a look-up
        lookup = await http.get("/api/workflows/approval-x/cancel")
        assert lookup.status_code == 404  # of the run whose id is "approval-x/cancel"
        body = (await http.get("/api/workflows/approval-x")).json()
    assert body["workflow"]["status"] == "running"  # none of the above touched it


async def test_loopback_server_refuses_foreign_host_headers(ui_env: UiEnv) -> None:
    async with await _http(ui_env) as http:
        res = await http.get("/api/workflows", headers={"Host": "attacker.example"})
        assert res.status_code == 400
        ok = await http.get("/api/workflows", headers={"Host": "localhost"})
        assert ok.status_code == 200


# ------------------------------------------------------------------ live updates


async def _sse_updates(http: httpx.AsyncClient, path: str) -> AsyncIterator[dict[str, Any]]:
    async with http.stream("GET", path) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in res.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "update":
                yield orjson.loads(line[len("data: ") :])


async def test_event_stream_sends_updates_while_the_run_progresses(ui_env: UiEnv) -> None:
    handle = await ui_env.client.start_workflow(
        approval_workflow, "req-5", 600.0, id="approval-5", task_queue=TASK_QUEUE
    )
    seen: list[tuple[str, int]] = []

    async def follow() -> dict[str, Any]:
        async with await _http(ui_env) as http:
            async for update in _sse_updates(http, "/api/live/approval-5"):
                seen.append((update["workflow"]["status"], len(update["history"])))
                if len(seen) == 1:
                    assert update["workflow"]["status"] == "running"
                    await handle.signal("decision", "approved")
                if update["workflow"]["status"] == "completed":
                    return update
        raise AssertionError("the stream ended before the run completed")

    final = await asyncio.wait_for(follow(), 20)
    assert final["workflow"]["result"]["decision"] == "approved"
    assert seen[0][0] == "running"
    assert len(seen) >= 2 and seen[-1][1] > seen[0][1]  # the history grew in between


# ------------------------------------------------------------------ the page


async def test_page_and_static_files_are_served(ui_env: UiEnv) -> None:
    async with await _http(ui_env) as http:
        index = await http.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert '<script src="/static/app.js">' in index.text
        deep = await http.get("/workflows/order%2F1")  # ids may contain "/"
        assert deep.status_code == 200 and '<script src="/static/app.js">' in deep.text
        assert _initial(deep.text)["workflow_id"] == "order/1"
        js = await http.get("/static/app.js")
        assert js.status_code == 200 and "renderTimeline" in js.text
        css = await http.get("/static/app.css")
        assert css.status_code == 200 and ".tl-track" in css.text
        everything = index.text + js.text + css.text
        assert "https://" not in everything and "cdn" not in everything  # no internet needed


def _initial(html: str) -> Any:
    """The data the server put into the page (the JSON script before app.js)."""
    match = re.search(r'<script id="df-initial" type="application/json">(.*?)</script>', html)
    assert match is not None, html
    assert "<" not in match.group(1) and ">" not in match.group(1)  # nothing can end the script
    return orjson.loads(match.group(1))


async def test_the_page_carries_the_data_it_shows_first(ui_env: UiEnv) -> None:
    await _order(ui_env, "</script><b>order")
    async with await _http(ui_env) as http:
        page = await http.get("/workflows/%3C%2Fscript%3E%3Cb%3Eorder")
        listed = await http.get("/", params={"q": "order", "status": "completed"})
        missing = await http.get("/workflows/nobody")
        api = (await http.get("/api/workflows/%3C%2Fscript%3E%3Cb%3Eorder")).json()
    run = _initial(page.text)
    assert (run["route"], run["workflow_id"], run["run_id"]) == ("run", "</script><b>order", None)
    assert run["data"]["workflow"] == api["workflow"] and run["data"]["history"] == api["history"]
    assert page.text.count("</script>") == 2  # the data's own and app.js's
    first = _initial(listed.text)
    assert first["route"] == "list" and first["query"] == "q=order&status=completed"
    assert [w["workflow_id"] for w in first["data"]["workflows"]] == ["</script><b>order"]
    gone = _initial(missing.text)
    assert (gone["route"], gone["workflow_id"], gone["status"]) == ("run", "nobody", 404)
    assert "nobody" in gone["error"] and "data" not in gone


def test_segment_colours_are_the_legend_entries_and_nothing_else_colours_a_bar() -> None:
    static = ROOT / "durablefuture" / "ui" / "static"
    css = (static / "app.css").read_text()
    js = (static / "app.js").read_text()
    table = js[js.index("const SEGMENT_COLOURS = [") : js.index("];", js.index("SEGMENT_COLOURS"))]
    legend = dict(re.findall(r'\["([a-z_]+)", "([^"]+)"\]', table))
    assert legend["timed_out"] == "timed out"
    assert set(re.findall(r"\.c-([a-z_]+)", css)) == set(legend)
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        if ".bar" in selector and re.search(r"\bbackground(-color|-image)?\s*:", body):
            assert all(".c-" in part for part in selector.split(",")), selector.strip()


async def test_workflow_ids_with_slashes_reach_the_right_route(ui_env: UiEnv) -> None:
    await _order(ui_env, "shop/order-7")
    async with await _http(ui_env) as http:
        body = (await http.get("/api/workflows/shop%2Forder-7")).json()
        assert body["workflow"]["workflow_id"] == "shop/order-7"
        res = await http.post("/api/signal/shop%2Forder-7", json={"name": "late"})
        assert res.status_code in (200, 409), res.text  # routed to the action, not a GET


# ------------------------------------------------------------------ timeline, pure


def _opts() -> ActivityOptions:
    return ActivityOptions(task_queue="q", start_to_close_timeout=5.0)


def _started(at: float = 100.0) -> ev.WorkflowStarted:
    return ev.WorkflowStarted(1, at, "wf", "w", "r", "default", "q")


def test_timeline_of_an_open_run_ends_at_now_and_keeps_pending_rows_open() -> None:
    history: list[ev.Event] = [
        _started(),
        ev.TimerStarted(2, 101.0, 1, 1, 30.0, 131.0),
        ev.ActivityScheduled(3, 101.0, 1, 2, "slow", (), _opts()),
        ev.ActivityRetryScheduled(4, 102.0, 2, 1, Failure("boom", "IOError"), 8.0, 110.0),
    ]
    tl = build_timeline(history, now=105.0)
    assert (tl["status"], tl["end"], tl["now"]) == ("running", 105.0, 105.0)
    timer, act = tl["rows"]  # type: ignore[misc]
    assert (timer["kind"], timer["status"], timer["end"]) == ("timer", "pending", None)
    assert timer["detail"]["fire_at"] == 131.0
    assert act["status"] == "retrying"
    assert [(a["attempt"], a["status"], a["start"]) for a in act["attempts"]] == [
        (1, "failed", 101.0),
        (2, "backoff", 110.0),  # not started yet: due at the retry time
    ]


def test_timeline_draws_a_search_attribute_upsert_as_a_point() -> None:
    from durablefuture.core.search_attributes import SearchAttribute

    upsert = ev.SearchAttributesUpserted(2, 101.0, 1, 1, {"Stage": SearchAttribute("keyword", "x")})
    tl = build_timeline([_started(), upsert], now=105.0)
    assert tl["rows"] == []
    [marker] = tl["markers"]  # type: ignore[misc]
    assert marker["label"] == "upsert_search_attributes ['Stage']"


def test_timeline_matches_signals_to_waits_in_order_even_when_sent_early() -> None:
    history: list[ev.Event] = [
        _started(),
        ev.SignalReceived(2, 100.5, "go", ("first",)),
        ev.SignalWaitStarted(3, 101.0, 1, 1, "go"),
        ev.SignalWaitStarted(4, 102.0, 3, 2, "go", timeout=5.0, deadline=107.0),
        ev.SignalWaitTimedOut(5, 107.0, 2),
        ev.WorkflowTerminated(6, 108.0, "enough"),
    ]
    tl = build_timeline(history, now=500.0)
    first, second = tl["rows"]  # type: ignore[misc]
    assert (first["status"], first["end"]) == ("received", 101.0)  # buffered signal: no wait
    assert (second["status"], second["end"]) == ("timed_out", 107.0)
    assert tl["end"] == 108.0 and tl["status"] == "terminated"


def test_timeline_ends_open_work_at_the_close_and_records_timeouts() -> None:
    history: list[ev.Event] = [
        _started(),
        ev.ActivityScheduled(2, 100.0, 1, 1, "a", (), _opts()),
        ev.ActivityScheduled(3, 100.0, 1, 2, "b", (), _opts()),
        ev.ActivityTimedOut(4, 105.0, 1, 1, "start_to_close", Failure("late", "TimeoutError")),
        ev.WorkflowFailed(5, 106.0, 4, Failure("a timed out", "ActivityError")),
    ]
    tl = build_timeline(history, now=999.0)
    a, b = tl["rows"]  # type: ignore[misc]
    assert a["status"] == "timed_out" and a["attempts"][0]["failure"]["message"] == "late"
    assert (b["status"], b["end"]) == ("abandoned", 106.0)
    assert tl["workflow"]["failure"]["type"] == "ActivityError"  # type: ignore[index]


# ------------------------------------------------------------------ CLI


def test_df_ui_without_starlette_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_command, "ui_available", lambda: False)
    result = CliRunner().invoke(df_main, ["ui", "--port", "0"])
    assert result.exit_code != 0
    assert "pip install 'durablefuture[ui]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


async def test_dev_ui_without_starlette_prints_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_command, "ui_available", lambda: False)
    line, stop = await ui_command.start_dev_ui(None)  # type: ignore[arg-type]
    assert "pip install 'durablefuture[ui]'" in line
    await stop()


def test_df_ui_help() -> None:
    result = CliRunner().invoke(df_main, ["ui", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_df_dev_serves_the_ui_and_prints_its_address(tmp_path: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemons.df_cli", "dev", "--port", "0"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "web UI:" in line:
                url = line.split("web UI:", 1)[1].strip()
        assert url is not None and url.startswith("http://127.0.0.1:"), "".join(lines)
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "DurableFuture" in page.text
        runs = httpx.get(url + "/api/workflows", timeout=10)
        assert runs.status_code == 200 and runs.json()["namespace"] == "default"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise


async def _wait_until(env: UiEnv, wid: str, predicate: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with await _http(env) as http:
        while True:
            res = await http.get(f"/api/workflows/{wid}")
            if res.status_code == 200 and predicate(body := res.json()):
                return body
            assert time.monotonic() < deadline, res.text
            await asyncio.sleep(0.1)
