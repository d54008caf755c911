"""Client starts as core-NATS requests to df-server, with the stored input as the fallback.

A start used to be stored on ``df.<ns>.in.start`` (one fsynced write), pulled by a df-server
(a hop), answered after the run's WorkflowStarted was appended, and then purged. Asked on
``dfev.<ns>.start`` instead (queue group ``df-server``: one server takes each request), the
server creates the run at once and answers once the run and its effects are stored: the start
itself is never stored. Nothing is lost by not storing it: a run's first workflow task is
stored before its WorkflowStarted (``durablefuture/server/starts.py``), so a df-server that
dies half-way leaves either no run or a run that goes on.

The answer is :data:`STORE` or an encoded ``Reply`` (the run started or found, or why not).
``STORE``, no answer within :data:`ANSWER_WAIT`, or nobody listening: the client stores the
start on ``df.<ns>.in.start`` as before, with the same request id, so a start that was in
fact made meanwhile is answered with that run (a start is made once per request id). A
request nats-server refused for the client's permissions (credentials made before the
subject existed) is never answered: after one such wait the client stores its starts for
:data:`PAUSE` seconds before it asks again, so such a setup costs one wait, not one per start.
"""

from __future__ import annotations

from collections.abc import Mapping

from durablefuture.core.errors import TransportError
from durablefuture.transport.connection import NATS
from durablefuture.transport.replies import ReplyInbox, RequestTimedOut

__all__ = ["ANSWER_WAIT", "PAUSE", "STORE", "ask_start", "refused_to_ask"]

STORE = b"store"
ANSWER_WAIT = 5.0
"""Seconds a client waits for the answer before it stores the start instead (a df-server
killed while it held the request answers never; a busy one may take seconds to make the run
on a loaded disk, and a late start costs a second handling of the same request id)."""
PAUSE = 300.0
"""Seconds a client stores its starts without asking after nats-server refused a request
for its permissions."""


async def ask_start(
    replies: ReplyInbox,
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    wait: float = ANSWER_WAIT,
) -> bytes | None:
    """Ask a df-server to start a run (answered on ``replies``, the client's one inbox): the
    encoded reply; :data:`STORE` (store the start on the input subject instead: answered so,
    nobody listens, or the request could not be sent); or None (no answer within ``wait``:
    store it, and do not ask for a while). Never raises a transport error."""
    try:
        answer = await replies.ask(subject, data, wait, headers)
    except RequestTimedOut:
        return None
    except TransportError:
        return STORE
    return answer or STORE


def refused_to_ask(nc: NATS, subject: str) -> bool:
    """Whether nats-server refused the connection's publishes on ``subject`` (its last
    error is the permissions violation naming it)."""
    err = str(nc.last_error or "").lower()
    return "permissions violation" in err and subject.lower() in err
