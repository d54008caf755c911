"""The worker's small wire formats (queries, heartbeats, sizes, report message ids) and the
shared redelivery policy."""

from __future__ import annotations

import orjson
import pytest
from attrs import evolve

from durablefuture.codec.heartbeats import encode_heartbeat
from durablefuture.codec.queries import (
    QueryRequest,
    decode_query,
    encode_query_answer,
    encode_query_error,
)
from durablefuture.codec.sizes import command_size, event_size
from durablefuture.codec.wire import WorkflowTaskMessage, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import Command, StartTimer
from durablefuture.core.effects import WorkflowTask
from durablefuture.core.errors import QueryFailedError
from durablefuture.transport.redelivery import Redelivery
from durablefuture.transport.report_requests import (
    RECORDED,
    REFUSED,
    STORE,
    Answer,
    parse_answer,
    recorded_with,
)
from durablefuture.worker.reports import report_id
from tests.core.helpers import T0, History

CODEC = default_codec()


def test_a_query_request_round_trips_what_the_client_sends() -> None:
    body = orjson.dumps({"wid": "w", "run": "r", "name": "state", "args": [1, "a"]})
    assert decode_query(body) == QueryRequest("w", "r", "state", (1, "a"))
    no_args = orjson.dumps({"wid": "w", "run": "r", "name": "state"})
    assert decode_query(no_args).args == ()


@pytest.mark.parametrize(
    "body",
    [
        b"\x00 not json",
        b"[]",
        orjson.dumps({"wid": "w", "run": "r"}),
        orjson.dumps({"wid": 1, "run": "r", "name": "q"}),
        orjson.dumps({"wid": "w", "run": "r", "name": "q", "args": "abc"}),
        # ids and names out of bounds: the run id is a subject token of the history read
        orjson.dumps({"wid": "w", "run": "*", "name": "q"}),
        orjson.dumps({"wid": "w", "run": ">", "name": "q"}),
        orjson.dumps({"wid": "w", "run": "r.x", "name": "q"}),
        orjson.dumps({"wid": "w", "run": "R" * 65, "name": "q"}),
        orjson.dumps({"wid": "w", "run": "", "name": "q"}),
        orjson.dumps({"wid": "", "run": "r", "name": "q"}),
        orjson.dumps({"wid": "W" * 600, "run": "r", "name": "q"}),
        orjson.dumps({"wid": "w", "run": "r", "name": "n" * 300}),
        orjson.dumps({"wid": "w\n", "run": "r", "name": "q"}),
    ],
)
def test_a_malformed_query_is_refused(body: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):  # the worker answers "malformed"
        decode_query(body)


def test_query_answers() -> None:
    assert orjson.loads(encode_query_answer({"n": 1})) == {"ok": True, "result": {"n": 1}}
    error = orjson.loads(encode_query_error(QueryFailedError("no handler")))
    assert error == {"ok": False, "error": "QueryFailedError", "message": "no handler"}


def test_a_heartbeat_body_is_what_the_server_reads() -> None:
    data = orjson.loads(encode_heartbeat(2, 12.5, ["step", 3]))
    assert data == {"attempt": 2, "at": 12.5, "details": ["step", 3]}


def test_sizes_are_those_of_the_encoded_values() -> None:
    cmd = StartTimer(seq=3, duration=1.5)
    tagged = CODEC.converter.unstructure(cmd, Command)  # as in a report: with its tag
    assert tagged["t"] == "StartTimer"
    assert command_size(CODEC, cmd) == len(orjson.dumps(tagged))
    event = ev.TimerFired(event_id=4, at=1.0, seq=3)
    assert event_size(CODEC, event) == len(orjson.dumps(CODEC.encode_event(event)))


def test_redelivery_backs_off_exponentially_up_to_a_cap_and_gives_up() -> None:
    policy = Redelivery(give_up_at=18)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay(7) == 30.0 and policy.delay(10**9) == 30.0  # no overflow either
    assert policy.delay(0) == 0.5
    assert not policy.exhausted(17) and policy.exhausted(18) and policy.exhausted(19)
    with pytest.raises(ValueError):
        Redelivery(give_up_at=0)


def test_a_workflow_task_reports_message_id_names_its_run_incarnation() -> None:
    """A run continued as new can be created twice under one run id (df-server killed between
    its first task and its WorkflowStarted): the reports of the two first tasks, the same
    decisions on the same trigger and attempt, must not share a message id; a report sent
    again for one task message must."""
    task = WorkflowTask("default", "wf-1", "run-1", "wf", "q", trigger=1)
    report = inp.CompleteWorkflowTask("run-1", 1, (), "w")
    orphan = WorkflowTaskMessage(task, tuple(History(at=T0).events))
    again = WorkflowTaskMessage(task, tuple(History(at=T0 + 0.25).events))
    assert report_id(report, None) == "run-1:wtc:1"
    assert report_id(report, orphan) == f"run-1:wtc:1:1.1:{T0!r}"
    assert report_id(report, again) != report_id(report, orphan)
    assert report_id(report, again) == report_id(report, again)
    # a later task, its run's history read by the worker: the task alone names it
    later = WorkflowTaskMessage(evolve(task, trigger=5, attempt=2), (), history_seq=9)
    assert report_id(report, later) == "run-1:wtc:1:5.2"


def test_a_report_answer_carries_its_receipt_or_means_store() -> None:
    batch = CODEC.encode_batch("wtc:3", [ev.SignalReceived(4, T0, "go", ())])
    assert parse_answer(recorded_with(17, batch)) == Answer(RECORDED, batch, 17)
    assert parse_answer(recorded_with(2**64 - 1, batch)) == Answer(RECORDED, batch, 2**64 - 1)
    assert parse_answer(RECORDED) == Answer(RECORDED)
    assert parse_answer(REFUSED) == Answer(REFUSED)
    # anything not well formed is stored by the worker (a duplicate at most)
    for junk in [
        b"",
        STORE,
        b"recorded ",
        b"recorded 17",
        b"recorded 17 ",
        b"recorded x " + batch,
        b"recorded -1 " + batch,
        b"recorded 1" + b"0" * 20 + b" " + batch,
        b"recorded %d " % 2**64 + batch,  # 20 digits, past any stream sequence
        b"recorded 99999999999999999999 " + batch,
        b"recorded\xb2 " + batch,
        b"recordedx 17 " + batch,
        b"refused 17 " + batch,
    ]:
        assert parse_answer(junk) == Answer(STORE), junk


def test_a_receipts_stream_sequence_is_a_uint64_or_nothing() -> None:
    from durablefuture.transport.report_requests import stream_seq

    assert stream_seq("17") == 17
    assert stream_seq(b"17") == 17
    assert stream_seq(str(2**64 - 1)) == 2**64 - 1
    for junk in ["", "-1", "x", "1" + "0" * 20, str(2**64), "9" * 4301, "²", "1 7", b"\xb2"]:
        assert stream_seq(junk) is None, junk
