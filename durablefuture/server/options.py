"""How a df-server is tuned."""

from __future__ import annotations

from attrs import define, field

from durablefuture.clock import REAL_CLOCK, Clock
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.transport.payload_meta import PAYLOAD_GRACE
from durablefuture.transport.redelivery import Redelivery

__all__ = ["MAX_STATUS_DELAY", "ServerOptions"]

MAX_STATUS_DELAY = 60.0
"""Longest ``status_delay``: lists lag at most this much, and the entries waiting stay few."""


def _check_status_delay(_: object, __: object, value: float) -> None:
    if not 0 <= value <= MAX_STATUS_DELAY:
        raise ValueError(
            f"ServerOptions.status_delay (df-server --status-delay) is {value!r} seconds: it "
            f"must be from 0 to {MAX_STATUS_DELAY:g}, as a run is listed as running only that "
            "long after its start and its pending entry is kept in memory meanwhile; use a "
            "value in that range"
        )


@define
class ServerOptions:
    """Tuning of a df-server; the defaults suit production."""

    namespace: str = "default"
    input_ack_wait: float = 10.0
    """Seconds before an input a crashed server was handling is redelivered to another."""
    input_max_deliver: int = 10
    """Deliveries of one input the server consumer allows. An input whose handling fails is
    dead-lettered after ``input_max_deliver - 1`` of them; one delivered this often without
    failing (each server that took it died) is dead-lettered before it is handled again."""
    cache_size: int = 20_000
    """Runs whose state is kept in memory (a miss reloads the history)."""
    concurrency: int = 1024
    """Inputs processed at once (different runs in parallel, one at a time per run)."""
    start_concurrency: int = 64
    """New starts from clients handled at once (0: as many as ``concurrency``); the runs
    already going, and above all their due timers, come first (``server/admission.py``)."""
    status_delay: float = field(default=1.0, validator=_check_status_delay)
    """Seconds a run must stay open before its "running" status entry is written (0: at once,
    right after its start). A run that closes sooner gets only its closed entry: one stored
    message fewer per short run, for list/count seeing a new run up to this late (see
    ``server/status_later.py``). At most ``MAX_STATUS_DELAY`` (60)."""
    replicas: int = 1
    """Stream and bucket replicas (3 in a 3-node cluster)."""
    local_timers: bool = True
    """Fire timers from memory at their due time; the JetStream schedule stays the durable
    backup (it fires up to ~0.25 s late)."""
    sticky_timeout: float = 5.0
    """A run's workflow tasks go to the worker that holds its generator (sticky); one that
    worker has not taken after this many seconds, or that it held when it died, is moved to
    the task queue for any worker (0: no sticky tasks; see ``server/sticky.py``)."""
    eager_check: float = 30.0
    """Eager activity dispatch: a worker that decides an activity of its own task queue and
    has free slots runs its first attempt itself, with no stored task and no lease; an
    attempt with neither an outcome nor a lease this many seconds later (or at its
    start_to_close_timeout plus ``grants.CHECK_GRACE``, if that comes first) is recorded timed
    out and retried (0: every task is stored; see ``server/grants.py``)."""
    eager_start_wait: float = 0.0
    """Seconds a new run's first workflow task is offered to a worker of its queue before
    anything is stored (eager start, ``server/eager_starts.py``); no answer in time, or
    "busy", and the run is created as before (0: never offered)."""
    compact_interval: float = 1.0
    """Seconds between two purges of the inputs and tasks already handled (0: never; see
    ``server/janitor.py``)."""
    overdue_removal: float = 3600.0
    """Seconds past a closed run's recorded removal time after which the janitor asks for its
    removal itself, should its expiry never have been stored (df-server and the process that
    reported the close both killed in between); 0: never. See ``server/janitor.py``."""
    retention: float | None = None
    """Seconds closed runs are kept, stored with the namespace for every server (None: keep
    what is stored; 7 days if nothing is)."""
    history_limits: dict[str, int] = field(factory=dict)
    """History limits to store with the namespace (``NamespaceSettings`` field names:
    ``history_warn_events``, ``history_warn_bytes``, ``history_limit_events``,
    ``history_limit_bytes``); the others keep what is stored."""
    archive: str | None = None
    """Archive closed runs' histories before deleting them: ``dir:PATH`` or ``objstore``."""
    payload_grace: float = PAYLOAD_GRACE
    """Seconds a payload object no run refers to is kept after its last put: a message naming
    it may still be on its way (see ``transport/payload_gc.py``). Writers put an object they
    find stored again once it is older than a quarter hour (``TOUCH_AFTER``): keep this at least
    four times that."""
    schedules: ScheduleOptions | None = field(factory=ScheduleOptions)
    """The schedule component (None: this server does not step schedules)."""

    @property
    def redelivery(self) -> Redelivery:
        """When a failed input comes back, and when it is dead-lettered (before JetStream's
        ``max_deliver`` would leave it stuck)."""
        return Redelivery(give_up_at=max(1, self.input_max_deliver - 1))

    clock: Clock = REAL_CLOCK
    """What timers, retries, timeouts and workflow time read (a ``SkippingClock`` in tests
    with time skipping)."""
