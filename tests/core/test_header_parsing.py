"""The client's header parse gives what nats-py's own parse gives, for any header block."""

from __future__ import annotations

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
