"""What the UI's server enforces before a request reaches a page or the API.

* **Headers, on every response** (:class:`SecurityHeaders`): a Content-Security-Policy that
  allows only this server's own scripts, styles, images and connections and no framing, and
  ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin``; everything but ``/static/`` is ``Cache-Control: no-store``
  (pages and API answers hold run data).
* **Same origin for anything that changes state** (:class:`Guard`): a POST whose ``Origin``
  (or, without one, ``Referer``) is another site's is refused with 403, so another page open
  in the same browser cannot cancel a run. A POST with neither header (curl, scripts) must
  carry ``Authorization: Bearer <token>`` when the UI has a login.
* **Login** when the UI has a token (see ``auth.py``): pages redirect to ``/login``, the API
  answers 401; ``/static/`` and the sign-in page itself are open.

The JSON actions also insist on ``Content-Type: application/json`` (``app.py``): a plain HTML
form cannot send it, and a cross-site script cannot without a CORS preflight this server never
grants.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durablefuture.ui.auth import UiAuth, safe_next

__all__ = ["CONTENT_SECURITY_POLICY", "SESSION_COOKIE", "Guard", "Login", "SecurityHeaders"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "df_ui_session"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/login", "/logout"})
OPEN_PREFIX = "/static/"
MAX_LOGIN_BODY = 8192


class SecurityHeaders:
    """Adds the security headers (and ``no-store`` outside ``/static/``) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = not str(scope.get("path", "")).startswith(OPEN_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def own_origin(request: Request) -> str:
    """This server's origin as the browser sees it: scheme and ``Host``."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def claimed_origin(request: Request) -> str | None:
    """The origin a request says it comes from: ``Origin``, else ``Referer``'s, else None."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.strip().lower()
    referer = request.headers.get("referer")
    if referer is None:
        return None
    parts = urlsplit(referer.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def signed_in(request: Request, auth: UiAuth) -> bool:
    """True if the request carries the bearer token or a valid session cookie."""
    if auth.bearer_ok(request.headers.get("authorization")):
        return True
    return auth.session_ok(request.cookies.get(SESSION_COOKIE), time.time())


class Guard:
    """Refuses cross-origin state changes and, with a login, requests not signed in."""

    def __init__(self, app: ASGIApp, auth: UiAuth | None = None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        """The response that refuses ``request``, or None to let it through."""
        if request.method not in SAFE_METHODS:
            refused = self._cross_site(request)
            if refused is not None:
                return refused
        path = request.url.path
        if self.auth is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            return None
        if signed_in(request, self.auth):
            return None
        if path.startswith("/api/") or request.method not in SAFE_METHODS:
            return _refuse(
                401,
                "not signed in: sign in on /login, or send the header "
                "Authorization: Bearer <token> (the UI's token)",
                {"WWW-Authenticate": 'Bearer realm="DurableFuture UI"'},
            )
        raw = request.scope.get("raw_path")  # as the browser sent it: "a%2Fb" stays one id
        target = raw.decode("latin-1") if isinstance(raw, bytes) else quote(path)
        target += f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)

    def _cross_site(self, request: Request) -> Response | None:
        claimed = claimed_origin(request)
        own = own_origin(request)
        if claimed is not None:
            if claimed == own:
                return None
            log.warning(
                "refused a %s to %s from origin %s (this UI is %s)",
                request.method,
                request.url.path,
                claimed,
                own,
                extra={"origin": claimed, "path": request.url.path},
            )
            return _refuse(
                403,
                f"cross-origin request refused: it comes from {claimed}, not from this UI "
                f"({own}); use the UI's own pages, or call the API without an Origin header",
            )
        if self.auth is None or self.auth.bearer_ok(request.headers.get("authorization")):
            return None
        return _refuse(
            403,
            "a request that changes state needs an Origin header (browsers send it from the "
            "UI's pages) or the header Authorization: Bearer <token> (API clients)",
        )


LOGIN_PAGE = Path(__file__).with_name("static") / "login.html"
NEXT_SLOT = "<!--df-next-->"
ERROR_SLOT = "<!--df-error-->"


class Login:
    """``GET``/``POST /login`` (a form: no script needed) and ``POST /logout``."""

    def __init__(self, auth: UiAuth, now: Callable[[], float] = time.time) -> None:
        self.auth = auth
        self.now = now
        self.page = LOGIN_PAGE.read_text()

    def _page(self, target: str, error: str | None = None, status: int = 200) -> Response:
        text = self.page.replace(NEXT_SLOT, html.escape(target, quote=True), 1)
        if error is not None:
            text = text.replace(
                ERROR_SLOT, f'<p class="form-error" id="login-error">{html.escape(error)}</p>', 1
            )
        return HTMLResponse(text, status_code=status)

    async def form(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if signed_in(request, self.auth):
            return RedirectResponse(target, status_code=303)
        return self._page(target)

    async def submit(self, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if kind != "application/x-www-form-urlencoded" or len(body) > MAX_LOGIN_BODY:
            return self._page("/", "Send the sign-in form from this page.", status=400)
        fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
        token = (fields.get("token") or [""])[0]
        target = safe_next((fields.get("next") or ["/"])[0])
        if not self.auth.token_ok(token):
            client = request.client.host if request.client else "?"
            log.warning("a sign-in to the UI from %s failed", client, extra={"client": client})
            return self._page(target, "That is not this UI's token.", status=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.new_session(self.now()),
            max_age=self.auth.session_seconds,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response
