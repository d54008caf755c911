"""JSON bodies of the JetStream API that the transport exchanges with nats-server itself (pull
requests, direct gets, publish acknowledgements): plain JSON as nats-server defines it, not the
project's versioned wire schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["api_reply", "api_request"]


def api_request(body: Mapping[str, object]) -> bytes:
    """The JSON bytes of a JetStream API request."""
    return orjson.dumps(dict(body))


def api_reply(data: bytes) -> Any:  # JSON as orjson decodes it; callers check its shape
    """A JetStream API reply, decoded.

    Raises:
        ValueError: ``data`` is not JSON.
    """
    return orjson.loads(data)
