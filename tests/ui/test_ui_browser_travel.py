"""Time travel on a run's page, in a real headless Chromium, with the Content-Security-Policy on.

``df ui --workflows tests.ui.travel_flows:WORKFLOWS`` runs as a user runs it, against a
LocalEnvironment that ran ``travel_flow`` to completion (an activity retried once, a timer, a
signal wait). The browser moves the slider with the keyboard, the buttons, the arrow keys and
a mouse click on its track; at each stop the page must show the state, the query answer and
the paused source line of that event (worked out from the history), mark the event in the
history table and on the timeline, and report no CSP violation and no error. Without a
browser these tests skip, unless DF_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from durablefuture.testing import LocalEnvironment
from tests.ui import travel_flows
from tests.ui.test_ui_browser import _chromium, _click, _screenshot, _wait, df_ui
from tests.ui.test_ui_browser_login import CSP_WATCH, _no_violations
from tests.ui.test_ui_time_travel import _expected, _line, run_travel_flow

WID = "order/travel-1"
PAGE = "/workflows/order%2Ftravel-1"

# Read in one script (atomic in the page): what the time-travel card shows now.
TRAVEL = """
const q = (s) => document.querySelector(s);
const card = q("#travel");
const where = q("#travel-where");
return {
  shown: card ? Number(card.dataset.shown || 0) : 0,
  busy: card ? card.classList.contains("busy") : null,
  slider: q("#travel-slider") ? Number(q("#travel-slider").value) : 0,
  max: q("#travel-slider") ? Number(q("#travel-slider").max) : 0,
  focused: document.activeElement ? document.activeElement.id : null,
  position: q("#travel-position") ? Number(q("#travel-position").dataset.event) : 0,
  status: q("#travel-status") ? q("#travel-status").dataset.status : null,
  pending: [...document.querySelectorAll("#travel-pending li")].map((li) => ({
    kind: li.dataset.kind, name: li.dataset.name, attempt: Number(li.dataset.attempt || 0),
    text: li.innerText})),
  where: where ? {line: Number(where.dataset.line || 0), finished: where.dataset.finished === "1",
    text: where.innerText} : null,
  current: q("#travel-source .current") ? q("#travel-source .current").innerText : null,
  queries: Object.fromEntries([...document.querySelectorAll("#travel-queries tr[data-query]")]
    .map((r) => [r.dataset.query, {ok: r.dataset.ok === "1", text: r.cells[1].innerText}])),
  note: q("#travel-note") ? q("#travel-note").innerText : null,
  highlighted: [...document.querySelectorAll("#history tr.travel-current")]
    .map((r) => Number(r.dataset.eventId)),
  cursor: Boolean(q("#timeline #travel-cursor")),
};
"""


def _travel(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script(TRAVEL))


def _at(driver: Any, event: int) -> dict[str, Any]:
    """Wait until the card shows ``event`` (its answer in, nothing in flight)."""
    return dict(
        _wait(
            driver,
            lambda d: (f := _travel(d))["shown"] == event and not f["busy"] and f,
            f"the state at event {event}",
        )
    )


def _check(f: dict[str, Any], history: list[dict[str, Any]], *, chosen: bool = True) -> None:
    """What the card shows agrees with what events 1..shown of the history say."""
    n = f["shown"]
    want = _expected(history, n)
    assert f["slider"] == f["position"] == n, f
    assert f["status"] == want["status"], (n, f)
    kinds = sorted(p["kind"] for p in f["pending"])
    expected_kinds = sorted(
        k
        for k, on in (
            ("activity", want["activity_open"]),
            ("timer", want["timer_open"]),
            ("signal_wait", want["wait_open"]),
        )
        if on
    )
    assert kinds == expected_kinds, (n, f["pending"])
    for p in f["pending"]:
        if p["kind"] == "activity":
            assert p["name"] == "reserve" and p["attempt"] == want["attempt"], (n, p)
            if want["attempt"] > 1:
                assert "the warehouse is busy (attempt 1)" in p["text"]
        if p["kind"] == "signal_wait":
            assert p["name"] == "approve"
    progress = f["queries"]["progress"]
    assert progress["ok"] and want["stage"] in progress["text"], (n, f["queries"])
    assert not f["queries"]["echo"]["ok"] and "takes arguments" in f["queries"]["echo"]["text"]
    assert ("approver" in f["queries"]) is want["approver_handler"], (n, f["queries"])
    if want["where"] is None:
        assert f["where"]["finished"] and "return (workflow completed)" in f["where"]["text"]
        assert f["current"] is None
    else:
        line = _line(want["where"])
        assert f["where"]["line"] == line, (n, f["where"])
        assert f"tests/ui/travel_flows.py:{line}" in f["where"]["text"]
        assert f["current"].rstrip().endswith(f"# {want['where']}"), (n, f["current"])
    if chosen:
        assert f["highlighted"] == [n] and f["cursor"], (n, f["highlighted"], f["cursor"])


def _travel_in_the_page(driver: Any, url: str, history: list[dict[str, Any]], shot: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
    total = len(history)
    driver.get(url + PAGE)
    # at first it shows the last event, following the run (nothing chosen, so nothing marked)
    f = _at(driver, total)
    assert f["max"] == total
    _check(f, history, chosen=False)
    assert f["highlighted"] == [] and not f["cursor"]
    _no_violations(driver)

    # the keyboard on the slider: Home, then one event at a time to the retry
    slider = driver.find_element("id", "travel-slider")
    slider.send_keys(Keys.HOME)
    _check(_at(driver, 1), history)
    retry = next(e["event_id"] for e in history if e["t"] == "ActivityRetryScheduled")
    for n in range(2, retry + 1):
        slider.send_keys(Keys.ARROW_RIGHT)
        _check(_at(driver, n), history)
    f = _travel(driver)
    assert f["focused"] == "travel-slider"

    # the buttons, to the timer and past it
    timer = next(e["event_id"] for e in history if e["t"] == "TimerStarted")
    for n in range(retry + 1, timer + 2):
        _click(driver, "#travel-next")
        _check(_at(driver, n), history)

    # the arrow keys anywhere on the page (not in a field)
    _click(driver, "#travel-position")  # away from the slider and the buttons
    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
    _check(_at(driver, timer + 2), history)
    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
    _check(_at(driver, timer + 1), history)

    # a click on the slider's track: wherever it lands, the card agrees with history there
    box = slider.rect
    for fraction in (0.9, 0.1, 0.55):
        x = int(box["width"] * (fraction - 0.5))
        ActionChains(driver).move_to_element_with_offset(slider, x, 0).click().perform()
        landed = int(driver.execute_script("return document.querySelector('#travel-slider').value"))
        _check(_at(driver, landed), history, chosen=landed < total)

    # the last event again: following the run, nothing marked
    _click(driver, "#travel-last")
    f = _at(driver, total)
    _check(f, history, chosen=False)
    assert f["highlighted"] == [] and not f["cursor"]
    _click(driver, "#travel-first")
    _check(_at(driver, 1), history)
    _screenshot(driver, shot)
    _no_violations(driver)
    driver.get("about:blank")  # leave before this UI stops: its page would try to reconnect


def _without_code(driver: Any, url: str, total: int) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
    driver.get(url + PAGE)
    f = _at(driver, total)
    assert "df ui --workflows" in (f["note"] or ""), f
    assert f["queries"] == {} and f["where"] is None and f["status"] == "completed"
    driver.find_element("id", "travel-slider").send_keys(Keys.HOME)
    f = _at(driver, 1)
    assert f["status"] == "running" and "df ui --workflows" in (f["note"] or "")
    _no_violations(driver)


async def test_the_slider_moves_the_state_the_query_answer_and_the_source_line(
    tmp_path: Path,
) -> None:
    with _chromium(tmp_path) as browser:
        async with LocalEnvironment() as env:
            async with env.worker(
                task_queue=travel_flows.TASK_QUEUE,
                workflows=travel_flows.WORKFLOWS,
                activities=travel_flows.ACTIVITIES,
            ):
                await run_travel_flow(env, WID)
            flows = ["--workflows", "tests.ui.travel_flows:WORKFLOWS"]
            async with df_ui(env.nats_url, tmp_path / "df-ui.log", extra=flows) as url:
                async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                    history = (await http.get("/api/workflows/" + PAGE.split("/")[-1])).json()
                history = history["history"]
                shot = tmp_path / "ui-time-travel.png"
                await asyncio.to_thread(_travel_in_the_page, browser, url, history, shot)
            async with df_ui(env.nats_url, tmp_path / "df-ui-plain.log") as url:
                await asyncio.to_thread(_without_code, browser, url, len(history))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
