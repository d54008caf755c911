"""Messages shaped to cost the daemons CPU or a crash are refused fast, as DecodeErrors."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
from nats.aio.msg import Msg

from durablefuture.codec.wire import MAX_COMMANDS, default_codec
from durablefuture.core.errors import DecodeError, MessageRejectedError
from durablefuture.transport.consumer import delivery_count, stream_sequence
from durablefuture.transport.guard import check_message, check_reply_subject, check_subject

CODEC = default_codec()
RUN = "a" * 32


def encode(body: dict[str, object]) -> bytes:
    return json.dumps({"v": 1, "wid": "w", "in": body}).encode()  # any depth, any int size


def test_a_report_with_too_many_commands_is_refused_before_structuring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encode(
        {"t": "CompleteWorkflowTask", "run_id": RUN, "based_on": 1, "commands": [{}] * 300_000}
    )
    structured: list[object] = []
    real = CODEC.converter

    class Counting:
        def structure(self, obj: object, cl: object) -> object:
            structured.append(cl)
            return real.structure(obj, cl)  # type: ignore[call-overload]

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(CODEC, "converter", Counting())
    with pytest.raises(DecodeError, match=f"the limit is {MAX_COMMANDS}"):
        CODEC.decode_input(data)
    assert structured == []  # the bound is checked on the raw shape, before any structuring


def test_a_deep_failure_chain_is_a_decode_error_not_a_recursion_error() -> None:
    failure: dict[str, object] = {"message": "m", "type": "T"}
    for _ in range(500):
        failure = {"message": "m", "type": "T", "cause": failure}
    data = encode(
        {"t": "FailActivityTask", "run_id": RUN, "seq": 1, "attempt": 1, "failure": failure}
    )
    with pytest.raises(DecodeError, match="failure causes"):
        CODEC.decode_input(data)


@pytest.mark.parametrize(
    "body",
    [
        {"t": "FireTimer", "run_id": RUN, "key": "x" * 500},
        {"t": "FireTimer", "run_id": RUN, "key": "a b"},
        {"t": "CompleteActivityTask", "run_id": RUN, "seq": 1, "attempt": 1, "completed_at": 1e300},
    ],
)
def test_timer_keys_and_timestamps_are_bounded(body: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_input(encode(body))


def _start(**fields: object) -> bytes:
    body = {"workflow_id": "w", "workflow_type": "t", "task_queue": "q", "request_id": "r"}
    return json.dumps({"v": 1, "wid": "w", "start": {**body, **fields}}).encode()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"search_attributes": {"A": {"type": "money", "value": 1}}}, "not one of"),
        ({"search_attributes": {"A": {"type": "int", "value": "1"}}}, "not a valid int"),
        ({"search_attributes": {"A": {"type": "int", "value": 2**70}}}, "not a valid int"),
        ({"search_attributes": {"bad name": {"type": "int", "value": 1}}}, "not valid"),
        ({"search_attributes": {"RunId": {"type": "keyword", "value": "x"}}}, "built-in"),
        ({"search_attributes": {"A": {"type": "keyword", "value": "x" * 3000}}}, "valid keyword"),
        ({"search_attributes": {"A": {"type": "datetime", "value": "soon"}}}, "valid datetime"),
        (
            {"search_attributes": {"A": {"type": "keyword_list", "value": ["x"] * 101}}},
            "valid keyword_list",
        ),
        (
            {"search_attributes": {f"A{i}": {"type": "bool", "value": True} for i in range(65)}},
            "more than 64",
        ),
        ({"memo": {f"k{i}": 1 for i in range(65)}}, "more than 64"),
        ({"memo": {"k": "x" * 40_000}}, "more than"),
    ],
)
def test_forged_search_attributes_and_memos_are_refused(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        CODEC.decode_input(_start(**fields))


def test_valid_search_attributes_and_memo_decode() -> None:
    attrs = {"A": {"type": "int", "value": 3}, "T": {"type": "keyword_list", "value": ["a"]}}
    env = CODEC.decode_input(_start(search_attributes=attrs, memo={"m": [1, 2]}))
    assert env.start is not None
    assert env.start.search_attributes["T"].value == ["a"]
    assert env.start.memo == {"m": [1, 2]}


@pytest.mark.parametrize(
    ("reply", "imported", "answered"),
    [
        ("_INBOX.abc.1", False, True),
        ("_INBOX.abc.1", True, True),
        ("_R_.abc.XyZ", True, True),  # a request through a service import (df auth init)
        ("_R_.abc.XyZ", False, False),
        ("df.default.h.wf.run1", True, False),  # a run's history: never written by an answer
        ("df.default.in.run", True, False),
        ("_INBOX", True, False),
        ("_R_", True, False),
        ("", True, False),
        ("_INBOX.a b", True, False),
    ],
)
def test_only_inboxes_are_answered(reply: str, imported: bool, answered: bool) -> None:
    if answered:
        assert check_reply_subject(reply, imported=imported) == reply
    else:
        with pytest.raises(MessageRejectedError):
            check_reply_subject(reply, imported=imported)


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"workflow_type": "t" * 256}, None),
        ({"workflow_type": "t" * 257}, "257 bytes long"),
        ({"workflow_type": "é" * 128}, None),  # 256 bytes of UTF-8
        ({"workflow_type": "é" * 129}, "258 bytes long"),  # 129 characters, 258 bytes
        ({"workflow_type": "a\tb"}, "control character"),
        ({"workflow_type": "a\x7f"}, "control character"),
        ({"workflow_type": "a\u2028b"}, None),  # printable enough: no C0 control or DEL
        ({"workflow_type": "a b"}, None),
        ({"workflow_type": ""}, "non-empty string"),
        ({"request_id": ""}, "non-empty string"),
        ({"task_queue": "q" * 129}, "not valid"),
        ({"task_queue": "q.q"}, "not valid"),
        ({"continued_from": ""}, None),
        ({"continued_from": "a.b"}, "continued_from 'a.b' is not valid"),
    ],
)
def test_ids_and_names_are_checked_by_bytes_and_characters(
    fields: dict[str, object], refused: str | None
) -> None:
    if refused is None:
        assert CODEC.decode_input(_start(**fields)).start is not None
    else:
        with pytest.raises(DecodeError, match=refused):
            CODEC.decode_input(_start(**fields))


@pytest.mark.parametrize(
    ("subject", "refused"),
    [
        ("df.ns.h.w.r", None),
        ("é" * 600, "1200 bytes long"),  # 600 characters, over the limit in bytes
        ("x" * 1025, "1025 bytes long"),
        ("df.a b", "not a valid NATS subject"),
        ("df.*", "not a valid NATS subject"),
        ("df..x", "not a valid NATS subject"),
        ("df.é", "not a valid NATS subject"),
    ],
)
def test_subjects_are_checked_by_bytes_and_tokens(subject: str, refused: str | None) -> None:
    if refused is None:
        assert check_subject(subject) == subject
    else:
        with pytest.raises(MessageRejectedError, match=refused):
            check_subject(subject)


def test_headers_are_checked_on_every_message_whatever_was_sent_before() -> None:
    class Conn:
        max_payload = 100

    good = {"Nats-Msg-Id": "a", "Df-Run": "r"}
    for _ in range(2):
        check_message(Conn(), "df.x", b"", good)  # type: ignore[arg-type]
    for headers, reason in [
        ({**good, "Bad Name": "x"}, "not printable ASCII"),
        ({**good, "Df-Run": "a\nb"}, "line break"),
        ({"Df-Run": "é" * 40}, "is 102 bytes"),  # 12 + 6 + 80 + 4: the value in bytes
    ]:
        with pytest.raises(MessageRejectedError, match=reason):
            check_message(Conn(), "df.x", b"", headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.S.C.3.17.9.1700000000000000000.0",
        "$JS.ACK.dom.hash.S.C.2.41.7.1700000000000000000.5.r",
        "$JS.ACK._.hash.S.C.4.8.7.1700000000000000000.5",  # 11 tokens: read as nats-py does
        "$JS.ACK.S.C.x.17.9.1700000000000000000.0",
        "$JS.ACK.S.C.3.17.9.99999999999999999999999999999.0",  # a time past year 9999
        "$JS.ACK.S.C.3.17.9.0",
        "$JS.NAK.S.C.3.17.9.1700000000000000000.0",
        "_INBOX.x",
        "",
        None,
    ],
)
def test_delivery_numbers_are_read_as_nats_py_reads_them(reply: str | None) -> None:
    msg = Msg(_client=None, subject="s", reply=reply or "")  # type: ignore[arg-type]
    msg.reply = reply  # type: ignore[assignment]
    try:
        expected = (max(1, int(msg.metadata.num_delivered or 1)), msg.metadata.sequence.stream)
    except Exception:
        expected = (1, 0)
    assert (delivery_count(msg), stream_sequence(msg)) == expected


def _schedule_activity(options: dict[str, object]) -> bytes:
    command = {"t": "ScheduleActivity", "seq": 1, "name": "a", "args": [], "options": options}
    body = {"t": "CompleteWorkflowTask", "run_id": RUN, "based_on": 1, "commands": [command]}
    return encode(body)


def _kept_after_decoding(messages: list[bytes]) -> int:
    """Bytes still allocated once ``messages`` are decoded and the results dropped."""
    CODEC.decode_input(_schedule_activity({"task_queue": "warm-up"}))  # hooks compiled first
    gc.collect()
    tracemalloc.start()
    try:
        for data in messages:
            env = CODEC.decode_input(data)
            assert env.input is not None
        del env
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return kept


def test_forged_activity_options_are_not_kept_after_decoding() -> None:
    # Unknown keys are ignored when options are structured; a sender must not be able to
    # make the decoder keep them (tens of kilobytes per message, a thousand messages).
    messages = [
        _schedule_activity({"task_queue": "q", "padding": f"{i:04d}" + "x" * 60_000})
        for i in range(20)
    ]
    assert _kept_after_decoding(messages) < 1_000_000


def test_many_distinct_activity_options_keep_little_memory() -> None:
    messages = [
        _schedule_activity({"task_queue": f"{i:05d}" + "q" * 120, "heartbeat_timeout": 1 + i})
        for i in range(2_000)
    ]
    assert _kept_after_decoding(messages) < 2_000_000
