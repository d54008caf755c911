"""Redelivery: one policy for every daemon that handles JetStream messages.

A message whose handling failed is negatively acknowledged with an exponential delay (0.5 s,
1 s, 2 s, ... at most 30 s), never redelivered at once in a hot loop. Once it has been
delivered ``give_up_at`` times it is given up on: the caller records the failure where it
belongs and then dead-letters the message (:func:`durablefuture.transport.deadletter.dead_letter`),
before the consumer's ``max_deliver`` leaves it stuck.

A message that comes back more often than that was not given up on: the deliveries before it
ended without any outcome, because the process handling them died each time (a poison message
whose handling crashes the process, exhausts its memory or exits it). It is given up on
*before* it is handled again (:meth:`Redelivery.abandoned`); keep ``give_up_at`` below
``max_deliver`` so that delivery happens.
"""

from __future__ import annotations

import contextlib

from attrs import field, frozen
from attrs.validators import ge, gt
from nats.aio.msg import Msg

__all__ = ["Redelivery", "lost_reason"]

_MAX_EXPONENT = 64  # delivery counts come from the wire: keep 2**n a float


@frozen
class Redelivery:
    """When a failed message comes back, and when it is given up on."""

    give_up_at: int = field(validator=ge(1))
    """Deliveries after which the message is given up on (keep it below ``max_deliver``)."""
    first_delay: float = field(default=0.5, validator=gt(0))
    max_delay: float = field(default=30.0, validator=gt(0))

    def exhausted(self, delivered: int) -> bool:
        """Whether a message delivered ``delivered`` times is to be given up on."""
        return delivered >= self.give_up_at

    def abandoned(self, delivered: int) -> bool:
        """Whether a message delivered ``delivered`` times is to be given up on before it is
        handled again: that many deliveries came back with no failure to give up on (whoever
        took them died or stopped before an outcome)."""
        return delivered > self.give_up_at

    def delay(self, delivered: int) -> float:
        """Seconds before the next delivery of a message that failed on delivery ``delivered``."""
        exponent = min(_MAX_EXPONENT, max(0, delivered - 1))
        return min(self.max_delay, self.first_delay * 2.0**exponent)

    async def retry_later(self, msg: Msg, delivered: int) -> None:
        """Nak ``msg`` so it is delivered again after :meth:`delay` (best effort: if the nak is
        lost, the message comes back after its ack wait anyway)."""
        with contextlib.suppress(Exception):
            await msg.nak(delay=self.delay(delivered))


def lost_reason(what: str, delivered: int) -> str:
    """Why a message df-server took ``delivered`` times without an outcome is given up on
    (:meth:`Redelivery.abandoned`)."""
    return (
        f"the {what} was delivered {delivered - 1} times and no df-server recorded it: each "
        "df-server that took it died (crashed, was killed or ran out of memory) or stopped "
        "while handling it; it is not handled again"
    )
