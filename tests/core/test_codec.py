"""The wire codec and user payloads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Generator
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest
from cattrs.errors import IterableValidationError

import durablefuture as df
from durablefuture.codec import MAX_PAYLOAD_BYTES, SCHEMA_VERSION, Codec, default_codec
from durablefuture.codec.converter import make_converter
from durablefuture.codec.wire import InputEnvelope, Reply, WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import CompleteWorkflow, ScheduleActivity, StartTimer
from durablefuture.core.effects import ActivityTask, RunSummary, WorkflowTask
from durablefuture.core.errors import DecodeError, PayloadError
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, RetryPolicy
from durablefuture.core.types import JsonValue
from tests.core.helpers import Driver, History

CODEC = default_codec()
P = CODEC.payloads
OPTS = ActivityOptions(start_to_close_timeout=5, retry_policy=RetryPolicy(jitter=0.1)).resolved("q")


def sample_history() -> list[ev.Event]:
    h = History("wf", 1, {"a": [1, None]}, execution_timeout=30.0, execution_deadline=1e9)
    h.activity(1, "charge", "o-1", 2.5, opts=OPTS)
    h.failed(1, Failure("x", type="E", details=({"k": 1},), cause=Failure("y")), attempt=2)
    h.timer(2, 1.5)
    h.complete([1, "two", {"three": 3.0}])
    return h.events


# ------------------------------------------------------------------ engine messages


def test_history_batch_round_trip_is_exact_and_versioned() -> None:
    events = sample_history()
    data = CODEC.encode_batch("act:1:1", events)
    raw = orjson.loads(data)
    assert raw["v"] == SCHEMA_VERSION
    assert raw["ev"][0]["t"] == "WorkflowStarted"  # tagged by class name
    assert raw["ev"][1]["args"] == ["o-1", 2.5]  # tuples travel as lists
    assert CODEC.decode_batch(data) == ("act:1:1", events)


def test_other_messages_round_trip() -> None:
    events = sample_history()
    wt = WorkflowTask("ns", "wf-1", "run-1", "wf", "q", trigger=5, attempt=2)
    msg = WorkflowTaskMessage(wt, events, history_seq=77)
    assert CODEC.decode_workflow_task(CODEC.encode_workflow_task(msg)) == msg
    at = ActivityTask(
        "ns", "wf-1", "run-1", "wf", 1, 2, "charge", "q", OPTS, 1.0, 2.0, (1, "a"), ("hb",)
    )
    assert CODEC.decode_activity_task(CODEC.encode_activity_task(at)) == at
    for env in (
        InputEnvelope("wf-1", inp.CompleteWorkflowTask("run-1", 3, (StartTimer(1, 2.0),))),
        InputEnvelope("wf-1", start=inp.StartWorkflowRequest("wf-1", "wf", "q", "r", (1,))),
        InputEnvelope("wf-1", inp.FailActivityTask("run-1", 1, 1, Failure("m"), ("d",))),
    ):
        assert CODEC.decode_input(CODEC.encode_input(env)) == env
    reply = Reply(False, "run-1", "WorkflowAlreadyStartedError", "already")
    assert CODEC.decode_reply(CODEC.encode_reply(reply)) == reply
    summary = RunSummary("wf-1", "run-1", "wf", "q", "failed", 1.0, failure=Failure("m"))
    assert CODEC.decode_summary(CODEC.encode_summary(summary)) == summary


def test_commands_round_trip_through_the_tagged_union() -> None:
    task = inp.CompleteWorkflowTask(
        "r", 1, (ScheduleActivity(1, "a", ({"x": [1]},), OPTS), CompleteWorkflow({"ok": True}))
    )
    env = InputEnvelope("wf", task)
    body = orjson.loads(CODEC.encode_input(env))
    assert [c["t"] for c in body["in"]["commands"]] == ["ScheduleActivity", "CompleteWorkflow"]
    assert CODEC.decode_input(CODEC.encode_input(env)) == env


def test_a_fresh_codec_reads_what_the_default_one_wrote() -> None:
    data = CODEC.encode_batch("x", sample_history())
    assert Codec().decode_batch(data) == CODEC.decode_batch(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\xff garbage", "history message is not JSON"),
        (b"[1, 2]", "history message is not a JSON object"),
        (b'{"ev": []}', "schema version None; this DurableFuture reads version 1"),
        (b'{"v": 2, "ev": []}', "schema version 2"),
        (b'{"v": 1, "ev": []}', "history message has no events"),
        (b'{"v": 1, "ev": {}}', "history message has no events"),
        (
            b'{"v": 1, "in": 5, "ev": [{"t": "TimerFired", "event_id": 1, "at": 0, "seq": 1}]}',
            "non-string input id",
        ),
        (b'{"v": 1, "ev": [{"t": "Exploded", "event_id": 1}]}', "event does not match the schema"),
        (b'{"v": 1, "ev": [{"event_id": 1}]}', "event does not match the schema"),
        (b'{"v": 1, "ev": [{"t": "TimerFired", "event_id": 1}]}', "event does not match"),
        (
            b'{"v": 1, "ev": [{"t": "TimerFired", "event_id": "x", "at": 0, "seq": 1}]}',
            "event does not match",
        ),
        (b'{"v": 1, "ev": [5]}', "event does not match"),
    ],
)
def test_garbage_history_raises_decode_error_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        CODEC.decode_batch(data)


def test_unknown_event_tag_names_the_tag() -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode_event({"t": "Exploded", "event_id": 1, "at": 0})
    assert "Exploded" in str(info.value)


@pytest.mark.parametrize(
    ("method", "data", "message"),
    [
        ("decode_workflow_task", b'{"v": 1}', "workflow task does not match the schema"),
        ("decode_workflow_task", b'{"v": 1, "task": 5}', "workflow task does not match"),
        ("decode_activity_task", b'{"v": 1, "task": {"seq": 1}}', "activity task does not match"),
        ("decode_activity_task", b"nope", "activity task is not JSON"),
        ("decode_input", b'{"v": 1}', "server input has no workflow id"),
        ("decode_input", b'{"v": 1, "wid": "w"}', "neither a start request nor a run input"),
        ("decode_input", b'{"v": 1, "wid": "w", "in": {"t": "Nope"}}', "server input does not"),
        ("decode_input", b'{"v": 1, "wid": "w", "start": {}}', "start request does not"),
        ("decode_reply", b'{"v": 9, "ok": true}', "reply has schema version 9"),
        ("decode_summary", b'{"v": 1}', "status entry does not match"),
    ],
)
def test_other_garbage_raises_decode_error(method: str, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        getattr(CODEC, method)(data)


def test_workflow_task_with_bad_event_fields() -> None:
    wt = CODEC.converter.unstructure(WorkflowTask("ns", "w", "r", "wf", "q", 1))
    bad = {"v": 1, "task": wt, "ev": 5, "hseq": 1}
    with pytest.raises(DecodeError, match="not a list"):
        CODEC.decode_workflow_task(orjson.dumps(bad))
    bad = {"v": 1, "task": wt, "ev": [], "hseq": "x"}
    with pytest.raises(DecodeError, match="hseq is not an integer"):
        CODEC.decode_workflow_task(orjson.dumps(bad))


# ------------------------------------------------------------------ payloads


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Item:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    color: Color
    items: list[Item]
    dims: tuple[int, int]
    note: str | None = None
    price: Decimal = Decimal("0")
    day: dt.date | None = None


ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    placed=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    color=Color.BLUE,
    items=[Item("a"), Item("b", 3)],
    dims=(2, 3),
    price=Decimal("9.99"),
    day=dt.date(2024, 5, 2),
)


def test_payloads_are_plain_json_and_structure_back_to_the_hint() -> None:
    payload = P.to_payload(ORDER)
    assert isinstance(payload, dict)
    assert payload["id"] == "12345678-1234-5678-1234-567812345678"
    assert payload["placed"] == "2024-05-01T12:30:00+00:00"
    assert payload["color"] == "blue"
    assert payload["items"] == [{"sku": "a"}, {"sku": "b", "qty": 3}]  # defaults omitted
    assert payload["dims"] == [2, 3]
    assert payload["price"] == "9.99"
    assert payload["day"] == "2024-05-02"
    assert orjson.loads(orjson.dumps(payload)) == payload
    assert P.from_payload(payload, Order) == ORDER


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (Item("x", 2), Item),
        (dt.datetime(2020, 1, 1, 1, 1, 1, 5), dt.datetime),
        (uuid.uuid4(), uuid.UUID),
        (Color.RED, Color),
        ((1, "a", 2.5), tuple[int, str, float]),
        ((1, 2, 3), tuple[int, ...]),
        (None, Item | None),
        (Item("o"), Item | None),
        ([Item("a")], list[Item]),
        ({"k": Item("v")}, dict[str, Item]),
        (b"\x00\x01bytes", bytes),
        (dt.timedelta(seconds=90), dt.timedelta),
        (dt.time(1, 2, 3), dt.time),
    ],
)
def test_each_supported_type_round_trips(value: Any, hint: Any) -> None:
    assert P.from_payload(P.to_payload(value), hint) == value


def test_without_a_hint_payloads_stay_json() -> None:
    assert P.from_payload([1, 2]) == [1, 2]
    assert P.from_payload({"a": 1}, Any) == {"a": 1}
    assert P.to_payload((1, 2)) == [1, 2]


def test_structuring_failure_names_the_type() -> None:
    with pytest.raises(PayloadError, match="into Item"):
        P.from_payload({"nope": 1}, Item)
    with pytest.raises(PayloadError, match="cannot turn payload 'x'"):
        P.from_payload("x", uuid.UUID)


@attrs.frozen
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Basket:
    id: str
    amount: float
    items: list[Line]
    tags: dict[str, int] = dataclasses.field(default_factory=dict)


def test_a_payload_that_does_not_fit_names_every_bad_field_its_type_and_value() -> None:
    payload: Any = {
        "id": "b-1",
        "amount": "abc",
        "items": [{"sku": "a", "qty": 1}, "oops", {"qty": "x"}],
        "tags": {"a": 1},
    }
    with pytest.raises(PayloadError) as err:
        P.from_payload(payload, Basket, "argument 'basket' of activity 'pay'")
    assert str(err.value) == (
        "cannot turn argument 'basket' of activity 'pay' into Basket: "
        "field 'amount' expected float, got str 'abc'; "
        "field 'items[1]' expected an object, got str 'oops'; "
        "field 'items[2].sku' missing; "
        "field 'items[2].qty' expected int, got str 'x'"
    )
    assert "sub-exception" not in str(err.value)


@pytest.mark.parametrize(
    ("payload", "hint", "problem"),
    [
        ("abc", float, "into float: got str 'abc'"),
        (None, Basket, "into Basket: got null"),
        ([1, "a"], list[int], "into list[int]: item [1] expected int, got str 'a'"),
        ({"k": "v"}, dict[str, int], "into dict[str, int]: item ['k'] expected int, got str 'v'"),
        ("2024-13-45", dt.datetime, "into datetime: got str '2024-13-45'"),
    ],
)
def test_structuring_problems_at_the_top_and_inside_collections(
    payload: Any, hint: Any, problem: str
) -> None:
    with pytest.raises(PayloadError) as err:
        P.from_payload(payload, hint, "the result of activity 'a'")
    assert str(err.value) == f"cannot turn the result of activity 'a' {problem}"


def test_unencodable_values_raise_payload_error() -> None:
    with pytest.raises(PayloadError, match="value of type object cannot be encoded as JSON"):
        P.to_payload(object())
    with pytest.raises(PayloadError, match="cannot be encoded"):
        P.to_payload({1: "non-str key"})


def test_oversized_payloads_are_refused_with_the_size_and_the_limit() -> None:
    big = "x" * (MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(PayloadError, match=f"the limit is {MAX_PAYLOAD_BYTES} bytes"):
        P.to_payload([big])
    P.to_payload(["x" * (MAX_PAYLOAD_BYTES - 10)])  # just under: fine


def ship(order: Order, express: bool) -> str:
    return "tracking"


def test_df_activity_encodes_arguments_at_the_call_site() -> None:
    call = df.activity(ship, ORDER, True)
    assert call.args == (P.to_payload(ORDER), True)
    assert call.result_type is str


def test_df_activity_names_the_unencodable_argument_index_and_type() -> None:
    class Socket:
        pass

    with pytest.raises(PayloadError) as info:
        df.activity("send", "ok", Socket())
    text = str(info.value)
    assert "argument 1 (Socket) of activity 'send'" in text
    assert "cannot be encoded as JSON" in text


def test_df_activity_refuses_oversized_arguments() -> None:
    with pytest.raises(PayloadError, match=r"argument 0 .str. of activity 'store' is .* bytes"):
        df.activity("store", "x" * (MAX_PAYLOAD_BYTES + 100))
    with pytest.raises(PayloadError, match=r"argument 1 .str. of activity 'store' is .* bytes"):
        df.activity("store", 1, "\x00" * (MAX_PAYLOAD_BYTES // 6 + 1))  # escapes grow it
    assert df.activity("store", "x" * 1000).args == ("x" * 1000,)


def test_integers_json_cannot_carry_fail_at_the_call_site() -> None:
    assert df.activity("count", 2**64 - 1, -(2**63)).args == (2**64 - 1, -(2**63))
    with pytest.raises(PayloadError, match=r"argument 0 .int. of activity 'count'"):
        df.activity("count", 2**64)
    with pytest.raises(PayloadError, match=r"argument 1 .int."):
        df.activity("count", 1, -(2**63) - 1)


def test_other_commands_encode_at_the_call_site_too() -> None:
    with pytest.raises(PayloadError, match=r"argument 0 .object. of child workflow 'c'"):
        df.child_workflow("c", object())
    with pytest.raises(PayloadError, match=r"argument 1 .set. of continue_as_new"):
        df.continue_as_new(1, {object()})


def test_the_call_site_error_surfaces_inside_the_workflow_as_a_catchable_error() -> None:
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield df.activity("send", object())
        except PayloadError as err:
            return str(err)[:40]

    d = Driver(wf)
    (cmd,) = d.step().commands
    assert cmd == CompleteWorkflow("argument 0 (object) of activity 'send' o")


def place(order: Order, when: dt.datetime) -> Generator[Any, Any, Any]:
    yield df.sleep(1)
    return [type(order).__name__, order.items[1].qty, when.year]


def test_workflow_arguments_are_structured_to_the_workflow_hints() -> None:
    d = Driver(place, P.to_payload(ORDER), P.to_payload(dt.datetime(2030, 1, 1)))
    d.step()
    d.h.fired(1)
    assert d.step().commands == (CompleteWorkflow(["Order", 3, 2030]),)


def test_homogeneous_tuples_structure_and_fail_as_cattrs_words_it() -> None:
    c = make_converter()
    assert c.structure([1, 2], tuple[int, ...]) == (1, 2)
    assert c.structure([[1], {"a": None}], tuple[JsonValue, ...]) == ([1], {"a": None})
    with pytest.raises(IterableValidationError) as caught:
        c.structure([1, "x", 3, "y"], tuple[int, ...])
    notes = [str(n) for e in caught.value.exceptions for n in getattr(e, "__notes__", [])]
    assert notes == [
        "Structuring tuple[int, ...] @ index 1",
        "Structuring tuple[int, ...] @ index 3",
    ]


def test_equal_activity_options_are_structured_once_and_bad_ones_fail_every_time() -> None:
    c = make_converter()
    body = {"task_queue": "q", "start_to_close_timeout": 60.0, "retry_policy": {}}
    first = c.structure(body, ActivityOptions)
    assert c.structure(dict(reversed(body.items())), ActivityOptions) is first
    other = c.structure({**body, "start_to_close_timeout": 61.0}, ActivityOptions)
    assert other.start_to_close_timeout == 61.0 and first.start_to_close_timeout == 60.0
    bad = {**body, "retry_policy": {"initial_interval": -1}}
    for _ in range(2):
        with pytest.raises(DecodeError, match="initial_interval"):
            CODEC._structure(bad, ActivityOptions, "options")


def test_activity_options_with_a_null_or_not_a_number_are_not_mixed_up() -> None:
    c = make_converter()
    nothing = c.structure({"task_queue": "q", "start_to_close_timeout": None}, ActivityOptions)
    assert nothing.start_to_close_timeout is None
    with pytest.raises(Exception):  # noqa: B017 - cattrs wraps the refusal
        c.structure({"task_queue": "q", "start_to_close_timeout": float("nan")}, ActivityOptions)
