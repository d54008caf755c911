"""The web UI's ASGI app: a JSON API over the client, live updates, and one static page.

Routes. A workflow id may hold any character, "/" included, so it is always the last part of
a path, after a fixed prefix that names what is asked for: no id can reach another route (an
id "events" or "a/cancel" is just an id).

* ``GET /`` and ``GET /workflows/{id}``: the page (``static/index.html``); it routes itself.
  The data it shows first (the runs list, or the run) is in the HTML, as a JSON data block
  (``<script type="application/json">``, which the Content-Security-Policy allows: it is never
  run), so the page is complete when it has loaded; the page then follows live updates. If
  that data cannot be read in time, the page fetches it.
* ``GET /api/workflows?status=&type=&q=&limit=&next=``: runs, newest first, with counts per
  status; a page of ``limit`` and its ``next_page_token`` (``next=`` asks for the next page).
* ``GET /api/workflows/{id}?run_id=``: describe + inputs + history + timeline + why (from the
  archive, marked ``"archived": true``, when retention removed it and the UI has ``archive``).
* ``GET /api/history-state/{id}?run_id=&event=N``: the run as it was at event N (time travel:
  the state from history then; with the workflow code, where it was paused and what its query
  handlers answered, see ``travel.py``).
* ``GET /api/live/{id}?run_id=``: Server-Sent Events; an ``update`` event carries the same
  JSON as above each time the run's history grows (and every few seconds while it runs, so
  the relative times in "why" stay true).
* ``POST /api/cancel/{id}``, ``/api/terminate/{id}`` (``{"reason": ...}``) and
  ``/api/signal/{id}`` (``{"name": ..., "args": [...]}``), ``?run_id=`` optional: JSON bodies
  only, so a plain cross-site form cannot post.
* ``GET /schedules`` and ``GET /schedules/{id}``: the same page, on the schedules list or one
  schedule; their API (``/api/schedules...``, pause/unpause/trigger) is in ``schedules.py``.
* With a login (``auth``): ``GET``/``POST /login`` and ``POST /logout``.

``security.py`` wraps all of it: security headers, same-origin checks, the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from durablefuture.client import Client
from durablefuture.codec import text as json_text
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.errors import (
    DurableFutureError,
    InvalidArgumentError,
    ServerUnavailableError,
    WorkflowNotFoundError,
)
from durablefuture.core.types import JsonValue
from durablefuture.schedules import ScheduleNotFoundError
from durablefuture.ui.archived import UiArchive
from durablefuture.ui.auth import UiAuth
from durablefuture.ui.schedules import initial_payload, schedule_routes
from durablefuture.ui.security import Guard, Login, SecurityHeaders
from durablefuture.ui.travel import definitions_of, history_state_payload
from durablefuture.ui.views import list_payload, run_payload

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
POLL_SECONDS = 0.5
"""How often a live stream checks whether the run's history grew (one direct get)."""
REFRESH_SECONDS = 5.0
"""A running run is re-sent at least this often, so "next retry in 4s" stays true."""
KEEPALIVE_SECONDS = 10.0
INITIAL_DATA_SECONDS = 5.0
"""How long the page waits for its first data before it is sent without (and fetches it)."""
INITIAL_DATA_SLOT = "<!--df-initial-->"
SIGN_OUT_SLOT = "<!--df-signout-->"
SIGN_OUT = (
    '<form class="signout" method="post" action="/logout">'
    '<button type="submit" class="btn" id="sign-out">Sign out</button></form>'
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return json_text.dumps(content)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status_of(exc: DurableFutureError) -> int:
    if isinstance(exc, WorkflowNotFoundError | ScheduleNotFoundError):
        return 404
    if isinstance(exc, InvalidArgumentError):
        return 400
    if isinstance(exc, ServerUnavailableError):
        return 503
    return 409


def _sse(event: str, data: JsonValue) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json_text.dumps(data) + b"\n\n"


def _embed(data: JsonValue) -> str:
    """``data`` as a JSON script element (``<``, ``>``, ``&`` escaped: no value can end it)."""
    text = json_text.dumps(data).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script id="df-initial" type="application/json">{text}</script>'


class _Api:
    def __init__(
        self,
        client: Client,
        closing: asyncio.Event,
        *,
        sign_out: bool,
        definitions: dict[str, WorkflowDefinition],
        archive: UiArchive | None = None,
    ) -> None:
        self.client = client
        self.archive = archive
        self.closing = closing
        self.definitions = definitions
        page = (STATIC / "index.html").read_text()
        self.page = page.replace(SIGN_OUT_SLOT, SIGN_OUT if sign_out else "", 1)

    async def index(self, request: Request) -> Response:
        try:
            initial = await asyncio.wait_for(self._initial(request), INITIAL_DATA_SECONDS)
        except (DurableFutureError, TimeoutError) as exc:  # the page fetches it, and says why
            log.warning("the page's data could not be read in time: %s", exc)
            initial = None
        slot = _embed(initial) if initial is not None else ""
        return HTMLResponse(self.page.replace(INITIAL_DATA_SLOT, slot, 1))

    async def _initial(self, request: Request) -> JsonValue:
        """What the page shows first: the run at ``/workflows/{id}``, else the runs list."""
        query = request.url.query
        if request.url.path.startswith("/schedules"):
            return await initial_payload(self.client, request.path_params.get("schedule_id"))
        wid = request.path_params.get("workflow_id")
        if wid is None:
            return {"route": "list", "query": query, "data": await self._list(request)}
        run_id = request.query_params.get("run_id") or None
        out: dict[str, JsonValue] = {"route": "run", "workflow_id": wid, "run_id": run_id}
        try:
            out["data"] = await self._run(wid, run_id)
        except WorkflowNotFoundError as exc:
            out.update(error=str(exc), status=404)
        return out

    async def _run(self, wid: str, run_id: str | None) -> dict[str, JsonValue]:
        """The run from the stream, else from the archive (``--archive``)."""
        try:
            return await run_payload(self.client, wid, run_id)
        except WorkflowNotFoundError as exc:
            found = None if self.archive is None else await self.archive.run(wid, run_id)
            if found is None:
                if self.archive is not None:
                    raise WorkflowNotFoundError(
                        f"{exc}; nor is it in archive {self.archive.spec}"
                    ) from None
                raise
            return found

    async def _list(self, request: Request) -> dict[str, JsonValue]:
        """The runs list for the query string's filters; raises ``InvalidArgumentError``."""
        p = request.query_params
        try:
            limit = max(1, min(int(p.get("limit", "200")), 5000))
        except ValueError:
            raise InvalidArgumentError(
                f"limit must be an integer, got {p.get('limit')!r}"
            ) from None
        q = (p.get("q") or "").strip() or None
        listed = await list_payload(
            self.client,
            status=p.get("status") or None,
            workflow_type=p.get("type") or None,
            q=q,
            limit=limit,
            page_token=p.get("next") or None,
        )
        if self.archive is not None and q is not None and "query" not in listed:
            filters = {k: p[k] for k in ("status", "type") if p.get(k)}
            await self.archive.add_to(listed, q, filters)  # an id search finds archived runs
        return listed

    async def answer(self, read: Callable[[], Awaitable[JsonValue]]) -> Response:
        """``read()`` as JSON, or our error as its HTTP status."""
        try:
            body = await read()
        except DurableFutureError as exc:
            return _error(_status_of(exc), str(exc))
        return JSONResponse(body)

    async def list_runs(self, request: Request) -> Response:
        try:
            body = await self._list(request)
        except DurableFutureError as exc:
            return _error(_status_of(exc), str(exc))
        return JSONResponse(body)

    async def run(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        try:
            body = await self._run(wid, request.query_params.get("run_id") or None)
        except DurableFutureError as exc:
            return _error(_status_of(exc), str(exc))
        return JSONResponse(body)

    async def history_state(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        p = request.query_params
        try:
            body = await history_state_payload(
                self.client,
                wid,
                p.get("run_id") or None,
                p.get("event"),
                self.definitions,
                None if self.archive is None else self.archive.events,
            )
        except DurableFutureError as exc:
            return _error(_status_of(exc), str(exc))
        return JSONResponse(body)

    async def events(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        run_id = request.query_params.get("run_id") or None
        headers = {"X-Accel-Buffering": "no"}  # security.py makes it no-store
        return StreamingResponse(
            self._stream(wid, run_id), media_type="text/event-stream", headers=headers
        )

    async def _version(self, wid: str, run_id: str | None) -> tuple[str, int]:
        """(run id, stream sequence of its newest history batch): changes when history grows."""
        if run_id is not None:
            return run_id, await self.client.history.last_seq(wid, run_id)
        last = await self.client.history.last_of_workflow(wid)
        if last is None:
            raise WorkflowNotFoundError(f"no workflow with id {wid!r}")
        return last.run_id, last.batch.stream_seq

    async def _stream(self, wid: str, run_id: str | None) -> AsyncIterator[bytes]:
        seen: tuple[str, int] | None = None
        sent_at = pinged_at = 0.0
        running = True
        yield b"retry: 2000\n\n"
        while not self.closing.is_set():
            now = time.monotonic()
            wait = POLL_SECONDS if running else 2.0
            try:
                version = await self._version(wid, run_id)
                if version != seen or (running and now - sent_at >= REFRESH_SECONDS):
                    body = await run_payload(self.client, wid, version[0])
                    workflow = body["workflow"]
                    running = isinstance(workflow, dict) and workflow.get("status") == "running"
                    seen, sent_at, pinged_at = version, now, now
                    yield _sse("update", body)
                elif now - pinged_at >= KEEPALIVE_SECONDS:
                    pinged_at = now
                    yield b": keepalive\n\n"
            except WorkflowNotFoundError as exc:
                yield _sse("failure", {"error": str(exc), "status": 404})
                return
            except DurableFutureError as exc:  # NATS hiccup: say so, keep trying
                log.warning("live update for %s failed: %s", wid, exc)
                yield _sse("failure", {"error": str(exc), "status": _status_of(exc)})
                wait = 2.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), wait)

    async def _act(
        self, request: Request, action: Callable[[dict[str, object]], Awaitable[str]]
    ) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send a JSON body with Content-Type: application/json")
        try:
            body = json_text.loads(await request.body() or b"{}")
        except json_text.JsonTextError as exc:
            return _error(400, f"the body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        try:
            done = await action(body)
        except DurableFutureError as exc:
            return _error(_status_of(exc), str(exc))
        return JSONResponse({"ok": True, "message": done})

    async def cancel(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        run_id = request.query_params.get("run_id") or None

        async def go(body: dict[str, object]) -> str:
            await self.client.get_workflow_handle(wid, run_id=run_id).cancel(_reason(body))
            return f"cancellation requested for {wid}"

        return await self._act(request, go)

    async def terminate(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        run_id = request.query_params.get("run_id") or None

        async def go(body: dict[str, object]) -> str:
            await self.client.get_workflow_handle(wid, run_id=run_id).terminate(_reason(body))
            return f"terminated {wid}"

        return await self._act(request, go)

    async def signal(self, request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        run_id = request.query_params.get("run_id") or None

        async def go(body: dict[str, object]) -> str:
            name = body.get("name")
            args = body.get("args", [])
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError('"name" must be a non-empty string (the signal name)')
            if not isinstance(args, list):
                raise InvalidArgumentError('"args" must be a JSON array of signal arguments')
            await self.client.get_workflow_handle(wid, run_id=run_id).signal(name, *args)
            return f"signalled {wid}: {name}"

        return await self._act(request, go)


def _reason(body: dict[str, object]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidArgumentError('"reason" must be a string')
    return reason or "requested from the web UI"


class _App(Starlette):
    """Starlette with the security headers outside everything, its error pages included."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405, as JSON under ``/api/`` (saying where the actions are now)."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/api/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 405:
        message += (
            "; the API is GET /api/workflows, GET /api/workflows/{id}, GET /api/live/{id}, "
            "GET /api/history-state/{id}?event=N, "
            "POST /api/cancel/{id}, /api/terminate/{id}, /api/signal/{id}; "
            "GET /api/schedules, GET /api/schedules/{id}, "
            "POST /api/schedule-pause/{id}, /api/schedule-unpause/{id}, /api/schedule-trigger/{id}"
        )
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    client: Client,
    *,
    auth: UiAuth | None = None,
    allowed_hosts: Sequence[str] | None = None,
    closing: asyncio.Event | None = None,
    workflows: Sequence[Callable[..., object]] = (),
    archive: str | None = None,
) -> Starlette:
    """The UI as an ASGI app over ``client`` (serve it with uvicorn, or ``ui.serve``).

    Args:
        auth: the login (a token); without it anyone who can reach the app can use it.
        allowed_hosts: if given, requests whose ``Host`` is not one of these are refused
            (``serve`` passes the loopback names when it binds to loopback, which stops DNS
            rebinding from reaching the actions).
        closing: set it to end the live-update streams (``serve`` does on shutdown).
        workflows: workflow functions whose runs the time-travel view replays (where the
            code was paused at each event, what its query handlers answered then).
        archive: ``dir:PATH`` or ``objstore``, as given to ``df-server --archive``: runs
            whose history retention removed are read from there (marked archived).

    Raises:
        InvalidArgumentError: one of ``workflows`` is not a workflow (generator) function,
            or ``archive`` is not ``dir:PATH`` / ``objstore``.
    """
    api = _Api(
        client,
        closing or asyncio.Event(),
        sign_out=auth is not None,
        definitions=definitions_of(workflows),
        archive=None if archive is None else UiArchive(client, archive),
    )
    wid = "{workflow_id:path}"
    routes: list[BaseRoute] = [
        Route("/", api.index),
        Route("/workflows/" + wid, api.index),
        Route("/api/workflows", api.list_runs),
        Route("/api/workflows/" + wid, api.run),
        Route("/api/live/" + wid, api.events),
        Route("/api/history-state/" + wid, api.history_state),
        Route("/api/cancel/" + wid, api.cancel, methods=["POST"]),
        Route("/api/terminate/" + wid, api.terminate, methods=["POST"]),
        Route("/api/signal/" + wid, api.signal, methods=["POST"]),
        Route("/schedules", api.index),
        Route("/schedules/{schedule_id:path}", api.index),
        *schedule_routes(client, api._act, api.answer),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if auth is not None:
        login = Login(auth)
        routes += [
            Route("/login", login.form, methods=["GET"]),
            Route("/login", login.submit, methods=["POST"]),
            Route("/logout", login.logout, methods=["POST"]),
        ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    middleware.append(Middleware(Guard, auth=auth))
    return _App(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: _http_error, 405: _http_error},
    )
