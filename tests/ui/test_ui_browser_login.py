"""The web UI with a login and its Content-Security-Policy, in a real headless Chromium.

``df ui`` runs as a user runs it, with ``DF_UI_TOKEN`` set, against a LocalEnvironment. The
browser signs in on the form, then signals one run and cancels another from their pages; the
page must report no Content-Security-Policy violation (a listener installed before any page
script runs records them) and log no error. Without a browser these tests skip, unless
DF_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from durablefuture.testing import LocalEnvironment
from tests.ui.test_ui_browser import _chromium, _click, _until, _wait, df_ui
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow

TOKEN = "browser-login-token-0123456789abcdef"

# Installed in every document before its own scripts (DevTools), so nothing escapes it.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def _violations(driver: Any) -> list[str]:
    return list(driver.execute_script("return window.__csp || []"))


def _no_violations(driver: Any) -> None:
    """No violation reported in this document, and no error (a refused load is one) logged."""
    assert _violations(driver) == [], _violations(driver)
    logged = driver.get_log("browser")  # everything since the last call, across documents
    bad = [e for e in logged if e["level"] == "SEVERE" or "Content Security" in e["message"]]
    assert bad == [], bad


def _path(driver: Any) -> str:
    return urlsplit(driver.current_url).path


def _open_run(driver: Any, url: str, wid: str) -> None:
    driver.get(f"{url}/workflows/{quote(wid, safe='')}")
    _until(
        driver,
        wid,
        lambda f: f["title"] == wid and "on" in (f["live"] or "").split(),
        f"{wid}'s page, following it live",
    )


def _sign_in_then_act(driver: Any, url: str, signalled: str, cancelled: str) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})

    # a run's address, not signed in: the sign-in form, then back to that run
    target = f"/workflows/{quote(signalled, safe='')}"
    driver.get(url + target)
    _wait(driver, lambda d: _path(d) == "/login", "the sign-in page")
    driver.find_element("id", "token").send_keys("not-the-token-0123456789")
    driver.find_element("id", "login-submit").click()
    _wait(driver, lambda d: d.find_elements("id", "login-error"), "the wrong token refused")
    logs = driver.get_log("browser")
    [refused] = [e for e in logs if e["level"] != "DEBUG"]  # the form's 401, and only that
    assert "/login" in refused["message"] and "401" in refused["message"], refused
    assert _violations(driver) == []
    driver.find_element("id", "token").send_keys(TOKEN)
    driver.find_element("id", "login-submit").click()
    _until(
        driver,
        signalled,
        lambda f: f["title"] == signalled and "on" in (f["live"] or "").split(),
        "the run, live, after signing in",
    )
    assert _path(driver) == target
    assert "df_ui_session" not in driver.execute_script("return document.cookie")  # HttpOnly
    _no_violations(driver)

    # signal it from its page
    _click(driver, "#btn-signal")
    _wait(driver, lambda d: d.find_element("id", "signal-name").is_displayed(), "the dialog")
    driver.find_element("id", "signal-name").send_keys("decision")
    args = driver.find_element("id", "signal-args")
    args.clear()
    args.send_keys('["approved"]')
    driver.find_element("id", "action-submit").click()
    f = _until(
        driver,
        signalled,
        lambda f: f["status"] == "completed" and "notify_requester" in f["bars"],
        "the signalled run to complete on the page",
    )
    assert f["signals"] == 1 and '"approved"' in f["result"]
    _no_violations(driver)

    # cancel the other one from its page
    _open_run(driver, url, cancelled)
    _click(driver, "#btn-cancel")
    _wait(driver, lambda d: d.find_element("id", "reason").is_displayed(), "the cancel dialog")
    driver.find_element("id", "reason").send_keys("cancelled from the browser")
    driver.find_element("id", "action-submit").click()
    _until(driver, cancelled, lambda f: f["status"] == "cancelled", "the run to be cancelled")
    _no_violations(driver)

    # the runs list, then sign out: the pages ask for the token again
    driver.get(url + "/")
    _until(driver, cancelled, lambda f: f["listRow"], "the runs list")
    _no_violations(driver)
    _click(driver, "#sign-out")
    _wait(driver, lambda d: _path(d) == "/login", "the sign-in page after signing out")
    driver.get(url + "/")
    _wait(driver, lambda d: _path(d) == "/login", "the sign-in page again")
    _no_violations(driver)

    # and the policy is really on: a script injected into the page does not run
    driver.get(url + "/login")
    ran = driver.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'window.__inline = 1';"
        "document.head.append(s);"
        "return window.__inline === 1;"
    )
    assert ran is False
    _wait(driver, lambda d: any("script-src" in v for v in _violations(d)), "the CSP report")


async def test_signed_in_browser_signals_and_cancels_with_the_policy_on(tmp_path: Path) -> None:
    signalled, cancelled = "team/approval-ui", "approval-cancel-ui"
    with _chromium(tmp_path) as browser:
        async with LocalEnvironment() as env:
            async with env.worker(
                task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES
            ):
                handles = [
                    await env.client.start_workflow(
                        approval_workflow, wid, 600.0, id=wid, task_queue=TASK_QUEUE
                    )
                    for wid in (signalled, cancelled)
                ]
                log = tmp_path / "df-ui.log"
                async with df_ui(env.nats_url, log, token=TOKEN) as url:
                    await asyncio.to_thread(_sign_in_then_act, browser, url, signalled, cancelled)
                assert TOKEN not in log.read_text()
                result = await handles[0].result(timeout=10)
                cancel = await handles[1].describe()
    assert result["decision"] == "approved"
    assert cancel.status == "cancelled"
