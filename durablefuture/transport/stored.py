"""One stored message of a stream, read by sequence or subject.

Direct gets are fast and batched, but any replica of an R3 stream may answer them, one that is
behind included. :func:`leader_get` asks the stream leader (``STREAM.MSG.GET``), so a message a
PubAck has just named is always found. :func:`call_api` sends such a JetStream API request by
hand and reads its answer (the leader's get here, a stream purge in ``compaction``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from attrs import define
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from durablefuture.codec.jsapi import api_reply, api_request
from durablefuture.core.errors import TransportError
from durablefuture.transport.guard import check_subject
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.replies import ReplyInbox

__all__ = ["Stored", "call_api", "error_text", "leader_get", "leader_get_for"]

_NO_MESSAGE = 10037  # STREAM.MSG.GET: no message found


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
    inbox: ReplyInbox | None = None,
) -> Stored | None:
    """One message from the leader of ``stream`` (None if there is none).

    ``request`` is a STREAM.MSG.GET request (``{"seq": n}``, ``{"last_by_subj": s}``, ...);
    ``what`` names the read in errors; the answer comes back on ``inbox`` if given.
    """
    api = check_subject(f"$JS.API.STREAM.MSG.GET.{stream}", "stream name")
    body, data = await call_api(nc, api, request, f"reading {what}", timeout, inbox)
    error = body.get("error")
    if error is not None:
        if isinstance(error, dict) and error.get("err_code") == _NO_MESSAGE:
            return None
        raise TransportError(f"reading {what}: {error_text(error)}")
    message = body.get("message")
    if not isinstance(message, dict):
        raise TransportError(f"reading {what}: unreadable reply {data[:200]!r}")
    return Stored.from_api(message)


async def leader_get_for(
    pub: Publisher, stream: str, request: dict[str, object], what: str
) -> Stored | None:
    """:func:`leader_get` by ``pub``'s connection, with its timeout, the answer coming back on
    its reply inbox (which its PubAcks come back on too)."""
    return await leader_get(pub.nc, stream, request, what, pub.timeout, pub.replies)


async def call_api(
    nc: NATS,
    api: str,
    request: Mapping[str, object],
    doing: str,
    timeout: float,
    inbox: ReplyInbox | None = None,
) -> tuple[dict[str, Any], bytes]:
    """The JSON object a JetStream API request on ``api`` is answered with, and the answer's
    bytes (to quote in errors); an error the answer reports is the caller's to read.

    With ``inbox`` (a publisher's reply multiplexer, which its PubAcks come back on too) the
    answer comes back there, without nats-py's ``request`` (a random reply token and an
    ``asyncio.wait_for`` per request: the history reads of every result and every start).

    Raises:
        TransportError: naming ``doing``, when no answer came or it is no JSON object.
    """
    try:
        if inbox is not None:
            data = await inbox.ask(api, api_request(request), timeout)
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
