"""Queries: answer a workflow query from the run's state after its latest recorded event.

A query is a core NATS request to the task queue's workflow workers (one of them answers). The
run's cached generator is brought up to date with history when it fits, else the run is
replayed; the query handler then reads the generator's state. History is never changed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from durablefuture.client import Client
from durablefuture.codec.queries import decode_query, encode_query_answer, encode_query_error
from durablefuture.core import events as ev
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.errors import MessageRejectedError, NonDeterminismError, QueryFailedError
from durablefuture.core.replay import WorkflowExecution
from durablefuture.core.types import JsonValue
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.messages import Msg
from durablefuture.worker.cache import RunCache

log = logging.getLogger("durablefuture.worker")

__all__ = ["Queries"]


class Queries:
    """Answers the queries sent to one worker's task queue."""

    def __init__(
        self,
        client: Client,
        workflows: Mapping[str, WorkflowDefinition],
        *,
        identity: str,
        cache: RunCache,
        event_size: Callable[[ev.Event], int],
    ) -> None:
        self.client = client
        self.codec = client.codec
        self.workflows = workflows
        self.identity = identity
        self.cache = cache
        self.event_size = event_size

    async def on_query(self, msg: Msg) -> None:
        try:  # answer an inbox only: never write where the asker names (a run's history)
            check_reply_subject(msg.reply, "query reply subject")
        except MessageRejectedError as exc:
            log.error("refused a query: %s", exc)
            return
        try:
            answer = await self.answer(msg.data)
            body = encode_query_answer((await self.codec.pack_payloads([answer]))[0])
        except Exception as exc:
            body = encode_query_error(exc)
        with contextlib.suppress(Exception):
            await msg.respond(body)

    async def answer(self, data: bytes) -> JsonValue:
        try:
            req = decode_query(data)
            wid, run_id, name = req.workflow_id, req.run_id, req.name
            args = tuple(await self.codec.unpack_payloads(list(req.args)))
        except Exception as exc:
            raise QueryFailedError(f"malformed query: {exc}") from None
        async with self.cache.lock(run_id):
            cached = self.cache.get(run_id)
            batches = await self.client.history.read(
                wid, run_id, cached.last_seq if cached is not None else 0
            )
            if not batches and cached is None:
                raise QueryFailedError(f"no history for workflow {wid!r} run {run_id}")
            events = [e for b in batches for e in b.events]
            execution = cached.execution if cached is not None else None
            if cached is not None and cached.provisional:
                # assumed events must be confirmed: read everything and check
                batches = await self.client.history.read(wid, run_id)
                events = [e for b in batches for e in b.events]
                if not cached.confirm(events[: cached.execution.last_event_id]):
                    self.cache.pop(run_id)
                    execution = None
            if execution is not None:
                new = [e for e in events if e.event_id > execution.last_event_id]
                try:
                    execution.feed(new)
                    cached.last_seq = batches[-1].stream_seq if batches else cached.last_seq  # type: ignore[union-attr]
                except NonDeterminismError:
                    self.cache.pop(run_id)
                    execution = None
                    batches = await self.client.history.read(wid, run_id)
                    events = [e for b in batches for e in b.events]
            if execution is None:
                started = events[0] if events else None
                if not isinstance(started, ev.WorkflowStarted):
                    raise QueryFailedError(f"history of run {run_id} does not start correctly")
                definition = self.workflows.get(started.workflow_type)
                if definition is None:
                    raise QueryFailedError(
                        f"workflow type {started.workflow_type!r} is not registered on worker "
                        f"{self.identity}; registered: {sorted(self.workflows)}"
                    )
                execution = WorkflowExecution(
                    definition, self.codec.payloads, size_of=self.event_size
                )
                execution.feed(events)
            if req.update:  # an update's validation: raises UpdateFailedError to reject it
                execution.validate_update(name, args)
                return None
            value = execution.query(name, args)
        return self.codec.payloads.to_payload(value, f"result of query {name!r}")
