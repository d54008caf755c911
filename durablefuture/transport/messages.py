"""The NATS message and subscription types, named for the services above the transport.

Services handle deliveries (ack, nak, in progress, respond) without importing nats; the
transport stays the one place that does.
"""

from __future__ import annotations

from typing import Any, cast

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Msg", "NoDelivery", "Subscription", "no_delivery"]


class NoDelivery(Msg):
    """The stand-in for a task message where there is none (an activity attempt granted to
    the worker that decided it): acknowledging it, or telling it in progress, does nothing."""

    async def ack(self) -> None:
        self._ackd = True

    async def in_progress(self) -> None:
        return None

    async def nak(self, delay: int | float | None = None) -> None:
        self._ackd = True

    async def term(self) -> None:
        self._ackd = True


def no_delivery() -> NoDelivery:
    """A :class:`NoDelivery` (no client: it never sends anything)."""
    return NoDelivery(cast(Any, None))
