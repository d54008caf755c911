"""Worker liveness: a small record a worker rewrites every few seconds (registrations, the
attempts it runs, when it was last seen) in the namespace's workers bucket, with a per-key TTL,
so `df why` and `df workers` can tell a live worker from one that is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from durablefuture.core.errors import TransportError
from durablefuture.core.liveness import WorkerRecord
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.workers import WorkerRegistry
from durablefuture.worker.options import WorkerOptions

__all__ = ["Liveness"]

log = logging.getLogger("durablefuture.worker")


class Liveness:
    """Publishes ``record()`` every ``options.liveness_interval`` from start to stop."""

    def __init__(
        self,
        registry: WorkerRegistry,
        record: Callable[[], WorkerRecord],
        *,
        task_queue: str,
        identity: str,
        bucket: str,
        options: WorkerOptions,
    ) -> None:
        self.registry = registry
        self.record = record
        self.task_queue = task_queue
        self.identity = identity
        self.bucket = bucket
        self.options = options
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        try:
            available = await self.registry.available()
        except TransportError as exc:
            log.warning("cannot publish worker liveness: %s", exc)
            available = False
        if not available:
            log.warning(
                "the workers bucket %s does not exist (df-server is older than this worker); "
                "this worker's registrations and liveness are not published",
                self.bucket,
            )
            return
        await self._publish()
        self._task = asyncio.create_task(self._loop(), name="df-liveness")

    async def _loop(self) -> None:
        interval = self.options.liveness_interval
        while True:  # until cancelled, after running tasks have drained
            await asyncio.sleep(interval)
            await self._publish()

    async def _publish(self) -> None:
        try:
            await self.registry.put(self.record(), self.options.record_ttl())
        except Exception as exc:  # a lost record is retried on the next beat
            if not self._failing:
                log.warning("cannot publish worker liveness: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("worker liveness published again")
        self._failing = False

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task, "the liveness loop")
        try:
            await self.registry.remove(self.task_queue, self.identity, self.options.record_ttl())
        except Exception as exc:  # it expires on its own
            log.debug("cannot remove the liveness record: %s", exc)
