"""TimerKey: the typed form of durable timer keys, and their unchanged wire strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durablefuture.core.timers import TimerKey, TimerKind, names_a_spent_timer

WIRE = [
    ("wf.exec", TimerKey(TimerKind.EXECUTION)),
    ("wft.3", TimerKey(TimerKind.WORKFLOW_TASK_RETRY, attempt=3)),
    ("t7", TimerKey(TimerKind.TIMER, 7)),
    ("s2", TimerKey(TimerKind.SIGNAL_WAIT, 2)),
    ("a3.s2c", TimerKey(TimerKind.SCHEDULE_TO_CLOSE, 3)),
    ("a3.2.s2s", TimerKey(TimerKind.SCHEDULE_TO_START, 3, 2)),
    ("a3.2.stc", TimerKey(TimerKind.START_TO_CLOSE, 3, 2)),
    ("a3.2.hb", TimerKey(TimerKind.HEARTBEAT, 3, 2)),
]


@pytest.mark.parametrize(("wire", "key"), WIRE)
def test_the_wire_form_is_unchanged(wire: str, key: TimerKey) -> None:
    assert key.encode() == wire
    assert TimerKey.parse(wire) == key


@pytest.mark.parametrize(
    "wire", ["", "zzz", "a", "a1", "a1.1.bogus", "a1.1.stc.x", "t²", "wft.", "a1.².stc", "t١"]
)
def test_strings_that_name_no_timer_parse_to_none(wire: str) -> None:
    assert TimerKey.parse(wire) is None


@given(
    kind=st.sampled_from(TimerKind),
    seq=st.integers(0, 10**9),
    attempt=st.integers(0, 10**6),
)
def test_every_key_round_trips(kind: TimerKind, seq: int, attempt: int) -> None:
    if kind in (TimerKind.EXECUTION, TimerKind.WORKFLOW_TASK_RETRY):
        seq = 0
    if kind in (TimerKind.EXECUTION, TimerKind.TIMER, TimerKind.SIGNAL_WAIT):
        attempt = 0
    key = TimerKey.activity(kind, seq, attempt) if TimerKey(kind).is_activity else None
    key = key or TimerKey(kind, seq, attempt)
    assert TimerKey.parse(key.encode()) == key


@given(st.text(max_size=12) | st.from_regex(r"[atsw][0-9a-z.²]{0,8}", fullmatch=True))
def test_parsing_untrusted_text_never_raises_and_is_canonical_when_it_succeeds(text: str) -> None:
    key = TimerKey.parse(text)
    if key is not None:
        assert TimerKey.parse(key.encode()) == key


@pytest.mark.parametrize(
    ("key", "spent"),
    [("t", True), ("s9x", True), ("wft.x", True), ("ab.hb", False), ("wf.run", False), ("", False)],
)
def test_an_unreadable_key_shaped_like_a_sleep_wait_or_retry_names_a_spent_timer(
    key: str, spent: bool
) -> None:
    assert TimerKey.parse(key) is None
    assert names_a_spent_timer(key) is spent


def test_a_heartbeat_key_with_a_bad_sequence_is_no_heartbeat_timer() -> None:
    # the server reads the last heartbeat only for a key that parses as a heartbeat timer
    assert TimerKey.parse("abc.1.hb") is None
    assert TimerKey.parse("a7.2.hb") == TimerKey.activity(TimerKind.HEARTBEAT, 7, 2)
