"""Wire records of storage: removal requests (hostile input) and archive files."""

from __future__ import annotations

import pytest

from durablefuture.codec.archive import decode_archive, encode_archive
from durablefuture.codec.claims import claim_names
from durablefuture.codec.records import Removal, decode_removal, encode_removal
from durablefuture.core.errors import DecodeError


def test_removal_round_trip_and_hostile_bodies() -> None:
    r = Removal("order 1/ü", "a" * 32)
    assert decode_removal(encode_removal(r)) == r
    for bad in (
        b"",
        b"[]",
        b'{"wid": 1, "run": "x"}',
        b'{"wid": "w", "run": "not a token!"}',
        b'{"wid": "", "run": "r"}',
        b'{"wid": "w", "run": "' + b"r" * 65 + b'"}',
    ):
        with pytest.raises(DecodeError):
            decode_removal(bad)


def test_archive_round_trip_keeps_the_stored_bytes() -> None:
    batches = [b'{"v":1,"input":"a","events":[]}', b'{"v":1,"input":"b","events":[]}']
    data = encode_archive("ns", "wf", "run1", batches)
    back = decode_archive(data, "file")
    assert (back.workflow_id, back.run_id, back.batches) == ("wf", "run1", batches)
    with pytest.raises(DecodeError, match="file"):
        decode_archive(b"not json\n", "file")
    with pytest.raises(DecodeError):
        decode_archive(b'{"df_archive": 2}\n', "file")
    with pytest.raises(DecodeError, match="newline"):
        encode_archive("ns", "wf", "run1", [b"a\nb"])


def test_claim_names_are_read_from_the_stored_bytes() -> None:
    name = "ab" * 32
    data = b'{"args":[{"$dfp":1,"meta":{"claim":"' + name.encode() + b'","size":"9"}}]}'
    assert claim_names(data) == {name}
    assert claim_names(b'{"claim": "short"}') == set()
    assert claim_names(b"{}") == set()
