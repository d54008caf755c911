"""Turning nats-py's exceptions into ours, for code above the transport that drives several
transport calls at once (setting up a namespace, say)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors

from durablefuture.core.errors import TransportError

__all__ = ["translated"]


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise any NATS error inside the block as a :class:`TransportError` saying ``what``
    failed (ours pass through unchanged)."""
    try:
        yield
    except nats.errors.Error as exc:
        raise TransportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
