"""The NATS message and subscription types, named for the services above the transport.

Services handle deliveries (ack, nak, in progress, respond) without importing nats; the
transport stays the one place that does.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Msg", "Subscription"]
