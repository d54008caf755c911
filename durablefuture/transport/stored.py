"""One stored message of a stream, read by sequence or subject.

Direct gets are fast and batched, but any replica of an R3 stream may answer them, one that is
behind included. :func:`leader_get` asks the stream leader (``STREAM.MSG.GET``), so a message a
PubAck has just named is always found. :func:`call_api` sends such a JetStream API request by
hand and reads its answer (the leader's get here, a stream purge in ``compaction``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import define
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from durablefuture.codec.jsapi import api_reply, api_request
from durablefuture.core.errors import TransportError
from durablefuture.transport.guard import check_subject
from durablefuture.transport.replies import ReplyInbox

if TYPE_CHECKING:
    from durablefuture.transport.publisher import Publisher

__all__ = ["Stored", "call_api", "direct_last", "error_text", "leader_get", "newest"]

_NO_MESSAGE = 10037  # STREAM.MSG.GET: no message found
_SEQ_DIGITS = 20
"""At most this many digits in a stream sequence (a uint64 has 20)."""


@define
class Stored:
    """One stored message, however it was read (a direct get or the leader's API)."""

    subject: str
    seq: int
    headers: dict[str, str]
    data: bytes
    time: str = ""
    """When JetStream stored it (RFC 3339, UTC), when the read says so."""

    @classmethod
    def of(cls, m: Msg) -> Stored:
        """From a direct get reply (the stored subject and sequence travel as headers)."""
        headers = dict(m.headers or {})
        return cls(
            headers.get("Nats-Subject", ""),
            int(headers.get("Nats-Sequence", "0")),
            headers,
            m.data,
            headers.get("Nats-Time-Stamp", ""),
        )

    @classmethod
    def from_api(cls, message: dict[str, object]) -> Stored:
        """From a STREAM.MSG.GET reply (headers and body base64-encoded)."""
        raw = base64.b64decode(str(message.get("hdrs") or ""))
        headers: dict[str, str] = {}
        for line in raw.decode(errors="replace").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip()] = value.strip()
        seq = message.get("seq", 0)
        return cls(
            str(message.get("subject", "")),
            seq if isinstance(seq, int) else 0,
            headers,
            base64.b64decode(str(message.get("data") or "")),
            str(message.get("time") or "")[:64],
        )


async def leader_get(
    nc: NATS,
    stream: str,
    request: dict[str, object],
    what: str,
    timeout: float,
    replies: ReplyInbox | None = None,
) -> Stored | None:
    """One message from the leader of ``stream`` (None if there is none).

    ``request`` is a STREAM.MSG.GET request (``{"seq": n}``, ``{"last_by_subj": s}``, ...);
    ``what`` names the read in errors; ``replies``: the inbox to take the answer on (as
    :func:`call_api`).
    """
    api = check_subject(f"$JS.API.STREAM.MSG.GET.{stream}", "stream name")
    body, data = await call_api(nc, api, request, f"reading {what}", timeout, replies)
    error = body.get("error")
    if error is not None:
        if isinstance(error, dict) and error.get("err_code") == _NO_MESSAGE:
            return None
        raise TransportError(f"reading {what}: {error_text(error)}")
    message = body.get("message")
    if not isinstance(message, dict):
        raise TransportError(f"reading {what}: unreadable reply {data[:200]!r}")
    return Stored.from_api(message)


async def newest(pub: Publisher, stream: str, subject: str, direct: bool) -> Stored | None:
    """The newest message on ``subject`` (None if none), answered on ``pub``'s inbox: from the
    stream leader, or with ``direct`` by :func:`direct_last` (any replica may answer: for a
    reader that reads from the leader again when it does not find what it looked for)."""
    if direct:
        return await direct_last(stream, subject, subject, pub.timeout, pub.replies)
    request: dict[str, object] = {"last_by_subj": subject}
    return await leader_get(pub.nc, stream, request, subject, pub.timeout, pub.replies)


async def direct_last(
    stream: str, subject: str, what: str, timeout: float, replies: ReplyInbox
) -> Stored | None:
    """The newest message on ``subject`` as a direct get answers it (None if there is none).

    Any replica of the stream may answer, one that is behind included: on a single-replica
    stream that is the leader, elsewhere the answer may be older than the newest write (a
    caller that needs the newest asks :func:`leader_get`). Cheaper than the leader's API for
    nats-server (no JSON, no base64) and for the reader. An answer for another subject, or
    with a sequence that is not 1 to 20 digits, is refused as unreadable.
    """
    api = check_subject(f"$JS.API.DIRECT.GET.{stream}", "stream name")
    try:
        msg = await replies.ask_msg(api, api_request({"last_by_subj": subject}), timeout)
    except Exception as exc:
        raise TransportError(f"reading {what} failed: {exc}") from exc
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    seq = headers.get("Nats-Sequence", "")
    if (
        status
        or headers.get("Nats-Subject") != subject
        or not 0 < len(seq) <= _SEQ_DIGITS
        or not (seq.isascii() and seq.isdigit())
    ):
        raise TransportError(f"reading {what}: unreadable direct get answer {headers!r:.200}")
    return Stored.of(msg)


async def call_api(
    nc: NATS,
    api: str,
    request: Mapping[str, object],
    doing: str,
    timeout: float,
    replies: ReplyInbox | None = None,
) -> tuple[dict[str, Any], bytes]:
    """The JSON object a JetStream API request on ``api`` is answered with, and the answer's
    bytes (to quote in errors); an error the answer reports is the caller's to read.

    ``replies``: answered on that inbox (``ReplyInbox.ask``: no reply subject drawn from the
    system's random source, no task wrapper and timer of nats-py's ``request``; the reads a
    workflow's path makes, like a client's read of the batch that closes a run), else with
    nats-py's ``request``.

    Raises:
        TransportError: naming ``doing``, when no answer came or it is no JSON object.
    """
    try:
        if replies is not None:
            data = await replies.ask(api, api_request(request), timeout)
        else:
            data = (await nc.request(api, api_request(request), timeout=timeout)).data
        body = api_reply(data)
    except Exception as exc:
        raise TransportError(f"{doing} failed: {exc}") from exc
    if not isinstance(body, dict):
        raise TransportError(f"{doing}: unreadable reply {data[:200]!r}")
    return body, data


def error_text(error: object) -> object:
    """What the ``error`` of a JetStream API answer says: its description, if it has one."""
    return error.get("description", error) if isinstance(error, dict) else error
