"""Activity tasks of an eager start's first batch: run only once their run exists.

An eager start (``server/eager_starts.py``) stores the first batch's activity tasks just
before the batch itself, each guarded like the batch, on the same connection. Such a task
(``Df-First-Batch``) may therefore reach a worker for a run that is never created: df-server
killed between the task and the append, or another df-server that created the same workflow
id between the two checks (both tasks passed the guard, the other append came first). Its
activity must not run then: a side effect for a workflow that does not exist.

So the worker makes sure before it runs such a task. When it holds the run's generator with
a stream sequence (it took the offer, and the receipt, the batch as stored, came: it waits
for that receipt if it is on its way) the run exists. Else it reads the history:

- the run's history holds a batch: the run exists, run it;
- the workflow id's newest batch is another run's: this run's append can no longer pass its
  guard (a workflow's history only grows), so the run is never created (read the run once
  more: a run created and since followed by another run of the id is found then). The task
  is dead-lettered with that reason, its activity not run;
- the id has no history at all: the append is on its way (it left right behind the task) or
  never will be. Read again, with a growing pause, for ``FIRST_BATCH_WAIT`` seconds; still
  nothing and the delivery fails (``FirstBatchNotFound``): the task comes back with the
  worker's redelivery backoff and is looked at again, and after the last redelivery its
  attempt's failure is recorded, as for any task given up on (refused, as an input for an
  unknown run, if the run was never created; recorded against the run, whose retry policy
  then applies, if its append came that late). A client that got no answer stores its start,
  which makes a new run of the id: the next look then finds another run's batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from durablefuture.core.effects import ActivityTask
from durablefuture.core.errors import TransportError
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.messages import Msg
from durablefuture.worker.cache import RunCache

__all__ = [
    "FIRST_BATCH_WAIT",
    "FirstBatchNotFound",
    "first_batch_checked",
    "first_batch_stored",
    "run_exists",
]

FIRST_BATCH_WAIT = 2.0
"""Seconds one delivery of a first-batch activity task waits for its run's batch when the id
has no history at all (the append left right behind the task: it is normally stored before
the task even reaches a worker); redeliveries look again."""


class FirstBatchNotFound(TransportError):
    """A first-batch activity task's workflow id has no history yet: delivered again later."""


async def first_batch_stored(
    history: HistoryStore,
    workflow_id: str,
    run_id: str,
    keep_alive: Callable[[], Awaitable[None]] | None = None,
    wait: float = FIRST_BATCH_WAIT,
) -> bool | None:
    """Whether run ``run_id`` of ``workflow_id`` exists (its first batch is stored); False
    once it is known never to be created; None after ``wait`` seconds with no history for
    the id at all. Reads from the stream leader (a lagging replica could hide the batch)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = 0.005
    while True:
        last = await history.last_of_workflow(workflow_id)
        if last is not None:
            if last.run_id == run_id:
                return True
            return await history.last_seq(workflow_id, run_id) > 0
        if loop.time() >= deadline:
            return None
        if keep_alive is not None:
            await keep_alive()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def run_exists(
    cache: RunCache,
    history: HistoryStore,
    workflow_id: str,
    run_id: str,
    keep_alive: Callable[[], Awaitable[None]] | None = None,
) -> bool | None:
    """Whether a first-batch activity task's run exists (see the module docstring); None:
    not known yet."""
    cached = cache.get(run_id)
    if cached is not None and cached.last_seq == 0 and cache.lock(run_id).locked():
        async with cache.lock(run_id):  # the offer's taker waits for the receipt
            pass
        cached = cache.get(run_id)
    if cached is not None and cached.last_seq > 0:
        return True  # its receipt, or a read of its history, had a stored batch
    return await first_batch_stored(history, workflow_id, run_id, keep_alive)


async def first_batch_checked(
    cache: RunCache,
    history: HistoryStore,
    task: ActivityTask,
    msg: Msg,
    dead_letter: Callable[[Msg, str], Awaitable[None]],
) -> bool:
    """Whether a first-batch activity task may run: its run exists. One whose run is never
    created is dead-lettered (False); raises ``FirstBatchNotFound`` when that is not known
    yet (the delivery fails, and the task comes back later)."""
    exists = await run_exists(cache, history, task.workflow_id, task.run_id, msg.in_progress)
    if exists is None:
        raise FirstBatchNotFound(
            f"activity {task.seq} of run {task.run_id}: the workflow {task.workflow_id!r} has "
            f"no history yet (an eager start's first batch not stored {FIRST_BATCH_WAIT:g} s "
            "after its task): looked at again on its next delivery"
        )
    if not exists:
        reason = f"run {task.run_id} was never created (an eager start not stored): not run"
        await dead_letter(msg, f"activity {task.seq} of {reason}")
    return exists
