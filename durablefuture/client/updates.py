"""Sending an update to a run and waiting for its result.

1. Unless history already holds the update's id (a retried call), a workflow worker of the
   run's task queue checks it, through the query path: the run must be running and have a
   handler, and the validator (if any) must not raise. A rejection records nothing.
2. The update is stored as a request (``AcceptUpdate`` on ``in.run``): the df-server records
   ``UpdateAccepted`` once per update id, which wakes the run; its handler runs at that point.
3. The caller reads the run's history until ``UpdateCompleted`` with that id (the handler's
   result or error) or the run's end. Reads resume from the last stream sequence seen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from durablefuture.codec.records import decode_query_answer, encode_query
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.errors import (
    DecodeError,
    ResultTimeoutError,
    UpdateFailedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from durablefuture.core.failure import exception_from_failure
from durablefuture.core.types import check_text_id, check_type_name
from durablefuture.transport.replies import NoResponders, RequestTimedOut, request

if TYPE_CHECKING:
    from durablefuture.client.handle import WorkflowHandle

__all__ = ["send_update"]

_POLL_FIRST, _POLL_MOST = 0.02, 0.5


async def send_update(
    handle: WorkflowHandle,
    name: str,
    args: tuple[object, ...],
    *,
    update_id: str | None,
    result_type: object,
    timeout: float | None,
    validate_timeout: float,
) -> Any:
    check_type_name(name, "update name")
    update_id = check_text_id(update_id or uuid.uuid4().hex, "update id")
    client = handle.client
    run_id = await handle._run()
    payloads = client.codec.payloads
    encoded = payloads.to_payloads(args, f"update {name!r}")
    seen, events = await _events(handle, run_id, 0)
    if not any(isinstance(e, ev.UpdateAccepted) and e.update_id == update_id for e in events):
        await _validate(handle, run_id, events, name, list(encoded), validate_timeout)
        try:
            await handle._send(inp.AcceptUpdate(run_id, update_id, name, encoded))
        except WorkflowNotRunningError as exc:  # it closed after the check
            raise UpdateFailedError(f"update {name!r} was not accepted: {exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _POLL_FIRST
    while True:
        for e in events:
            if isinstance(e, ev.UpdateCompleted) and e.update_id == update_id:
                if e.failure is not None:
                    err = UpdateFailedError(f"update {name!r} failed: {e.failure.describe()}")
                    raise err from exception_from_failure(e.failure)
                unpacked = (await client.codec.unpack_payloads([e.result]))[0]
                return payloads.from_payload(unpacked, result_type, f"result of update {name!r}")
            if isinstance(e, ev.TERMINAL_EVENTS):
                raise UpdateFailedError(
                    f"workflow {handle.id!r} run {run_id} closed ({type(e).__name__}) before "
                    f"update {name!r} (id {update_id!r}) completed"
                )
        if deadline is not None and time.monotonic() >= deadline:
            raise ResultTimeoutError(
                f"update {name!r} (id {update_id!r}) did not complete within {timeout:g}s; it "
                "was accepted and still runs: call update again with this update_id to wait"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MOST)
        seen, events = await _events(handle, run_id, seen)


async def _events(handle: WorkflowHandle, run_id: str, after: int) -> tuple[int, list[ev.Event]]:
    batches = await handle.client.history.read(handle.id, run_id, after)
    if not batches and after == 0:
        raise WorkflowNotFoundError(f"no history for workflow {handle.id!r} run {run_id}")
    last = batches[-1].stream_seq if batches else after
    return last, [e for b in batches for e in b.events]


async def _validate(
    handle: WorkflowHandle,
    run_id: str,
    events: list[ev.Event],
    name: str,
    encoded: list[Any],
    timeout: float,
) -> None:
    client = handle.client
    started = events[0] if events else None
    if not isinstance(started, ev.WorkflowStarted):
        raise WorkflowNotFoundError(f"no history for workflow {handle.id!r} run {run_id}")
    queue = started.task_queue
    body = encode_query(
        handle.id, run_id, name, await client.codec.pack_payloads(encoded), update=True
    )
    try:
        data = await request(client.nc, client.layout.query(queue), body, timeout)
    except NoResponders:
        raise UpdateFailedError(
            f"no workflow worker is serving task queue {queue!r}; updates are checked by the "
            "workers that run the workflow before they are recorded"
        ) from None
    except RequestTimedOut:
        raise UpdateFailedError(
            f"update {name!r} was not checked within {timeout:g}s (no worker answered)"
        ) from None
    try:
        answer = decode_query_answer(data)
    except DecodeError as exc:
        raise UpdateFailedError(f"update {name!r} got an unreadable answer: {exc}") from None
    if not answer.ok:
        raise UpdateFailedError(answer.message)
