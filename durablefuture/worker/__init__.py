"""df-worker as a library: runs workflow tasks and/or activity tasks of one task queue.

Workflow tasks: the run's generator is rebuilt from history (or resumed from the worker's cache
of live generators) by the pure replayer; the new commands go back to the server as a report,
and the task is acked only after that report is stored. Activity tasks: the function runs (sync
ones in a thread pool, async ones on the loop) with its timeouts enforced locally, heartbeats
recorded, and the result or structured failure reported, again before the ack.

The package, one concern a module:

========================  ==========================================================
``lifecycle``             the :class:`Worker`: start, bind, run, drain
``options``               :class:`WorkerOptions` and the limits the parts share
``deliveries``            each delivery guarded: backoff, give up, dead letter
``workflow_tasks``        workflow tasks: resume or replay, report the decisions
``receipts``              what the server recorded, fed to the cached generators
``cache``                 the live generators a worker keeps, one lock per run
``queries``               workflow queries
``activities``            activity tasks: one run per attempt, outcome before ack
``attempt``               one running attempt: timeouts, heartbeats, its outcome
``handover``              attempt leases: claim, renew, follow another worker's
``reports``               storing reports for the server, within the size limit
``liveness``              the worker's liveness record
========================  ==========================================================
"""

from durablefuture.worker.lifecycle import Worker
from durablefuture.worker.options import WorkerOptions

__all__ = ["Worker", "WorkerOptions"]
