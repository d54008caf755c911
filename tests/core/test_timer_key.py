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


def test_spent_by_names_only_timers_with_nothing_left_to_guard() -> None:
    from durablefuture.core import events as ev
    from durablefuture.core.failure import Failure
    from durablefuture.core.timers import spent_by

    f = Failure("boom")
    assert spent_by(ev.ActivityCompleted(9, 1.0, 3, 2)) == "a3.>"
    assert spent_by(ev.ActivityFailed(9, 1.0, 3, 2, f)) == "a3.>"
    assert spent_by(ev.ActivityTimedOut(9, 1.0, 3, 2, "start_to_close", f)) == "a3.>"
    # a retried attempt: its own timers only, never the next attempt's or schedule_to_close
    retried = spent_by(ev.ActivityRetryScheduled(9, 1.0, 3, 2, f, 1.0, 2.0))
    assert retried == "a3.2.*"
    for kept in ("a3.s2c", "a3.3.stc", "a3.3.hb"):
        assert not _matches(retried, kept)
    for spent in ("a3.2.stc", "a3.2.hb", "a3.2.s2s"):
        assert _matches(retried, spent)
    assert spent_by(ev.CancellationRequested(9, 1.0, 8, 4, 2)) == TimerKey.timer(2).encode()
    assert spent_by(ev.TimerFired(9, 1.0, 2)) is None


def _matches(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(k) > i
        if i >= len(k) or tok not in ("*", k[i]):
            return False
    return len(k) == len(p)
