"""Wire records of storage: removal requests (hostile input) and archive files."""

from __future__ import annotations

import pytest

from durablefuture.codec.archive import decode_archive, encode_archive
from durablefuture.codec.claims import claim_names
from durablefuture.codec.records import (
    EXPIRY_LIST_BYTES,
    MAX_EXPIRY_LIST,
    Removal,
    decode_expiry_list,
    decode_removal,
    encode_expiry_list,
    encode_removal,
    expiry_list_size,
)
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


def test_expiry_list_round_trip_and_hostile_bodies() -> None:
    runs = [Removal("order 1/ü", "a" * 32), Removal('q"\\', "b1")]
    assert decode_expiry_list(encode_expiry_list(runs)) == runs
    # what a df-server counts per run is what the run adds, even for the worst ids (each
    # character escaped), so the lists it writes stay within EXPIRY_LIST_BYTES
    for r in (*runs, Removal('"' * 512, "r" * 64), Removal("\\ü" * 100, "x")):
        assert len(encode_expiry_list([r, r])) - len(encode_expiry_list([r])) <= (
            expiry_list_size(r)
        )
        assert len(encode_expiry_list([r])) <= len(encode_expiry_list([])) + expiry_list_size(r)
    for bad in (
        b"",
        b"[]",
        b"{}",
        b'{"runs": []}',
        b'{"runs": {"w": "r"}}',
        b'{"runs": [["w", "r", "x"]]}',
        b'{"runs": [["w", 1]]}',
        b'{"runs": [["w", "not a token!"]]}',
        b'{"runs": [["", "r"]]}',
        b'{"runs": [["w", "' + b"r" * 65 + b'"]]}',
        b'{"runs": [' + b",".join([b'["w","r"]'] * (MAX_EXPIRY_LIST + 1)) + b"]}",
        b'{"runs": [["' + b"w" * 500 + b'", "r"]], "pad": "' + b"x" * EXPIRY_LIST_BYTES + b'"}',
    ):
        with pytest.raises(DecodeError, match="expiry list"):
            decode_expiry_list(bad)


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
