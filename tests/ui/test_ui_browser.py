"""The web UI in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

The page is served by ``df ui`` (a subprocess, as a user runs it) against a LocalEnvironment
(real nats-server, in-process df-server, the example worker). Browser calls block, so they run
in a thread while this event loop keeps the df-server going.

Without a browser these tests skip, unless DF_REQUIRE_BROWSER=1 (CI sets it): then they fail
and say what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import durablefuture as df
from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow
from workflows_examples.recovery import recovery_workflow

ARTIFACT = ROOT / "artifacts" / "ui-order-run.png"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
    "--hide-scrollbars",
)
INSTALL = (
    "install it with: apt-get install -y chromium chromium-driver && "
    "pip install -e '.[dev]' (selenium); or point DF_CHROMIUM / DF_CHROMEDRIVER at the binaries"
)


def _chromium_path() -> str | None:
    found = os.environ.get("DF_CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )
    return found if found and os.path.exists(found) else None


def _missing(problems: list[str]) -> None:
    """Fail (DF_REQUIRE_BROWSER=1) or skip, saying what is missing and how to install it."""
    message = "headless browser test: " + "; ".join(problems) + f" — {INSTALL}"
    if os.environ.get("DF_REQUIRE_BROWSER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_chromium() -> str:
    """The Chromium binary (no driver needed), or fail/skip."""
    chromium = _chromium_path()
    if chromium is None:
        _missing(["no Chromium binary (looked for chromium, chromium-browser)"])
    assert chromium is not None
    return chromium


def _find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or fail/skip with what is missing."""
    problems = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("the selenium package is not installed")
    chromium = _chromium_path()
    driver = os.environ.get("DF_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium:
        problems.append("no Chromium binary (looked for chromium, chromium-browser)")
    if not driver or not os.path.exists(driver):
        problems.append("no chromedriver binary")
    if problems:
        _missing(problems)
    assert chromium and driver
    return chromium, driver


@contextlib.contextmanager
def _chromium(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by chromedriver; fails or skips (in the test) if missing."""
    chromium, driver_path = _find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="df-chromium-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.asynccontextmanager
async def df_ui(
    nats_url: str, log: Path, token: str | None = None, extra: Sequence[str] = ()
) -> AsyncIterator[str]:
    """Run ``df ui --port 0 [extra...]`` (with a login if ``token``); yield the address it
    prints."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DF_UI_TOKEN", None)
    if token is not None:
        env["DF_UI_TOKEN"] = token
    args = [sys.executable, "-m", "daemons.df_cli", "--nats", nats_url, "ui", "--port", "0"]
    args += extra
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        log.write_text(line)
        assert line.startswith("DurableFuture UI on http://127.0.0.1:"), line
        yield line.split()[3]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
        assert code == 0, f"df ui exited with {code}"


def _wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 20) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        page = _text(driver)[:2000]
        raise AssertionError(f"timed out waiting for {what}; the page says: {page}") from None


def _text(driver: Any) -> str:
    return str(driver.execute_script("return document.body.innerText"))


# The page re-renders when live updates arrive, so facts are read in one script (atomic in
# the page) rather than through element handles that a re-render can make stale.
FACTS = """
const q = (s) => document.querySelector(s);
const text = (s) => (q(s) ? q(s).innerText : null);
const box = (el) => {
  if (!el) return null;
  const r = el.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height, status: el.dataset.status || null};
};
return {
  title: text("#run-title"),
  status: q("#run-header .badge") ? q("#run-header .badge").dataset.status : null,
  live: q("#live") ? q("#live").className : null,
  why: text("#why"),
  input: text("#input"),
  result: text("#result"),
  history: text("#history"),
  signalDisabled: q("#btn-signal") ? q("#btn-signal").disabled : null,
  listRow: box(q('tr[data-workflow-id="' + arguments[0] + '"] .badge')),
  bars: Object.fromEntries([...document.querySelectorAll(".tl-track .bar[data-activity]")]
    .map((b) => [b.dataset.activity, box(b)])),
  labels: Object.fromEntries([...document.querySelectorAll(".tl-label[data-name]")]
    .map((l) => [l.dataset.name, l.innerText])),
  rows: [...document.querySelectorAll(".tl-track[data-kind]")].map((t) => t.dataset.kind),
  signals: document.querySelectorAll('.tl-track[data-kind="signals"] .mark.diamond').length,
  waitBars: document.querySelectorAll('.tl-track[data-kind="signal_wait"] .bar').length,
};
"""


