"""Settings of df-server's schedule component."""

from __future__ import annotations

from attrs import define

from durablefuture.transport.payload_meta import PAYLOAD_GRACE
from durablefuture.transport.redelivery import Redelivery

__all__ = ["ScheduleOptions"]


@define
class ScheduleOptions:
    poll_interval: float = 5.0
    """While something waits on a running action (a buffered action, a stop request,
    pause-on-failure, an unconfirmed start), step at least this often."""
    ack_wait: float = 10.0
    max_deliver: int = 20
    concurrency: int = 1024
    """Schedule inputs handled at once (each step includes starting its actions)."""
    ahead: float = 60.0
    """Under ALLOW_ALL, record an action up to this many seconds before its fire time, so that
    at the fire time only its start is left (0: record each action at its fire time)."""
    payload_grace: float = PAYLOAD_GRACE
    """Seconds a payload object is kept after its last put: a deleted schedule's objects go
    then if nothing else holds them (df-server sets it to its ``ServerOptions.payload_grace``)."""

    @property
    def redelivery(self) -> Redelivery:
        """When a failed schedule input comes back, and when it is dead-lettered."""
        return Redelivery(give_up_at=max(1, self.max_deliver - 1), first_delay=0.4, max_delay=10.0)

    @property
    def remember_for(self) -> float:
        """Seconds a schedule record keeps the id of a request it applied: the longest its
        input can come back after that (each of ``max_deliver`` deliveries waits for the ack
        wait or the longest retry delay), twice over for clock skew between df-servers."""
        per = max(self.ack_wait, self.redelivery.max_delay)
        return 2.0 * per * self.max_deliver
