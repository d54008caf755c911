"""What every ``df`` command shares: its settings, running a coroutine, printing, ``--input``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from daemons.common import fail
from durablefuture.client import Client
from durablefuture.codec import text as json_text
from durablefuture.codec.envelope import PayloadCodec
from durablefuture.core.errors import DurableFutureError, WorkflowExecutionError
from durablefuture.transport.tls import TlsConfig

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"]}


class Settings:
    def __init__(
        self,
        nats_url: str,
        namespace: str,
        as_json: bool,
        timeout: float,
        creds: str | None = None,
        tls: TlsConfig | None = None,
        codec: PayloadCodec | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.namespace = namespace
        self.as_json = as_json
        self.connect_timeout = timeout
        self.creds = creds
        self.tls = tls
        self.codec = codec


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except WorkflowExecutionError:
        raise
    except DurableFutureError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


def _emit(settings: Settings, value: Any, text: str | None = None) -> None:
    if settings.as_json:
        click.echo(json_text.pretty(value))
    else:
        click.echo(text if text is not None else json_text.pretty(value))


_JSON_KINDS = {dict: "an object", str: "a string", bool: "a boolean", int: "a number"}


def _parse_input(text: str | None) -> list[Any]:
    """``--input``: a JSON array, one element per positional argument."""
    if text is None or text == "":
        return []
    example = "pass e.g. --input '[\"o-1\", 42.0]'"
    try:
        value = json_text.loads(text)
    except json_text.JsonTextError as exc:
        reason = str(exc)
        fail(f"--input is not valid JSON ({reason}); {example} (a JSON array of arguments)")
    if not isinstance(value, list):
        kind = _JSON_KINDS.get(type(value), "a number" if isinstance(value, float) else "null")
        one = " ".join(text.split())
        wrap = f"--input '[{one}]'" if len(one) <= 60 and "'" not in one else "[ ... ]"
        fail(
            f"--input must be a JSON array of arguments, got {kind}; {example}. "
            f"For a single argument, wrap it: {wrap}"
        )
    return value


async def _client(settings: Settings) -> Client:
    return await Client.connect(
        settings.nats_url,
        settings.namespace,
        connect_timeout=settings.connect_timeout,
        creds=settings.creds,
        tls=settings.tls,
        codec=settings.codec,
    )


async def _with_client(settings: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    client = await _client(settings)
    try:
        return await fn(client)
    finally:
        await client.close()