# The run's duration in the header and on the timeline's run row, read at one moment.
DURATIONS = """
const header = document.querySelector("#run-duration");
const row = document.querySelector('.tl-label[data-kind="workflow"] .run-duration');
const read = (e) => (e ? {text: e.innerText, seconds: Number(e.dataset.seconds)} : null);
return {header: read(header), timeline: read(row)};
"""


def _durations_agree(driver: Any) -> dict[str, Any]:
    d = dict(driver.execute_script(DURATIONS))
    assert d["header"] is not None and d["timeline"] is not None, d
    assert d["header"] == d["timeline"], d
    return d


def _facts(driver: Any, wid: str = "") -> dict[str, Any]:
    return dict(driver.execute_script(FACTS, wid))


def _until(driver: Any, wid: str, test: Callable[[dict[str, Any]], bool], what: str) -> Any:
    return _wait(driver, lambda d: (f := _facts(d, wid)) and test(f) and f, what)


def _click(driver: Any, selector: str) -> None:
    """A real (WebDriver) click, retried if a live update replaced the element meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt(d: Any) -> bool:
        try:
            found = d.find_elements(By.CSS_SELECTOR, selector)
            if not found or not found[0].is_displayed() or not found[0].is_enabled():
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False

    _wait(driver, attempt, f"{selector} to click")


def _no_page_errors(driver: Any) -> None:
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, f"the page logged errors: {errors}"


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page (not just the window), through the DevTools protocol."""
    import base64

    driver.execute_script("window.scrollTo(0, 0)")
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000)}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def _check_order_run(driver: Any, url: str, wid: str, shot: Path) -> None:
    driver.get(url + "/")
    row = _until(driver, wid, lambda f: f["listRow"], f"{wid} in the runs list")["listRow"]
    assert row["status"] == "completed"
    _click(driver, f'tr[data-workflow-id="{wid}"] td.id a')  # in-page navigation

    names = ("charge_credit_card", "ship_package")
    f = _until(driver, wid, lambda f: all(n in f["bars"] for n in names), "both activity bars")
    assert f["title"] == wid and f["status"] == "completed"
    assert f"TRACK-{wid.upper()}" in f["result"]
    assert f'"{wid}"' in f["input"]
    assert f["rows"] == ["workflow", "activity", "activity"]
    for name in names:
        bar = f["bars"][name]
        assert bar["status"] == "completed"
        assert bar["width"] >= 3 and bar["height"] >= 10, bar
        assert name in f["labels"][name] and "completed" in f["labels"][name]
    charge, ship = f["bars"]["charge_credit_card"], f["bars"]["ship_package"]
    assert ship["x"] >= charge["x"] + charge["width"] - 1, (charge, ship)  # ship after charge
    assert ship["y"] - charge["y"] >= 20, (charge, ship)  # one row each
    assert f["history"].count("ActivityCompleted") == 2
    d = _durations_agree(driver)
    assert d["header"]["seconds"] > 0
    _no_page_errors(driver)
    _screenshot(driver, shot)


