"""Reading and writing a namespace's settings (retention, history limits), kept in the
metadata of its stream so that every df-server applies the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nats.errors
import nats.js.errors
from attrs import evolve
from nats.js.client import JetStreamContext

from durablefuture.core.errors import InvalidArgumentError, NamespaceNotFoundError, TransportError
from durablefuture.core.namespace import NamespaceSettings
from durablefuture.transport.subjects import Layout

__all__ = ["read_settings", "write_settings"]


async def _config(js: JetStreamContext, layout: Layout):  # type: ignore[no-untyped-def]
    try:
        return (await js.stream_info(layout.stream)).config
    except nats.js.errors.NotFoundError as exc:
        raise NamespaceNotFoundError(
            f"stream {layout.stream} does not exist; start df-server for namespace "
            f"{layout.namespace!r} first"
        ) from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(
            f"reading the settings of namespace {layout.namespace!r}: {exc}"
        ) from exc


async def read_settings(js: JetStreamContext, layout: Layout) -> NamespaceSettings:
    """The namespace's settings (the defaults for what was never set)."""
    config = await _config(js, layout)
    return NamespaceSettings.from_metadata(dict(getattr(config, "metadata", None) or {}))


async def write_settings(
    js: JetStreamContext, layout: Layout, changes: Mapping[str, float | int]
) -> NamespaceSettings:
    """Store ``changes`` (NamespaceSettings field -> value) with the namespace; the others keep
    their stored value (nothing is written without changes). Returns the settings in force."""
    config = await _config(js, layout)
    metadata = dict(getattr(config, "metadata", None) or {})
    try:
        current = NamespaceSettings.from_metadata(metadata)
    except InvalidArgumentError:
        current = NamespaceSettings()  # unreadable values are replaced below
    kwargs: dict[str, Any] = dict(changes)
    wanted = evolve(current, **kwargs) if kwargs else current
    fresh = wanted.to_metadata()
    if not changes or all(metadata.get(k) == v for k, v in fresh.items()):
        return wanted
    config.metadata = {**metadata, **fresh}
    try:
        await js.update_stream(config)
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(
            f"storing the settings of namespace {layout.namespace!r}: {exc}"
        ) from exc
    return wanted
