"""A worker's settings (``WorkerOptions``) and the fixed limits its parts share."""

from __future__ import annotations

from attrs import define

from durablefuture.clock import REAL_CLOCK, Clock
from durablefuture.core.errors import InvalidArgumentError

__all__ = [
    "MAX_FAILURE_CHARS",
    "MAX_KNOWN_ATTEMPTS",
    "MAX_REPORT_BYTES",
    "MAX_REPORT_COMMANDS",
    "MAX_TASK_DELIVERIES",
    "REPORT_TRIES",
    "WorkerOptions",
]

MAX_TASK_DELIVERIES = 18
"""A task that fails this often on workers is recorded as failed and dead-lettered (the
consumers allow 20 deliveries; with fewer, two below their ``max_deliver``). One delivered
more often than that without failing (its workers died each time) is recorded as failed and
dead-lettered before it runs again."""
MAX_REPORT_COMMANDS = 1000
MAX_REPORT_BYTES = 256 * 1024
MAX_FAILURE_CHARS = 4000
"""A failure report too large to send is cut to this many characters of message."""
REPORT_TRIES = 40
"""Tries to store an attempt's outcome (a few minutes) before its task is left to redelivery."""
MAX_KNOWN_ATTEMPTS = 10_000
"""Finished activity attempts a worker remembers (a late delivery of one is not run again)."""


@define
class WorkerOptions:
    """Settings of the task-queue consumers a worker creates when they do not exist yet."""

    workflow_task_timeout: float = 10.0
    """A workflow task not acked within this is redelivered (its worker died)."""
    drain_timeout: float = 60.0
    """On shutdown (SIGTERM for df-worker), how long running activity attempts and workflow
    tasks may take to finish and be reported before the worker stops anyway. An attempt still
    running then is abandoned: another worker retries it once its lease runs out."""
    activity_lease: float = 30.0
    """An activity task whose worker stops extending its lease for this long is redelivered;
    the next worker finds the attempt's lease abandoned, reports the attempt as timed out
    (worker lost) and it is retried. A live worker renews the lease every quarter of this."""
    started_report_after: float = 1.0
    """An attempt running longer than this is reported as started, so the server enforces
    its start-to-close and heartbeat timeouts with durable timers."""
    liveness_interval: float = 2.0
    """Seconds between two liveness records (registrations, running attempts, last seen)."""
    liveness_ttl: float | None = None
    """A worker's record expires this long after its last write (default: three intervals,
    at least 2 s); `df why` then reports the worker as gone."""
    sticky: bool = True
    """Take the workflow tasks of the runs this worker caches on a subject of its own
    (sticky), so their generators are resumed instead of replayed; df-server moves a task
    this worker does not take in time to the shared queue."""
    ask_reports: bool = True
    """Ask a df-server to record each report (a core-NATS request, answered once the run's
    history holds it) before storing it as a server input: one stored message less per
    report. Off: every report is stored, and df-server pulls it."""
    eager_activities: bool = True
    """A worker that runs the workflows and the activities of its task queue offers its free
    activity slots with its reports: df-server may grant it the first attempts its decisions
    schedule, run here with no stored activity task (``worker/eager.py``). Off: every
    attempt goes through its stored task."""
    eager_claim_after: float = 5.0
    """A granted attempt (``eager_activities``) runs with no lease; one still running after
    this many seconds claims its lease, so df-server's check (``eager_check``, 30 s by
    default) finds it alive. Keep it well below ``eager_check`` (a third at most): an
    attempt found with neither outcome nor lease is recorded timed out. At least 0.1."""
    task_max_deliver: int = 20
    """Deliveries of one task the task-queue consumers allow (JetStream's ``max_deliver``;
    at least 3). A task is given up on two deliveries before that, at most after 18: its
    failure is recorded in its run's history (the workflow task is retried with backoff, the
    activity attempt counts as failed under its retry policy) and the message dead-lettered,
    also when each worker that took it died before reporting (workflow code that kills its
    worker process). The consumer's value, if another worker created it, is the one used."""
    clock: Clock = REAL_CLOCK
    """What activity timeouts and heartbeat times read (a ``SkippingClock`` in tests with
    time skipping; the server's must be the same)."""

    def record_ttl(self) -> float:
        if self.liveness_ttl is not None:
            return max(1.0, self.liveness_ttl)
        return max(2.0, 3 * self.liveness_interval)

    def check(self) -> None:
        """Refuse settings a worker cannot run with (:class:`InvalidArgumentError`)."""
        if not self.liveness_interval > 0:
            raise InvalidArgumentError(
                f"liveness_interval must be > 0 seconds, got {self.liveness_interval!r}"
            )
        if not self.eager_claim_after >= 0.1:
            raise InvalidArgumentError(
                f"eager_claim_after must be >= 0.1 seconds, got {self.eager_claim_after!r}"
            )
        if self.task_max_deliver < 3:
            raise InvalidArgumentError(
                f"task_max_deliver must be >= 3 (a task is given up on two deliveries before "
                f"it), got {self.task_max_deliver!r}"
            )
