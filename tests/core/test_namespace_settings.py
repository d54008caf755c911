"""Namespace settings: durations and sizes, their stored form, and the history verdict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.namespace import (
    NamespaceSettings,
    format_duration,
    history_verdict,
    parse_duration,
    parse_size,
)


def test_durations_and_sizes() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2w") == 14 * 86400
    assert parse_size("10MB") == 10_000_000
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("512") == 512
    for bad in ("", "7x", "-1d", "0s", "d7", "101y"):
        with pytest.raises(InvalidArgumentError, match="retention"):
            parse_duration(bad, "retention")
    for bad in ("", "10XB", "0", "-5MB"):
        with pytest.raises(InvalidArgumentError, match="--history-limit-size"):
            parse_size(bad, "--history-limit-size")


@given(st.integers(min_value=1, max_value=10**9))
def test_a_duration_reads_back_as_written(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_settings_round_trip_through_stream_metadata() -> None:
    s = NamespaceSettings(retention=60, history_warn_events=5, history_limit_events=10)
    md = s.to_metadata()
    assert md["df.retention"] == "1m"
    assert NamespaceSettings.from_metadata({**md, "other": "kept aside"}) == s
    assert NamespaceSettings.from_metadata(None) == NamespaceSettings()
    assert NamespaceSettings().retention == 7 * 86400
    with pytest.raises(InvalidArgumentError, match=r"df\.history_limit_events"):
        NamespaceSettings.from_metadata({"df.history_limit_events": "lots"})
    with pytest.raises(InvalidArgumentError, match="above the limit"):
        NamespaceSettings(history_warn_events=100, history_limit_events=10)


def test_history_verdict_warns_then_fails_naming_the_limit() -> None:
    s = NamespaceSettings()  # Temporal's defaults
    assert history_verdict(s, 10_239, 1000) == history_verdict(s, 0, 0)
    assert not history_verdict(s, 10_239, 10 * 1024 * 1024 - 1).warn
    warn = history_verdict(s, 10_240, 1000)
    assert warn.warn and not warn.fail and "10,240 events" in warn.message
    assert history_verdict(s, 5, 10 * 1024 * 1024).warn
    fail = history_verdict(s, 51_200, 1000)
    assert fail.fail and "51,200" in fail.message and "continue_as_new" in fail.message
    big = history_verdict(s, 10, 50 * 1024 * 1024)
    assert big.fail and "52,428,800 bytes" in big.message


@given(st.integers(0, 100_000), st.integers(0, 100 * 1024 * 1024))
def test_failing_implies_warning(events: int, size: int) -> None:
    v = history_verdict(NamespaceSettings(), events, size)
    assert not v.fail or v.warn
    assert v.warn == (events >= 10_240 or size >= 10 * 1024 * 1024)
    assert v.fail == (events >= 51_200 or size >= 50 * 1024 * 1024)
