"""Eager activity dispatch, the pure parts: the task a worker builds for a granted attempt is
the one df-server would have dispatched; check lists, ``Df-Eager`` offers and ``eager``
answers are bounded and checked (every byte from the wire is hostile until validated)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from durablefuture.codec.checks import (
    CHECK_LIST_BYTES,
    MAX_CHECK_LIST,
    CheckedAttempt,
    check_list_size,
    decode_check_list,
    encode_check_list,
)
from durablefuture.core.effects import activity_task, first_attempt_tasks
from durablefuture.core.errors import DecodeError
from durablefuture.core.options import ActivityOptions
from durablefuture.core.state import RunState
from durablefuture.server.receipts import MAX_EAGER, eager_offer
from durablefuture.transport.report_requests import (
    MAX_GRANTED,
    RECORDED,
    STORE,
    parse_answer,
    recorded_with,
)
from durablefuture.worker.eager import EagerActivities
from tests.core.helpers import History


def test_a_granted_attempts_task_is_the_one_df_server_would_dispatch() -> None:
    h = History("order", "o-1", headers={"traceparent": "00-abc-def-01"})
    other_queue = ActivityOptions(start_to_close_timeout=5.0, task_queue="elsewhere")
    h.activity(1, "charge", "o-1", 42.5)
    h.activity(2, "ship", "o-1", opts=other_queue)
    h.tick().activity(3, "notify")
    state = RunState.from_history([("i", h.events)])
    built = first_attempt_tasks(state.started, h.events, {1, 2, 3})
    assert built == [activity_task(state, state.activities[s]) for s in (1, 2, 3)]
    assert built[1].task_queue == "elsewhere" and built[0].task_queue == "q"
    assert [t.seq for t in first_attempt_tasks(state.started, h.events, {3, 9})] == [3]
    assert first_attempt_tasks(state.started, h.events, set()) == []


names = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cc",)),
    min_size=1,
    max_size=40,
)
runs = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
attempts = st.builds(
    CheckedAttempt,
    names,
    runs,
    st.integers(0, 2**31 - 1),
    st.integers(1, 2**31 - 1),
)


@given(st.lists(attempts, min_size=1, max_size=MAX_CHECK_LIST))
def test_check_lists_round_trip_within_their_bounds(items: list[CheckedAttempt]) -> None:
    body = encode_check_list(items)
    assert decode_check_list(body) == items
    # the size each item is counted for bounds what the list takes
    assert len(body) <= len(encode_check_list([])) + sum(check_list_size(i) for i in items)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"not json",
        orjson.dumps({"attempts": []}),
        orjson.dumps({"attempts": "w r 1 1"}),
        orjson.dumps({"attempts": [["w", "r", 1]]}),
        orjson.dumps({"attempts": [["w", "r", 1, 1, 1]]}),
        orjson.dumps({"attempts": [["w", "bad run!", 1, 1]]}),
        orjson.dumps({"attempts": [["", "r", 1, 1]]}),
        orjson.dumps({"attempts": [[1, "r", 1, 1]]}),
        orjson.dumps({"attempts": [["w", "r", -1, 1]]}),
        orjson.dumps({"attempts": [["w", "r", 1, 0]]}),
        orjson.dumps({"attempts": [["w", "r", 1.5, 1]]}),
        orjson.dumps({"attempts": [["w", "r", True, 1]]}),
        orjson.dumps({"attempts": [["w", "r", 2**31, 1]]}),
        orjson.dumps({"attempts": [["w", "r", 1, 1]] * (MAX_CHECK_LIST + 1)}),
        b'{"attempts": [["' + b"w" * CHECK_LIST_BYTES + b'", "r", 1, 1]]}',
    ],
)
def test_junk_check_lists_are_refused(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_check_list(body)


@pytest.mark.parametrize(
    ("header", "offer"),
    [
        ("1", 1),
        ("8", 8),
        ("16", MAX_EAGER),
        ("999", MAX_EAGER),
        ("0", 0),
        ("", 0),
        ("1000", 0),
        ("-1", 0),
        ("+2", 0),
        (" 2", 0),
        ("٣", 0),  # a digit, but not an ASCII one
        ("two", 0),
    ],
)
def test_an_eager_offer_is_a_few_ascii_digits_capped(header: str, offer: int) -> None:
    assert eager_offer(header) == offer


def test_eager_answers_carry_the_receipt_and_the_grants() -> None:
    batch = b'{"v":1,"events":[{"t":"x"}]} with spaces'
    answer = parse_answer(recorded_with(12, batch, [1, 3]))
    assert (answer.word, answer.seq, answer.receipt, answer.granted) == (
        RECORDED,
        12,
        batch,
        (1, 3),
    )
    plain = parse_answer(recorded_with(12, batch))
    assert (plain.word, plain.receipt, plain.granted) == (RECORDED, batch, ())
    assert recorded_with(12, batch, []) == recorded_with(12, batch)


@pytest.mark.parametrize(
    "answer",
    [
        b"eager 12 1,2",  # no batch
        b"eager 12  batch",  # no grants
        b"eager 12 1,,2 batch",
        b"eager 12 1,x batch",
        b"eager 12 -1 batch",
        b"eager x 1 batch",
        b"eager 12 " + b",".join(b"1" for _ in range(MAX_GRANTED + 1)) + b" batch",
        b"eager 12 12345678901 batch",  # an activity seq of 11 digits
        b"eager",
    ],
)
def test_eager_answers_not_well_formed_mean_store(answer: bytes) -> None:
    assert parse_answer(answer).word == STORE


class _Tasks:
    """What EagerActivities uses of ActivityTasks: the registered names, the busy count,
    and ``take`` (recorded here)."""

    def __init__(self, names: set[str]) -> None:
        self.activities = dict.fromkeys(names)
        self.busy = 0
        self.slots: Any = None
        self.taken: list[tuple[str, int]] = []

    async def take(self, task: Any, msg: Any, granted: bool = False) -> None:
        assert granted  # run with no lease until eager_claim_after
        self.taken.append((task.name, task.seq))


def test_a_worker_takes_each_granted_attempt_once_and_none_while_stopping() -> None:
    h = History("order", "o-1")
    h.activity(1, "charge", "o-1")
    h.activity(2, "ship", "o-1")  # not registered on this worker: taken (and failed there)
    h.activity(3, "notify")  # not granted
    stub = _Tasks({"charge", "notify"})

    async def grant() -> tuple[int, int]:
        jobs: set[asyncio.Task[None]] = set()
        eager = EagerActivities(stub, 4, jobs)  # type: ignore[arg-type]
        assert eager.offer() == 4
        stub.busy = 3
        assert eager.offer() == 1  # the slots delivered attempts hold are not offered
        stub.busy = 0
        eager.run(h.events[0], h.events, [1, 2])  # type: ignore[arg-type]
        eager.run(h.events[0], h.events, [1])  # type: ignore[arg-type]  # (granted twice)
        await asyncio.gather(*jobs)
        started = eager.started
        eager.stopping.set()
        eager.run(h.events[0], h.events, [3])  # type: ignore[arg-type]
        assert eager.offer() == 0
        return started, len(jobs)

    started, left = asyncio.run(grant())
    # each once; ship too (its take reports ActivityNotRegisteredError at once, as a delivered
    # task of it would, instead of leaving it to its check list); nothing run while stopping
    assert stub.taken == [("charge", 1), ("ship", 2)]
    assert started == 2 and left == 0
