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
  more: a run created and since followed by another run of the id is found then);
- the id has no history at all: the append is on its way (it left right behind the task) or
  never will be. Read again, with a growing pause, for at most ``FIRST_BATCH_WAIT`` seconds;
  still nothing and the run is taken as never created (its client, if alive, got no answer
  and stores its start, which makes a new run; if that retry reused this run, its first
  batch would be derived again with its tasks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from durablefuture.transport.history import HistoryStore
from durablefuture.worker.cache import RunCache

__all__ = ["FIRST_BATCH_WAIT", "first_batch_stored", "run_exists"]

FIRST_BATCH_WAIT = 10.0
"""Seconds a first-batch activity task waits for its run's batch when the id has no
history at all (the append left right behind the task: it is normally stored before the
task even reaches a worker)."""


async def first_batch_stored(
    history: HistoryStore,
    workflow_id: str,
    run_id: str,
    keep_alive: Callable[[], Awaitable[None]] | None = None,
    wait: float = FIRST_BATCH_WAIT,
) -> bool:
    """Whether run ``run_id`` of ``workflow_id`` exists (its first batch is stored); False
    once it is known never to be created, or after ``wait`` seconds with no history for
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
            return False
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
) -> bool:
    """Whether a first-batch activity task's run exists (see the module docstring)."""
    cached = cache.get(run_id)
    if cached is not None and cached.last_seq == 0 and cache.lock(run_id).locked():
        async with cache.lock(run_id):  # the offer's taker waits for the receipt
            pass
        cached = cache.get(run_id)
    if cached is not None and cached.last_seq > 0:
        return True  # its receipt, or a read of its history, had a stored batch
    return await first_batch_stored(history, workflow_id, run_id, keep_alive)
