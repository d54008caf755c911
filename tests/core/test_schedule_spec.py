"""Schedule time math: cron, aliases, intervals, time zones and DST, jitter, start/end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.schedule_spec import (
    Interval,
    ScheduleSpec,
    cron_times,
    iso,
    jitter_fraction,
    nominal_times,
    scheduled_times,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def local(t: float, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def first(expr: str, tz: str, after: str, n: int = 4) -> list[str]:
    return [local(t, ZoneInfo(tz)) for t in islice(cron_times(expr, tz, ts(after)), n)]


def test_cron_in_utc() -> None:
    assert [iso(t) for t in islice(cron_times("0 2 * * *", "UTC", ts("2024-05-01T03:00Z")), 2)] == [
        "2024-05-02T02:00:00Z",
        "2024-05-03T02:00:00Z",
    ]


def test_times_are_strictly_after() -> None:
    at = ts("2024-05-01T02:00:00Z")
    assert next(cron_times("0 2 * * *", "UTC", at)) == ts("2024-05-02T02:00:00Z")


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", "2024-05-01T04:00:00Z"),
        ("@daily", "2024-05-02T00:00:00Z"),
        ("@midnight", "2024-05-02T00:00:00Z"),
        ("@weekly", "2024-05-05T00:00:00Z"),  # a Sunday
        ("@monthly", "2024-06-01T00:00:00Z"),
        ("@yearly", "2025-01-01T00:00:00Z"),
        ("@annually", "2025-01-01T00:00:00Z"),
    ],
)
def test_aliases(alias: str, expected: str) -> None:
    assert iso(next(cron_times(alias, "UTC", ts("2024-05-01T03:10Z")))) == expected


def test_cron_in_a_time_zone() -> None:
    assert first("0 9 * * 1-5", "Europe/Berlin", "2024-05-03T12:00Z", 2) == [
        "2024-05-06T09:00:00+02:00",
        "2024-05-07T09:00:00+02:00",
    ]


def test_spring_forward_fixed_time_fires_once_after_the_gap() -> None:
    # 2024-03-31 Berlin: 02:00 CET -> 03:00 CEST; 02:30 does not exist that day
    assert first("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00Z", 3) == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_fall_back_fixed_time_fires_once() -> None:
    # 2024-10-27 Berlin: 03:00 CEST -> 02:00 CET; 02:30 happens twice, fires at the first
    assert first("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00Z", 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]


def test_spring_forward_wildcard_follows_real_time() -> None:
    got = first("0 * * * *", "Europe/Berlin", "2024-03-31T00:30:00+01:00", 3)
    assert got == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
    ]
    times = list(
        islice(cron_times("0 * * * *", "Europe/Berlin", ts("2024-03-31T00:30:00+01:00")), 3)
    )
    assert times[1] - times[0] == 3600  # hourly in real time


def test_fall_back_wildcard_fires_in_both_repeated_hours() -> None:
    got = first("0 * * * *", "Europe/Berlin", "2024-10-27T00:30:00+02:00", 4)
    assert got == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]
    got = first("*/30 2 * * *", "Europe/Berlin", "2024-10-27T00:30:00+02:00", 5)
    assert got == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:30:00+01:00",
        "2024-10-28T02:00:00+01:00",
    ]


def test_new_york_dst_days() -> None:
    assert first("30 2 * * *", "America/New_York", "2024-03-09T12:00Z", 2) == [
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
    ]
    assert first("30 1 * * *", "America/New_York", "2024-11-02T12:00Z", 2) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_interval_with_offset_counts_from_the_epoch() -> None:
    spec = ScheduleSpec(
        intervals=[Interval(every=timedelta(hours=1), offset=timedelta(minutes=15))]
    )
    got = [iso(t) for t in islice(nominal_times(spec, ts("2024-05-01T03:20Z")), 2)]
    assert got == ["2024-05-01T04:15:00Z", "2024-05-01T05:15:00Z"]


def test_interval_ignores_the_time_zone() -> None:
    spec = ScheduleSpec(intervals=[Interval(every=3600)], timezone="Europe/Berlin")
    t = list(islice(nominal_times(spec, ts("2024-03-31T00:30:00Z")), 3))
    assert [b - a for a, b in pairwise(t)] == [3600, 3600]


def test_union_is_sorted_and_deduplicated() -> None:
    spec = ScheduleSpec(cron=["0 * * * *"], intervals=[Interval(every=timedelta(minutes=30))])
    got = [iso(t) for t in islice(nominal_times(spec, ts("2024-05-01T03:10Z")), 4)]
    assert got == [
        "2024-05-01T03:30:00Z",
        "2024-05-01T04:00:00Z",
        "2024-05-01T04:30:00Z",
        "2024-05-01T05:00:00Z",
    ]


def test_start_and_end_bound_the_nominal_times() -> None:
    spec = ScheduleSpec(
        intervals=[Interval(every=60)],
        start_at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        end_at=datetime(2024, 5, 1, 10, 3, tzinfo=UTC),
    )
    got = [iso(t) for t in nominal_times(spec, ts("2024-05-01T00:00Z"))]
    assert got == [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:01:00Z",
        "2024-05-01T10:02:00Z",
        "2024-05-01T10:03:00Z",
    ]


def test_jitter_is_deterministic_bounded_and_capped() -> None:
    spec = ScheduleSpec(intervals=[Interval(every=60)], jitter=timedelta(seconds=30))
    a = list(islice(scheduled_times(spec, "s1", 0.0), 50))
    b = list(islice(scheduled_times(spec, "s1", 0.0), 50))
    assert a == b
    assert all(0 <= fire - nominal < 30 for nominal, fire in a)
    assert len({round(fire - nominal, 3) for nominal, fire in a}) > 10
    other = list(islice(scheduled_times(spec, "s2", 0.0), 50))
    assert other != a
    capped = ScheduleSpec(intervals=[Interval(every=60)], jitter=timedelta(hours=1))
    pairs = list(islice(scheduled_times(capped, "s1", 0.0), 50))
    assert all(nominal <= fire < nominal + 60 for nominal, fire in pairs)
    assert 0 <= jitter_fraction("x", 1.0) < 1


@pytest.mark.parametrize(
    "bad",
    [
        {"cron": ["0 2 * *"]},
        {"cron": ["61 2 * * *"]},
        {"cron": ["* * * * * *"]},
        {"cron": ["@often"]},
        {},
        {"intervals": [Interval(every=60)], "timezone": "Mars/Olympus"},
        {"intervals": [Interval(every=60)], "jitter": -1},
        {"intervals": [Interval(every=60)], "start_at": datetime(2024, 1, 1)},
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        ScheduleSpec(**bad)  # type: ignore[arg-type]


def test_invalid_intervals_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        Interval(every=0.5)
    with pytest.raises(InvalidArgumentError):
        Interval(every=60, offset=60)