async def test_finished_order_run_shows_both_activities_on_its_timeline(tmp_path: Path) -> None:
    with _chromium(tmp_path) as browser:
        await _order_run_in_browser(browser, tmp_path)
    data = (tmp_path / "ui-order-run.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "ui-order-run.png", ARTIFACT)


async def _order_run_in_browser(browser: Any, tmp_path: Path) -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            await env.client.execute_workflow(
                order_workflow, "order-ui-1", 42.0, id="order-ui-1", task_queue=TASK_QUEUE
            )
            await env.client.execute_workflow(
                recovery_workflow, "order-ui-2", id="recovery-ui-2", task_queue=TASK_QUEUE
            )
            shot = tmp_path / "ui-order-run.png"
            async with df_ui(env.nats_url, tmp_path / "df-ui.log") as url:
                await asyncio.to_thread(_check_order_run, browser, url, "order-ui-1", shot)


def _signal_from_the_page(driver: Any, url: str, wid: str) -> None:
    driver.get(f"{url}/workflows/{wid}")
    f = _until(driver, wid, lambda f: "on" in (f["live"] or "").split(), "the live indicator")
    assert f["status"] == "running"
    f = _until(driver, wid, lambda f: f["waitBars"] == 1, "the signal wait bar")
    assert "waiting for signal 'decision'" in f["why"]
    # while it runs both durations move on together, every second
    first = _durations_agree(driver)["header"]["seconds"]
    _wait(
        driver,
        lambda d: _durations_agree(d)["header"]["seconds"] >= first + 1,
        "the running duration to move on",
    )
    driver.execute_script("window.__sameDocument = true")

    _click(driver, "#btn-signal")
    _wait(driver, lambda d: d.find_element("id", "signal-name").is_displayed(), "the dialog")
    driver.find_element("id", "signal-name").send_keys("decision")
    args = driver.find_element("id", "signal-args")
    args.clear()
    args.send_keys('["approved"]')
    driver.find_element("id", "action-submit").click()

    # no reload: the live stream brings the signal, the activity it triggers and the close
    f = _until(
        driver,
        wid,
        lambda f: f["status"] == "completed" and "notify_requester" in f["bars"],
        "the run to complete on the page",
    )
    assert driver.execute_script("return window.__sameDocument") is True
    assert f["signals"] == 1
    assert '"approved"' in f["result"]
    assert f["signalDisabled"] is True
    _no_page_errors(driver)


async def test_running_run_updates_live_and_takes_a_signal_from_the_page(tmp_path: Path) -> None:
    with _chromium(tmp_path) as browser:
        result = await _signal_in_browser(browser, tmp_path)
    assert result["decision"] == "approved"


async def _signal_in_browser(browser: Any, tmp_path: Path) -> Any:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            handle = await env.client.start_workflow(
                approval_workflow, "req-ui", 600.0, id="approval-ui", task_queue=TASK_QUEUE
            )
            async with df_ui(env.nats_url, tmp_path / "df-ui.log") as url:
                await asyncio.to_thread(_signal_from_the_page, browser, url, "approval-ui")
            return await handle.result(timeout=10)


# ------------------------------------------------------------------ the timeline's legend

# Each bar's colour key (its "c-" class) and how it looks; each legend entry and how its
# swatch looks. Read in one script, so a live re-render cannot tear it.
LEGEND = """
const look = (e) => {
  const s = getComputedStyle(e);
  const border = s.borderTopStyle === "none" ? "none" : `${s.borderTopStyle} ${s.borderTopColor}`;
  return [s.backgroundColor, s.backgroundImage, border].join(" | ");
};
const q = (s) => document.querySelector(s);
return {
  title: q("#run-title") ? q("#run-title").innerText : null,
  status: q("#run-header .badge") ? q("#run-header .badge").dataset.status : null,
  kinds: [...document.querySelectorAll(".tl-track[data-kind]")].map((t) => t.dataset.kind),
  bars: [...document.querySelectorAll("#timeline .bar")].map((b) => ({
    status: b.dataset.status || null,
    colours: [...b.classList].filter((c) => c.startsWith("c-")).map((c) => c.slice(2)),
    look: look(b),
  })),
  legend: Object.fromEntries([...document.querySelectorAll("#legend [data-legend]")].map((e) => [
    e.dataset.legend, {label: e.innerText.trim(), look: look(e.querySelector("i"))}])),
};
"""

# every colour a timeline segment can have (SEGMENT_COLOURS in app.js)
ALL_COLOURS = {
    "completed",
    "running",
    "scheduled",
    "backoff",
    "failed",
    "timed_out",
    "cancelled",
    "terminated",
    "continued_as_new",
    "abandoned",
    "timer",
    "timer_pending",
    "wait",
    "wait_pending",
    "child",
}


Ready = Callable[[dict[str, Any]], bool]


def _legend_of(driver: Any, url: str, path: str, ready: Ready) -> Any:
    driver.get(f"{url}/workflows/{path}")
    wid = path.split("?")[0]

    def facts(d: Any) -> Any:
        f = dict(d.execute_script(LEGEND))
        return f if f["title"] == wid and f["bars"] and ready(f) else None

    return _wait(driver, facts, f"the timeline of {path}")


def _check_legends(driver: Any, url: str, runs: dict[str, Ready]) -> None:
    seen: set[str] = set()
    for path, ready in runs.items():
        f = _legend_of(driver, url, path, ready)
        for bar in f["bars"]:
            assert len(bar["colours"]) == 1, (path, bar)  # one colour class per bar
            [colour] = bar["colours"]
            assert colour in f["legend"], f"{path}: {colour} is drawn but not in the legend"
            swatch = f["legend"][colour]["look"]
            assert swatch == bar["look"], f"{path}: the {colour} swatch looks unlike its bar"
            seen.add(colour)
        drawn = {c for bar in f["bars"] for c in bar["colours"]}
        assert set(f["legend"]) - {"signal"} == drawn, (path, f["legend"], drawn)  # no extras
        if "timed_out" in drawn:
            assert f["legend"]["timed_out"]["label"] == "timed out"
    assert seen == ALL_COLOURS, sorted(ALL_COLOURS - seen)
    _no_page_errors(driver)


async def test_every_colour_on_the_timeline_is_in_its_legend(tmp_path: Path) -> None:
    from tests.ui import flows

    with _chromium(tmp_path) as browser:
        async with LocalEnvironment() as env:
            c = env.client
            async with (
                env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES),
                # its "stalls" attempt is still running when the pages are checked: the
                # worker leaves at once then, instead of draining until it ends (30 s)
                env.worker(
                    task_queue=flows.TASK_QUEUE,
                    workflows=flows.WORKFLOWS,
                    activities=flows.ACTIVITIES,
                    options=df.WorkerOptions(drain_timeout=0.5),
                ),
            ):
                q = flows.TASK_QUEUE
                await c.execute_workflow(
                    recovery_workflow, "o", id="recovery", task_queue=TASK_QUEUE
                )
                await c.execute_workflow(flows.timeouts_flow, id="timeouts", task_queue=q)
                await c.execute_workflow(flows.once_more, 0, id="again", task_queue=q)
                go = await c.start_workflow(
                    flows.signalled, id="signalled", task_queue=q, signal=("go", ["now"])
                )
                await go.result(timeout=20)
                with pytest.raises(df.WorkflowFailedError):
                    await c.execute_workflow(flows.failing_flow, id="failing", task_queue=q)
                late = df.WorkflowOptions(execution_timeout=0.5)
                with pytest.raises(df.WorkflowTimedOutError):
                    await c.execute_workflow(
                        flows.waits_too_long, id="too-long", task_queue=q, options=late
                    )
                for wid in ("cancelled", "terminated", "waiting"):
                    await c.start_workflow(
                        approval_workflow, wid, 600.0, id=wid, task_queue=TASK_QUEUE
                    )
                await c.get_workflow_handle("cancelled").cancel("enough")
                await c.get_workflow_handle("terminated").terminate("stop")
                await c.start_workflow(flows.everything_pending, id="pending", task_queue=q)
                first_run = (await c.list_workflows(status="continued_as_new"))[0].run_id
                runs: dict[str, Ready] = {
                    "recovery": lambda f: True,
                    "signalled": lambda f: True,
                    "timeouts": lambda f: f["status"] == "completed",
                    "again?run_id=" + first_run: lambda f: True,
                    "failing": lambda f: True,
                    "too-long": lambda f: True,
                    "cancelled": lambda f: f["status"] == "cancelled",
                    "terminated": lambda f: f["status"] == "terminated",
                    "waiting": lambda f: "signal_wait" in f["kinds"],
                    "pending": lambda f: (
                        {b["status"] for b in f["bars"]}
                        >= {"scheduled", "running", "backoff", "pending"}
                    ),
                }
                async with df_ui(env.nats_url, tmp_path / "df-ui.log") as url:
                    await asyncio.to_thread(_check_legends, browser, url, runs)
