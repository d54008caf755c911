"""The live state of one task queue consumer, as JetStream reports it (for ``df why``)."""

from __future__ import annotations

from datetime import datetime

import nats.errors
import nats.js.errors
from attrs import frozen
from nats.js.client import JetStreamContext

from durablefuture.core.errors import TransportError

__all__ = ["QueueState", "queue_state"]


@frozen
class QueueState:
    """Live state of one task queue consumer."""

    name: str
    exists: bool
    pollers: int = 0
    pending: int = 0
    in_flight: int = 0
    last_delivery: datetime | None = None
    ack_wait: float | None = None


async def queue_state(js: JetStreamContext, stream: str, consumer: str) -> QueueState:
    """The state of the durable ``consumer`` of ``stream`` (``exists`` False when it does not).

    Raises:
        TransportError: JetStream did not answer, or refused to.
    """
    try:
        info = await js.consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return QueueState(consumer, False)
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading the state of consumer {consumer!r} failed: {exc}") from exc
    delivered = info.delivered.last_active if info.delivered is not None else None
    return QueueState(
        consumer,
        True,
        pollers=int(info.num_waiting or 0),
        pending=int(info.num_pending or 0),
        in_flight=int(info.num_ack_pending or 0),
        last_delivery=delivered,
        ack_wait=info.config.ack_wait,
    )
