"""Listing and inspecting runs: the status index, histories, live workers, queue depths."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from attrs import evolve

from durablefuture.client.requests import Requests
from durablefuture.client.views import WorkflowDescription, describe_summary
from durablefuture.codec.visibility import (
    MAX_PAGE_SIZE,
    VisibilityReply,
    VisibilityRequest,
    decode_visibility_reply,
    encode_visibility_request,
)
from durablefuture.core.effects import RunSummary
from durablefuture.core.errors import (
    CorruptHistoryError,
    DurableFutureError,
    InvalidArgumentError,
    InvalidQueryError,
    ServerUnavailableError,
    WorkflowNotFoundError,
)
from durablefuture.core.liveness import WorkerRecord
from durablefuture.core.query import parse_query, split_order_by
from durablefuture.core.reply_errors import error_for_reply
from durablefuture.core.state import RunState
from durablefuture.transport.buckets import read_key, read_values
from durablefuture.transport.history import fold
from durablefuture.transport.layout import queue_depths
from durablefuture.transport.replies import NoResponders, RequestTimedOut, request

__all__ = ["Visibility", "WorkflowPage"]

log = logging.getLogger("durablefuture.client")


class WorkflowPage(list[WorkflowDescription]):
    """One page of ``list_workflows(query=...)``: a list of runs, and the token of the next
    page (None after the last)."""

    def __init__(self, runs: list[WorkflowDescription], next_page_token: str | None) -> None:
        super().__init__(runs)
        self.next_page_token = next_page_token


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _with_filters(
    query: str, status: str | None, workflow_type: str | None, since: datetime | None
) -> str:
    """``query`` with the older keyword filters ANDed to it."""
    parts = []
    if status is not None:
        parts.append(f"ExecutionStatus = {_quote(status)}")
    if workflow_type is not None:
        parts.append(f"WorkflowType = {_quote(workflow_type)}")
    if since is not None:
        when = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        parts.append(f"StartTime >= {_quote(when.isoformat())}")
    if not parts:
        return query
    head, order = split_order_by(query)
    where = " AND ".join(([f"({head})"] if head.strip() else []) + parts)
    return f"{where} {order}".strip()


class Visibility(Requests):
    """What a client can read without asking the df-server."""

    # ------------------------------------------------------------------ listing

    async def list_workflows(
        self,
        query: str | None = None,
        *,
        page_size: int | None = None,
        next_page_token: str | None = None,
        status: str | None = None,
        workflow_type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        count_open: bool = True,
    ) -> list[WorkflowDescription]:
        """Runs of the namespace, newest first unless the query says ``ORDER BY``.

        With ``query``, ``page_size`` or ``next_page_token``, the df-servers' visibility index
        answers (see the README's query language): one page of at most ``page_size`` runs
        (default 100, at most 1000), returned as a :class:`WorkflowPage` whose
        ``next_page_token`` fetches the next one (None after the last). ``status``,
        ``workflow_type`` and ``since`` are then ANDed to the query. Listed runs carry no
        ``result`` / ``failure`` (``describe()`` has them).

        Without those three, the status index is read in full and filtered here (the older
        form, kept as it was: ``limit`` caps the list; with ``count_open`` the
        ``history_length`` of each open run is read from its history).

        Raises:
            InvalidQueryError: the query does not parse (the message names the position).
            ServerUnavailableError: no df-server answered (the index lives in df-servers).
        """
        if query is not None or page_size is not None or next_page_token is not None:
            text = _with_filters(query or "", status, workflow_type, since)
            reply = await self._visibility(
                VisibilityRequest("list", text, page_size or 100, next_page_token)
            )
            return WorkflowPage([describe_summary(s) for s in reply.runs], reply.next_page_token)
        return await self._scan(status, workflow_type, since, limit, count_open)

    async def count_workflows(self, query: str | None = None) -> int:
        """How many runs match ``query`` (all runs of the namespace without one).

        Raises:
            InvalidQueryError: the query does not parse (the message names the position).
            ServerUnavailableError: no df-server answered (the index lives in df-servers).
        """
        reply = await self._visibility(VisibilityRequest("count", query or "", 1))
        return reply.count

    async def _visibility(self, req: VisibilityRequest) -> VisibilityReply:
        if not 1 <= req.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(
                f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {req.page_size}"
            )
        parse_query(req.query)  # a syntax error is reported here, with no round trip
        try:
            data = await request(
                self.nc,
                self.layout.visibility,
                encode_visibility_request(req),
                self.request_timeout,
            )
        except (NoResponders, RequestTimedOut) as exc:
            raise ServerUnavailableError(
                f"no df-server answered a list/count for namespace {self.namespace!r} ({exc}); "
                "the visibility index lives in the df-servers: start one with "
                "`df-server --nats URL` or `df dev`"
            ) from None
        reply = decode_visibility_reply(self.codec, data)
        if isinstance(reply, tuple):
            error_type, message, position = reply
            if error_type == InvalidQueryError.__name__:
                raise InvalidQueryError(message, position=position)
            raise error_for_reply(error_type, message)
        return reply

    async def _scan(
        self,
        status: str | None,
        workflow_type: str | None,
        since: datetime | None,
        limit: int,
        count_open: bool,
    ) -> list[WorkflowDescription]:
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
