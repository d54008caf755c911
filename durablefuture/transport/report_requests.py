"""Worker reports as core-NATS requests to df-server, with the stored input as the fallback.

A report used to be stored on ``df.<ns>.in.report`` (one fsynced write), pulled by a df-server,
recorded in the run's history (a second write) and then purged. Asked on
``dfev.<ns>.report`` instead (queue group ``df-server``: one server takes each request), the
server records it at once and answers only after the history append: the report itself is
never stored. The answer is one of three words:

- ``recorded``: in the run's history (or found there already: a report is recorded once per
  input id, so a retry or a late duplicate adds nothing);
- ``refused``: not a report df-server may believe; stored as a dead letter with the reason;
- anything else, no answer within :data:`ANSWER_WAIT`, or nobody listening: the worker stores
  the report on ``df.<ns>.in.report`` as before. So a report is never lost to a df-server that
  is busy, stopping or killed, and nothing needs a df-server to be up.
"""

from __future__ import annotations

from collections.abc import Mapping

from durablefuture.core.errors import TransportError
from durablefuture.transport.replies import ReplyInbox

__all__ = ["ANSWER_WAIT", "RECORDED", "REFUSED", "STORE", "ask_report"]

RECORDED = b"recorded"
REFUSED = b"refused"
STORE = b"store"
ANSWER_WAIT = 1.0
"""Seconds a worker waits for the answer before it stores the report instead (a df-server
killed while it held the request answers never; a late answer costs only a duplicate)."""


async def ask_report(
    replies: ReplyInbox,
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    wait: float = ANSWER_WAIT,
) -> bytes:
    """Ask a df-server to record a report (the answer comes back on ``replies``, the
    worker's one inbox): :data:`RECORDED`, :data:`REFUSED` or :data:`STORE` (store it on the
    input subject instead). Never raises a transport error."""
    try:
        answer = await replies.ask(subject, data, wait, headers)
    except TransportError:
        return STORE
    return answer if answer in (RECORDED, REFUSED) else STORE
