"""The web UI's trust boundary: login, same-origin actions, security headers, unambiguous routes.

Served by ``durablefuture.ui.serve`` on a free loopback port against a LocalEnvironment (real
nats-server, in-process df-server, the example worker) and driven with httpx, as a browser or
an API client would; ``df ui`` itself runs as a subprocess where what it prints matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
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

from daemons.df_cli import main as df_main
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.testing import LocalEnvironment
from durablefuture.ui import serve
from durablefuture.ui.auth import UiAuth, check_exposure, check_token, is_loopback, safe_next
from durablefuture.ui.security import CONTENT_SECURITY_POLICY, SESSION_COOKIE
from tests.conftest import ROOT, wait_for
from tests.ui.conftest import UiEnv, served
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow

TOKEN = "s3cret-ui-token-for-tests-0123456789"
EVIL = "http://evil.example"


@pytest.fixture
async def secured() -> AsyncIterator[UiEnv]:
    """The UI with a login (``TOKEN``), next to a real engine and the example worker."""
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            async with served(env, auth_token=TOKEN) as url:
                yield UiEnv(env, url)


def _http(env: UiEnv, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=env.url, timeout=20, **kwargs)


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _approval(env: UiEnv, wid: str) -> None:
    await env.client.start_workflow(approval_workflow, wid, 600.0, id=wid, task_queue=TASK_QUEUE)


async def _status(env: UiEnv, wid: str) -> str:
    return (await env.client.get_workflow_handle(wid).describe()).status


async def _wait_status(env: UiEnv, wid: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (now := await _status(env, wid)) != status:
        assert time.monotonic() < deadline, f"{wid} is {now}, not {status}"
        await asyncio.sleep(0.05)


async def _sign_in(http: httpx.AsyncClient, next_path: str = "/") -> httpx.Response:
    """Post the login form the way the browser does (same origin, form-encoded)."""
    return await http.post(
        "/login",
        data={"token": TOKEN, "next": next_path},
        headers={"Origin": str(http.base_url).rstrip("/")},
    )


# ------------------------------------------------------------------ same-origin actions


async def test_a_foreign_origin_cannot_change_a_run(ui_env: UiEnv) -> None:
    await _approval(ui_env, "approval-o")
    attempts = [
        ("signal", {"name": "decision", "args": ["approved"]}),
        ("cancel", {"reason": "csrf"}),
        ("terminate", {"reason": "csrf"}),
    ]
    async with _http(ui_env) as http:
        for action, body in attempts:
            for headers in (
                {"Origin": EVIL},
                {"Origin": "null"},  # a sandboxed frame or a file:// page
                {"Origin": ui_env.url.replace("http://", "https://")},  # another scheme
                {"Referer": f"{EVIL}/page"},  # no Origin: the Referer's origin counts
            ):
                res = await http.post(f"/api/{action}/approval-o", json=body, headers=headers)
                assert res.status_code == 403, (action, headers, res.text)
                assert res.headers["content-type"].startswith("application/json")
                error = res.json()["error"]
                assert "cross-origin request refused" in error and ui_env.url in error
        # a same-origin page (Origin, or only a Referer) may act
        ok = await http.post(
            "/api/signal/approval-o",
            json={"name": "decision", "args": ["approved"]},
            headers={"Origin": ui_env.url},
        )
        assert ok.status_code == 200, ok.text
    await _wait_status(ui_env, "approval-o", "completed")  # the signal, and nothing else
    history = await ui_env.client.get_workflow_handle("approval-o").fetch_history()
    kinds = [type(e).__name__ for e in history]
    assert "CancelRequested" not in kinds and "WorkflowTerminated" not in kinds


async def test_a_same_origin_referer_is_accepted_and_posts_must_be_json(ui_env: UiEnv) -> None:
    await _approval(ui_env, "approval-r")
    async with _http(ui_env) as http:
        form = await http.post(
            "/api/cancel/approval-r", data={"reason": "x"}, headers={"Origin": ui_env.url}
        )
        assert form.status_code == 415 and "application/json" in form.json()["error"]
        plain = await http.post(
            "/api/cancel/approval-r",
            content=b'{"reason": "x"}',
            headers={"Origin": ui_env.url, "Content-Type": "text/plain"},
        )
        assert plain.status_code == 415  # the content type a cross-site form can send
        res = await http.post(
            "/api/cancel/approval-r",
            json={"reason": "from the page"},
            headers={"Referer": f"{ui_env.url}/workflows/approval-r"},
        )
        assert res.status_code == 200, res.text
    await _wait_status(ui_env, "approval-r", "cancelled")


async def test_with_a_login_a_post_without_origin_needs_the_bearer_token(secured: UiEnv) -> None:
    for wid in ("approval-b1", "approval-b2"):
        await _approval(secured, wid)
    async with _http(secured) as http:
        signed = await _sign_in(http)
        assert signed.status_code == 303 and SESSION_COOKIE in http.cookies
        # the session cookie alone, with neither Origin nor Referer: refused
        bare = await http.post("/api/cancel/approval-b1", json={})
        assert bare.status_code == 403 and "Authorization: Bearer" in bare.json()["error"]
        # a foreign origin is refused even with the cookie
        evil = await http.post("/api/cancel/approval-b1", json={}, headers={"Origin": EVIL})
        assert evil.status_code == 403
        # the page's own requests: the cookie and the same Origin
        page = await http.post(
            "/api/cancel/approval-b1", json={"reason": "page"}, headers={"Origin": secured.url}
        )
        assert page.status_code == 200, page.text
    async with _http(secured) as api:  # an API client: no cookie, no Origin
        wrong = await api.post("/api/cancel/approval-b2", json={}, headers=_bearer("x" * 20))
        assert wrong.status_code == 403
        nothing = await api.post("/api/cancel/approval-b2", json={})
        assert nothing.status_code == 403
        assert (await _status(secured, "approval-b2")) == "running"
        curl = await api.post(
            "/api/terminate/approval-b2", json={"reason": "script"}, headers=_bearer()
        )
        assert curl.status_code == 200, curl.text
    await _wait_status(secured, "approval-b1", "cancelled")
    await _wait_status(secured, "approval-b2", "terminated")


# ------------------------------------------------------------------ login


async def test_without_signing_in_pages_redirect_and_the_api_answers_401(secured: UiEnv) -> None:
    await _approval(secured, "approval-l")
    async with _http(secured) as http:
        page = await http.get("/workflows/approval-l", params={"run_id": "r1"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fworkflows%2Fapproval-l%3Frun_id%3Dr1"
        assert (await http.get("/")).headers["location"] == "/login?next=%2F"
        for path in ("/api/workflows", "/api/workflows/approval-l", "/api/live/approval-l"):
            res = await http.get(path)
            assert res.status_code == 401, path
            assert res.headers["www-authenticate"].startswith("Bearer")
            assert "sign in" in res.json()["error"]
        post = await http.post("/api/cancel/approval-l", json={}, headers={"Origin": secured.url})
        assert post.status_code == 401
    async with _http(secured, cookies={SESSION_COOKIE: f"1.{'0' * 64}"}) as forged:
        assert (await forged.get("/api/workflows")).status_code == 401
    async with _http(secured) as http:
        # the sign-in page and the static files are open; the page says nothing of the run
        login = await http.get("/login", params={"next": "/workflows/approval-l"})
        assert login.status_code == 200 and 'name="token"' in login.text
        assert (
            'value="/workflows/approval-l"' in login.text
            and "approval-l" not in login.text[: login.text.index("<body")]
        )
        assert (await http.get("/static/app.css")).status_code == 200
    assert (await _status(secured, "approval-l")) == "running"


async def test_signing_in_sets_a_strict_http_only_cookie(secured: UiEnv) -> None:
    await _approval(secured, "approval-s")
    async with _http(secured) as http:
        wrong = await http.post(
            "/login",
            data={"token": "not-the-token-at-all", "next": "/"},
            headers={"Origin": secured.url},
        )
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert "not this UI" in html.unescape(wrong.text)
        res = await _sign_in(http, "/workflows/approval-s")
        assert res.status_code == 303 and res.headers["location"] == "/workflows/approval-s"
        cookie = res.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower() and "secure" not in attributes  # plain http
        assert TOKEN not in cookie
        page = await http.get("/workflows/approval-s")
        assert page.status_code == 200 and 'id="sign-out"' in page.text

        async def listed() -> list[dict[str, Any]]:  # once open ServerOptions.status_delay
            runs = await http.get("/api/workflows")
            assert runs.status_code == 200
            found: list[dict[str, Any]] = runs.json()["workflows"]
            return found

        assert (await wait_for(listed, 15))[0]["workflow_id"] == "approval-s"
        # a signed-in page never redirects off the site, whatever "next" says
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            again = await http.get("/login", params={"next": target})
            assert again.status_code == 303 and again.headers["location"] == "/", target
        out = await http.post("/logout", headers={"Origin": secured.url})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert SESSION_COOKIE not in http.cookies
        assert (await http.get("/api/workflows")).status_code == 401
    async with _http(secured, headers=_bearer()) as api:
        assert (await api.get("/api/workflows")).status_code == 200


async def test_a_cross_site_login_form_is_refused(secured: UiEnv) -> None:
    async with _http(secured) as http:
        res = await http.post(
            "/login", data={"token": TOKEN, "next": "/"}, headers={"Origin": EVIL}
        )
        assert res.status_code == 403 and "set-cookie" not in res.headers


def test_sessions_expire_and_cannot_be_forged() -> None:
    auth = UiAuth(TOKEN, session_seconds=60)
    session = auth.new_session(now=1000.0)
    assert auth.session_ok(session, now=1059.0)
    assert not auth.session_ok(session, now=1060.0)  # expired
    expires, mac = session.split(".")
    assert not auth.session_ok(f"{int(expires) + 3600}.{mac}", now=1000.0)  # extended by hand
    assert not UiAuth("another-token-of-16+chars").session_ok(session, now=1000.0)
    for junk in (None, "", "abc", f"{expires}.{mac}x", f"-1.{mac}"):
        assert not auth.session_ok(junk, now=1000.0)
    assert auth.bearer_ok(f"Bearer {TOKEN}") and auth.bearer_ok(f"bearer  {TOKEN} ")
    assert not auth.bearer_ok(f"Basic {TOKEN}") and not auth.bearer_ok(TOKEN)
    assert not auth.bearer_ok(f"Bearer {TOKEN}x") and not auth.bearer_ok(None)
    assert TOKEN not in repr(auth) and TOKEN not in str(auth)


def test_tokens_must_be_long_and_plain_and_errors_never_show_them() -> None:
    for bad in ("short", "a token with spaces in it", "tøken-not-ascii-at-all", "x" * 5000):
        with pytest.raises(InvalidArgumentError) as info:
            check_token(bad)
        assert bad not in str(info.value) and "secrets.token_urlsafe" in str(info.value)
    assert check_token(TOKEN) == TOKEN


def test_only_loopback_may_serve_without_a_login() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
        check_exposure(host, None)
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1", "example.com", "::ffff:1.2.3.4"):
        assert not is_loopback(host), host
        with pytest.raises(InvalidArgumentError, match="without a login"):
            check_exposure(host, None)
        check_exposure(host, UiAuth(TOKEN))
    assert safe_next("/workflows/a%2Fb?run_id=x") == "/workflows/a%2Fb?run_id=x"
    for target in (None, "", "workflows", "//evil", "/\\evil", "https://evil/", "/a\r\nb"):
        assert safe_next(target) == "/", target


async def test_serve_refuses_a_public_address_without_a_token_before_binding() -> None:
    with pytest.raises(InvalidArgumentError, match=r"0\.0\.0\.0 without a login"):
        await serve(None, "0.0.0.0", 0)  # type: ignore[arg-type]  # refused before any use
    with pytest.raises(InvalidArgumentError, match="characters"):
        await serve(None, "127.0.0.1", 0, auth_token="short")  # type: ignore[arg-type]


def test_df_ui_on_a_public_address_without_a_token_exits_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DF_UI_TOKEN"}
    runner = CliRunner(env={"DF_UI_TOKEN": None} if "DF_UI_TOKEN" in env else None)
    # an unreachable NATS: the refusal comes before any connection is tried
    args = ["--nats", "nats://127.0.0.1:1", "--connect-timeout", "0.1", "ui", "--port", "0"]
    result = runner.invoke(df_main, [*args, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "0.0.0.0 without a login" in line and "DF_UI_TOKEN" in line and "127.0.0.1" in line
    named = runner.invoke(df_main, [*args, "--host", "::", "--auth-token-env", "MY_UI_SECRET"])
    assert named.exit_code == 2 and "set MY_UI_SECRET" in named.output
    short = CliRunner(env={"DF_UI_TOKEN": "tooshort"}).invoke(df_main, [*args])
    assert short.exit_code == 2 and "DF_UI_TOKEN" in short.output
    assert "tooshort" not in short.output
    help_text = runner.invoke(df_main, ["ui", "--help"]).output
    assert "--auth-token-env" in help_text and "DF_UI_TOKEN" in help_text


def _env(token: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["DF_UI_TOKEN"] = token
    return env


@contextlib.contextmanager
def _df_ui(nats_url: str, token: str) -> Any:
    args = [sys.executable, "-m", "daemons.df_cli", "--nats", nats_url, "ui", "--port", "0"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(token), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise


async def test_df_ui_never_prints_its_token() -> None:
    async with LocalEnvironment() as env:
        with _df_ui(env.nats_url, TOKEN) as proc:
            assert proc.stdout is not None
            banner = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)).decode()
            assert banner.startswith("DurableFuture UI on http://127.0.0.1:"), banner
            assert "sign in with the token in $DF_UI_TOKEN" in banner
            url = banner.split()[3]
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                failed = await http.post(
                    "/login", data={"token": TOKEN[:-1], "next": "/"}, headers={"Origin": url}
                )
                assert failed.status_code == 401
                assert (await http.get("/api/workflows", headers=_bearer())).status_code == 200
                evil = await http.post("/api/cancel/x", json={}, headers={"Origin": EVIL})
                assert evil.status_code == 403
            os.kill(proc.pid, signal.SIGINT)
            rest = (await asyncio.to_thread(proc.stdout.read)).decode()
            assert proc.wait(20) == 0
    printed = banner + rest
    assert "sign-in to the UI from 127.0.0.1 failed" in printed  # it does log
    assert TOKEN not in printed and TOKEN[:-1] not in printed


# ------------------------------------------------------------------ headers


def _check_headers(res: httpx.Response, *, no_store: bool = True) -> None:
    h = res.headers
    where = f"{res.request.method} {res.request.url.path} ({res.status_code})"
    assert h.get("content-security-policy") == CONTENT_SECURITY_POLICY, where
    assert h.get("x-frame-options") == "DENY", where
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "same-origin", where
    if no_store:
        assert h.get("cache-control") == "no-store", where


def test_the_policy_allows_only_this_server_and_no_inline_code() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "data:" not in CONTENT_SECURITY_POLICY


@contextlib.asynccontextmanager
async def _open_ui(secured: UiEnv) -> AsyncIterator[UiEnv]:
    """A second UI, without a login, on the same engine."""
    async with served(secured.env) as url:
        yield UiEnv(secured.env, url)


async def test_every_kind_of_response_carries_the_security_headers(secured: UiEnv) -> None:
    await secured.client.execute_workflow(
        order_workflow, "order-h", 1.0, id="order-h", task_queue=TASK_QUEUE, timeout=20
    )
    async with _open_ui(secured) as ui_env, _http(ui_env) as http:
        for path in ("/", "/workflows/order-h", "/api/workflows", "/api/workflows/order-h"):
            _check_headers(await http.get(path))
        _check_headers(await http.get("/api/workflows/nobody"))  # 404
        _check_headers(await http.get("/api/cancel/order-h"))  # 405
        _check_headers(await http.post("/api/cancel/order-h", json={}, headers={"Origin": EVIL}))
        _check_headers(await http.get("/favicon.ico"))  # a 404 outside the API
        _check_headers(await http.get("/", headers={"Host": "attacker.example"}))  # 400
        for path in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
            static = await http.get(path)
            assert static.status_code == 200, path
            _check_headers(static, no_store=False)
        async with http.stream("GET", "/api/live/order-h") as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            _check_headers(sse)
    async with _http(secured) as http:
        _check_headers(await http.get("/"))  # 303 to the login
        _check_headers(await http.get("/api/workflows"))  # 401
        _check_headers(await http.get("/login"))
        _check_headers(await _sign_in(http))  # 303 with the cookie
        _check_headers(await http.get("/"))


_SCRIPT = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)
# app.js from this server, or the first data as a JSON block (never run)
_ALLOWED_SCRIPTS = ('src="/static/app.js"', 'id="df-initial" type="application/json"')


async def test_pages_hold_no_inline_script_or_style(secured: UiEnv) -> None:
    await secured.client.execute_workflow(
        order_workflow, "order-i", 1.0, id="order-i", task_queue=TASK_QUEUE, timeout=20
    )
    async with _open_ui(secured) as ui_env, _http(ui_env) as http:
        pages = [(await http.get(p)).text for p in ("/", "/workflows/order-i")]
    async with _http(secured) as http:
        pages.append((await http.get("/login")).text)
        await _sign_in(http)
        pages.append((await http.get("/")).text)
    for page in pages:
        for attrs in _SCRIPT.findall(page):
            assert attrs.strip() in _ALLOWED_SCRIPTS, attrs
        assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE), "an inline handler"
        assert not re.search(r"\sstyle\s*=", page, re.IGNORECASE), "an inline style"
        assert "<style" not in page and "javascript:" not in page and "data:" not in page
    assert (
        orjson.loads(
            re.search(r'type="application/json">(.*?)</script>', pages[1]).group(1)  # type: ignore[union-attr]
        )["workflow_id"]
        == "order-i"
    )


# ------------------------------------------------------------------ routes


async def _sse_first(http: httpx.AsyncClient, path: str) -> Any:
    async with http.stream("GET", path) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith(
            "text/event-stream"
        )
        event = None
        async for line in res.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                assert event == "update", line
                return orjson.loads(line[len("data: ") :])
    raise AssertionError(f"{path} sent no update")


async def test_ids_that_look_like_routes_reach_their_own_run(ui_env: UiEnv) -> None:
    for wid in ("events", "a/events"):
        await ui_env.client.execute_workflow(
            order_workflow, wid, 1.0, id=wid, task_queue=TASK_QUEUE, timeout=20
        )
    for wid in ("a/b", "x/cancel", "live"):
        await _approval(ui_env, wid)
    async with _http(ui_env) as http:
        for wid, quoted in [
            ("events", "events"),
            ("a/events", "a%2Fevents"),
            ("a/b", "a%2Fb"),
            ("x/cancel", "x%2Fcancel"),
            ("live", "live"),
        ]:
            res = await http.get(f"/api/workflows/{quoted}")
            assert res.status_code == 200, (wid, res.text)
            assert res.headers["content-type"].startswith("application/json"), wid
            assert res.json()["workflow"]["workflow_id"] == wid
            update = await _sse_first(http, f"/api/live/{quoted}")
            assert update["workflow"]["workflow_id"] == wid
            page = await http.get(f"/workflows/{quoted}")
            assert f'"workflow_id":"{wid}"' in page.text
        # the old suffix routes are gone: "a/events" is the run of that id, not a's stream
        assert (await http.get("/api/workflows/a/events")).json()["workflow"]["workflow_id"] == (
            "a/events"
        )
        for wid, quoted in [("a/b", "a%2Fb"), ("x/cancel", "x%2Fcancel"), ("live", "live")]:
            res = await http.post(
                f"/api/signal/{quoted}",
                json={"name": "decision", "args": ["approved"]},
                headers={"Origin": ui_env.url},
            )
            assert res.status_code == 200, (wid, res.text)
            assert wid in res.json()["message"]
    for wid in ("a/b", "x/cancel", "live"):
        await _wait_status(ui_env, wid, "completed")
