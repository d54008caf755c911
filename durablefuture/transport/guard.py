"""Checks every outgoing message against what nats-server accepts, before it is sent.

nats-server answers a too-long control line, an oversized payload or a malformed subject with
``-ERR`` and closes the connection; nats-py then stays closed. One bad id or one large report
must cost an error for that message, never the process's connection, so every publish goes
through :func:`check_message` first and fails with :class:`MessageRejectedError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from nats.aio.client import Client as NATS

from durablefuture.core.errors import MessageRejectedError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_SUBJECT_BYTES",
    "check_message",
    "check_reply_subject",
    "check_service_reply",
    "check_subject",
    "max_payload",
]

MAX_SUBJECT_BYTES = 1024
"""Longest subject (or reply subject) we send; the server's control line limit is 4 KiB."""
MAX_HEADER_BYTES = 16 * 1024
"""Largest header block we send."""

# tokens of printable ASCII without space; '*' and '>' are wildcards, never published to
_TOKEN = r"[!-)+,\-/-=?-~]+"
_SUBJECT = re.compile(rf"{_TOKEN}(\.{_TOKEN})*")
_SUBJECT_MATCH = _SUBJECT.fullmatch
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII without ':' and space
_GOOD_HEADER_NAMES: set[str] = set()
"""Header names seen valid (the engine sends a handful): checked once each."""
_MAX_GOOD_HEADER_NAMES = 256
_REPLY_PREFIX = "_INBOX."
_IMPORTED_REPLY_PREFIX = "_R_."
"""What nats-server makes of the reply subject of a request that crossed accounts."""


def check_subject(subject: str, what: str = "subject") -> str:
    """``subject`` if nats-server accepts it for a publish, else MessageRejectedError."""
    if len(subject) <= MAX_SUBJECT_BYTES and subject.isascii() and _SUBJECT_MATCH(subject):
        return subject  # the common case: as many bytes as characters
    if len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise MessageRejectedError(
            f"{what} is {len(subject.encode())} bytes long; the limit is {MAX_SUBJECT_BYTES} "
            f"(it starts {subject[:60]!r})"
        )
    if not _SUBJECT.fullmatch(subject):
        raise MessageRejectedError(
            f"{what} {subject[:100]!r} is not a valid NATS subject: use dot-separated tokens of "
            "printable ASCII, without spaces or the wildcards '*' and '>'"
        )
    return subject


def check_reply_subject(
    subject: str, what: str = "reply subject", *, imported: bool = False
) -> str:
    """A reply subject taken from a message: only an ``_INBOX.`` subject is ever answered.

    Answering any other subject would let a sender make us write to a subject it names (a
    run's history, say) with our permissions. ``imported``: the request may have come through
    a service import from another account (``df auth init`` lends the visibility subject so),
    whose reply subject nats-server rewrites to ``_R_.``; no stream holds those either.
    """
    check_subject(subject, what)
    if not subject.startswith(_REPLY_PREFIX) and not (
        imported and subject.startswith(_IMPORTED_REPLY_PREFIX)
    ):
        raise MessageRejectedError(f"{what} {subject[:100]!r} is not an _INBOX. subject")
    return subject


def check_service_reply(subject: str, what: str = "reply subject") -> str:
    """The reply subject of a core-NATS request to one of our services: an ``_INBOX.`` subject,
    or the ``_R_.`` subject nats-server gives a request that crossed an account export (a
    client cannot name one itself: nats-server refuses a publish with such a reply).

    Anything else is refused, for the reason of :func:`check_reply_subject`.
    """
    return check_reply_subject(subject, what, imported=True)


def max_payload(nc: NATS) -> int:
    """The largest message (headers and data) the connected server accepts."""
    return int(getattr(nc, "max_payload", 0) or 1024 * 1024)


def check_message(
    nc: NATS,
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    reply: str = "",
) -> None:
    """Raise MessageRejectedError for anything nats-server would answer with -ERR."""
    check_subject(subject)
    if reply:
        check_subject(reply, "reply subject")
    header_bytes = 0
    if headers:
        header_bytes = 12  # "NATS/1.0\r\n" ... "\r\n"
        for name, value in headers.items():
            if name not in _GOOD_HEADER_NAMES:
                if not _HEADER_NAME.fullmatch(name):
                    raise MessageRejectedError(f"header name {name[:60]!r} is not printable ASCII")
                if len(_GOOD_HEADER_NAMES) < _MAX_GOOD_HEADER_NAMES:
                    _GOOD_HEADER_NAMES.add(name)
            if "\r" in value or "\n" in value:
                raise MessageRejectedError(
                    f"header {name} holds a line break; header values must be one line"
                )
            header_bytes += len(name) + (len(value) if value.isascii() else len(value.encode())) + 4
        if header_bytes > MAX_HEADER_BYTES:
            raise MessageRejectedError(
                f"headers on {subject[:100]} are {header_bytes} bytes; the limit is "
                f"{MAX_HEADER_BYTES}"
            )
    limit = max_payload(nc)
    size = header_bytes + len(data)
    if size > limit:
        raise MessageRejectedError(
            f"a message to {subject[:100]} is {size:,} bytes; the server accepts at most "
            f"{limit:,} (max_payload). Pass large values by reference (store them elsewhere "
            "and send their key), or raise max_payload in the nats-server config",
            size=size,
            limit=limit,
        )
