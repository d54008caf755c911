"""The client's header parse and publish give what nats-py's own give, for any headers."""

from __future__ import annotations

import asyncio

import nats.errors
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from durablefuture.transport.nats_client import TolerantClient

_PIECES = st.sampled_from(
    [b"Nats-Msg-Id", b"Df-Run", b":", b": ", b" ", b"\t", b"\x1c", b"\r\n", b"\xc3\xa9", b"\xff"]
)
_BLOCKS = st.lists(_PIECES | st.binary(max_size=8), max_size=20).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(_BLOCKS)
def test_the_header_parse_matches_nats_py(raw: bytes) -> None:
    assert TolerantClient._parse_header_lines(raw) == NATS._parse_header_lines(raw)


def test_names_with_white_space_are_left_out() -> None:
    raw = b"Good: 1\r\nBad Name: 2\r\nAlso\x1cBad: 3\r\n Padded : 4\r\nNo colon\r\n"
    assert TolerantClient._parse_header_lines(raw) == {"Good": "1", "Padded": "4"}


async def _sent(client: NATS, headers: dict[str, str] | None) -> object:
    commands: list[bytes] = []

    async def capture(command: bytes, priority: bool = False) -> None:
        commands.append(command)

    client._send_command = capture  # type: ignore[method-assign,assignment]
    try:
        await client._send_publish("df.x", "_INBOX.r", b"body", 4, headers)
    except nats.errors.Error as exc:
        return type(exc), client.stats["out_msgs"]
    return b"".join(commands), client.stats["out_msgs"], client.stats["out_bytes"]


_NAMES = st.sampled_from(["Nats-Msg-Id", " Df-Run ", "", "bad name", "é", "X:Y", "a\\nb"])
_VALUES = st.sampled_from(["1", " padded ", "a\\r\\nb", "é", ""]) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.none() | st.dictionaries(_NAMES | st.text(max_size=4), _VALUES, max_size=4))
def test_a_publish_sends_the_bytes_nats_py_sends(headers: dict[str, str] | None) -> None:
    async def both() -> tuple[object, object]:
        return await _sent(TolerantClient(), headers), await _sent(NATS(), headers)

    ours, theirs = asyncio.run(both())
    assert ours == theirs
