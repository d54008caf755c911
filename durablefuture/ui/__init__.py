"""The web UI: runs with filters, a run page with its history as a timeline, live updates.

``pip install 'durablefuture[ui]'`` (starlette + uvicorn), then ``df ui`` or::

    client = await df.Client.connect(url, namespace)
    await durablefuture.ui.serve(client, port=8233)       # until cancelled

``create_app(client)`` is the ASGI app itself, to mount elsewhere. This module imports
starlette and uvicorn only when they are used, so ``ui_available()`` can be asked first.

With ``auth_token`` (16+ characters) the UI has a login: browsers sign in on ``/login`` (an
HttpOnly, SameSite=Strict session cookie), API clients send ``Authorization: Bearer <token>``.
It is required to serve on anything but a loopback address.

With ``workflows`` (the workflow functions, as a worker gets them) the run page's time-travel
view also replays each run's history through its code: where the generator was paused at each
event, and what its query handlers answered then. Without them it shows the state history
records.

With ``archive`` (``dir:PATH`` or ``objstore``, as given to ``df-server --archive``) a run whose
history retention removed is read from the archive and shown marked "archived".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from durablefuture.client import Client

__all__ = ["DEFAULT_PORT", "INSTALL_HINT", "create_app", "serve", "ui_available"]

DEFAULT_PORT = 8233
INSTALL_HINT = "the web UI needs starlette and uvicorn: pip install 'durablefuture[ui]'"


def ui_available() -> bool:
    """True if starlette and uvicorn can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("starlette", "uvicorn"))


def _require() -> None:
    if not ui_available():
        raise ImportError(INSTALL_HINT)


def create_app(
    client: Client,
    *,
    auth_token: str | None = None,
    workflows: Sequence[Callable[..., object]] = (),
    archive: str | None = None,
) -> Starlette:
    """The UI's ASGI app (JSON API, live updates, the page) over ``client``.

    Raises:
        InvalidArgumentError: ``auth_token`` is too short or has characters it cannot have,
            or one of ``workflows`` is not a workflow (generator) function.
    """
    _require()
    from durablefuture.ui.app import create_app as make
    from durablefuture.ui.auth import UiAuth

    auth = UiAuth(auth_token) if auth_token is not None else None
    return make(client, auth=auth, workflows=workflows, archive=archive)


async def serve(
    client: Client,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    auth_token: str | None = None,
    on_ready: Callable[[str], None] | None = None,
    workflows: Sequence[Callable[..., object]] = (),
    archive: str | None = None,
) -> None:
    """Serve the UI on ``host:port`` until cancelled (``port=0`` picks a free port).

    ``on_ready(url)`` is called once the socket listens. On a loopback address, requests
    must name a loopback host (a guard against DNS rebinding). Anywhere else, ``auth_token``
    is required. ``workflows`` are the workflow functions the time-travel view replays runs
    through (see the module docstring). ``archive`` (``dir:PATH`` or ``objstore``, as given to
    ``df-server --archive``): runs whose history retention removed are read from there.

    Raises:
        InvalidArgumentError: ``host`` is not a loopback address and there is no
            ``auth_token``, or the token is not a valid one, or one of ``workflows`` is not a
            workflow function (all checked before binding).
        OSError: the address cannot be bound (e.g. the port is in use).
        ImportError: starlette or uvicorn is not installed.
    """
    _require()
    from durablefuture.ui.auth import UiAuth, check_exposure
    from durablefuture.ui.server import bind, run_server
    from durablefuture.ui.travel import definitions_of

    auth = UiAuth(auth_token) if auth_token is not None else None
    check_exposure(host, auth)
    from durablefuture.transport.archive import parse_archive

    definitions_of(workflows)
    if archive is not None:
        parse_archive(archive)
    await run_server(client, bind(host, port), on_ready, auth, workflows=workflows, archive=archive)
