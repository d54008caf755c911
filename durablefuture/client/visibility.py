"""Listing and inspecting runs: the status index, histories, live workers, queue depths."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from attrs import evolve

from durablefuture.client.requests import Requests
from durablefuture.client.views import WorkflowDescription, describe_summary
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import CorruptHistoryError, DurableFutureError, WorkflowNotFoundError
from durablefuture.core.liveness import WorkerRecord
from durablefuture.core.state import RunState
from durablefuture.transport.buckets import read_key, read_values
from durablefuture.transport.history import fold
from durablefuture.transport.layout import queue_depths

__all__ = ["Visibility"]

log = logging.getLogger("durablefuture.client")


class Visibility(Requests):
    """What a client can read without asking the df-server."""

    # ------------------------------------------------------------------ listing

    async def list_workflows(
        self,
        *,
        status: str | None = None,
        workflow_type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        count_open: bool = True,
    ) -> list[WorkflowDescription]:
        """Runs from the status index, newest first, filtered by status / type / start time.

        The index is written when a run starts and when it closes, so the ``history_length`` of
        an open run is read from its history (one direct get per open run returned); with
        ``count_open=False`` it is the index's (the events recorded when the run started).
        """
        out: list[WorkflowDescription] = []
        for value in await read_values(await self._kv()):
            try:
                summary = self.codec.decode_summary(value)
            except DurableFutureError:
                continue
            if status is not None and summary.status != status:
                continue
            if workflow_type is not None and summary.workflow_type != workflow_type:
                continue
            if since is not None and summary.start_time < since.timestamp():
                continue
            out.append(describe_summary(summary))
        out.sort(key=lambda d: d.start_time, reverse=True)
        return await self.count_events(out[:limit]) if count_open else out[:limit]

    async def count_events(self, runs: Sequence[WorkflowDescription]) -> list[WorkflowDescription]:
        """``runs`` with the ``history_length`` of each open one read from its history.

        A run whose history cannot be read keeps the count it had (and is logged at debug).
        """
        limit = asyncio.Semaphore(32)

        async def current(d: WorkflowDescription) -> WorkflowDescription:
            if not d.is_open:
                return d
            async with limit:
                try:
                    n = await self.history.last_event_id(d.workflow_id, d.run_id)
                except DurableFutureError as exc:
                    log.debug("counting the events of %s failed: %s", d.workflow_id, exc)
                    return d
            return evolve(d, history_length=max(n, d.history_length))

        return list(await asyncio.gather(*(current(d) for d in runs)))

    async def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        """The run's status entry (None if it has none yet)."""
        value = await read_key(await self._kv(), self.layout.status_key(workflow_id, run_id))
        return None if value is None else self.codec.decode_summary(value)

    async def latest_run_id(self, workflow_id: str) -> str:
        try:
            last = await self.history.last_of_workflow(workflow_id)
        except CorruptHistoryError as exc:  # the newest message is unreadable; its run is known
            if exc.run_id:
                return exc.run_id
            raise
        if last is None:
            raise WorkflowNotFoundError(
                f"no workflow with id {workflow_id!r} in namespace {self.namespace!r}"
            )
        return last.run_id

    async def run_state(self, workflow_id: str, run_id: str) -> RunState:
        """The run's state folded from its history.

        Raises:
            CorruptHistoryError: a history message cannot be read or folded (it names the
                message's stream sequence and why).
        """
        batches = await self.history.read(workflow_id, run_id)
        if not batches:
            raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run_id}")
        return fold(workflow_id, run_id, batches)

    async def workers(self, task_queue: str | None = None) -> list[WorkerRecord] | None:
        """Live workers of the namespace (of ``task_queue`` only, if given): their
        registrations, running activity attempts and when they were last seen.

        None when liveness is unknown (the namespace was created by an older df-server).
        """
        return await self.registry.live(task_queue)

    async def queue_depths(self, task_queue: str) -> dict[str, int]:
        """Tasks waiting (not yet delivered) and in flight, per kind, for ``task_queue``."""
        return await queue_depths(self.pub.js, self.layout, task_queue)
