"""The nats-py client a connection is made with, and the checks of its health that nats-py does
not offer.

Writes are coalesced: nats-py's flusher hands the socket a list of commands (one per publish,
ack, pull) with ``writelines``. Without TLS that is one system call either way (asyncio joins
the list, uvloop writes it with one ``writev``); over TLS (the ``sslproto`` of asyncio and of
uvloop) each list item became a TLS record of its own, so a flush of 50 small publishes cost 50
record encryptions and headers here, 50 record decryptions in nats-server and ~22 bytes more
each on the wire. :class:`CoalescingTransport` joins the list first: one
``SSL_write`` per flush, which OpenSSL cuts into full-size records (16 KiB).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.transport import TcpTransport, Transport
from nats.protocol.command import hpub_cmd

__all__ = [
    "UNREADABLE_HEADERS",
    "CoalescingTransport",
    "TolerantClient",
    "close_quietly",
    "read_loop_stopped",
]


async def close_quietly(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


class CoalescingTransport(TcpTransport):
    """nats-py's TCP (and TLS) transport, writing a list of commands as one buffer."""

    def writelines(self, payload: Any) -> None:
        writer = self._io_writer
        assert writer is not None, "connect first"
        writer.write(b"".join(payload))


class TolerantClient(NATS):
    """nats-py's client, except that bytes which are not UTF-8 in a message's subject, reply or
    headers never reach its read loop as an exception.

    nats-py decodes those outside any ``try``; its read loop then stops for good while the
    connection still counts as connected (anyone who can publish to one of our subscriptions
    could do that with one message). Here such text is decoded with replacement characters,
    and unreadable headers are replaced by one ``Df-Unreadable-Headers`` header, so the
    message reaches our handlers, which refuse it as junk.
    """

    @property
    def _transport(self) -> Transport | None:
        return self.__transport

    @_transport.setter
    def _transport(self, transport: Transport | None) -> None:
        # nats-py makes a bare TcpTransport just before its first connect (and keeps it
        # across reconnects): the coalescing one takes its place
        if type(transport) is TcpTransport and not transport:
            transport = CoalescingTransport()  # type: ignore[no-untyped-call]
        self.__transport = transport

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        """nats-py's publish with headers, the header block built as one string (nats-py
        extends a bytearray five times per header and matches each name with a regular
        expression every time; here a name is matched once per process). The bytes sent are
        the same."""
        if headers is None or not subject:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        lines = ["NATS/1.0\r\n"]
        for k, v in headers.items():
            key = k.strip()
            if not key:
                continue
            if key not in _GOOD_HEADER_KEYS:
                if not _HEADER_KEY.fullmatch(key):
                    raise nats.errors.BadHeaderError(key)
                if len(_GOOD_HEADER_KEYS) < 256:
                    _GOOD_HEADER_KEYS.add(key)
            lines.append(f"{key}: {v.strip().translate(_HEADER_VALUE_NEWLINES)}\r\n")
        lines.append("\r\n")
        command = hpub_cmd(subject, reply, "".join(lines).encode(), payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """nats-py's parse of a header block (``Name: Value`` lines), with the same results:
        a line without ``:`` or whose name is not ASCII or holds white space is left out, a
        value is decoded with replacement characters. nats-py looks for white space in each
        name one character at a time, through a generator; here one regular expression
        search does (``\\s`` matches exactly what ``str.isspace`` calls white space)."""
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _WHITE_SPACE(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        try:
            return await super()._process_headers(headers)
        except (UnicodeDecodeError, ValueError, IndexError):
            return {UNREADABLE_HEADERS: "true"}

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> Any:
        return self.msg_class(
            subject=subject.decode("utf-8", "replace"),
            reply=reply.decode("utf-8", "replace"),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )


UNREADABLE_HEADERS = "Df-Unreadable-Headers"
_WHITE_SPACE = re.compile(r"\s").search
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""The header names nats-py sends (its ``_HEADER_KEY_RE``)."""
_HEADER_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_GOOD_HEADER_KEYS: set[str] = set()


def read_loop_stopped(nc: NATS) -> bool:
    """True when nats-py's read loop has ended while the connection is not closed or
    reconnecting: the process would stay up receiving nothing."""
    task = getattr(nc, "_reading_task", None)
    return (
        task is not None
        and task.done()
        and not nc.is_closed
        and not nc.is_reconnecting
        and not nc.is_draining
    )
