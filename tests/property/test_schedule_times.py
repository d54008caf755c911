"""Hypothesis: schedule times are ordered, strictly after the start, match the cron fields on
the wall clock, and jitter stays deterministic and bounded, across time zones and DST days."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from durablefuture.core.schedule_spec import Interval, ScheduleSpec, cron_times, scheduled_times

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# 2020..2030, with extra weight on the days around DST changes
instants = st.one_of(
    st.floats(min_value=1.58e9, max_value=1.9e9),
    st.sampled_from([1711846800.0, 1729990800.0, 1710054000.0, 1730613600.0]).flatmap(
        lambda t: st.floats(min_value=t - 3 * 3600, max_value=t + 3 * 3600)
    ),
)
minutes = st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True)
hours = st.one_of(st.just("*"), st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))


def _expr(mins: list[int], hrs: object) -> str:
    h = "*" if hrs == "*" else ",".join(map(str, sorted(hrs)))  # type: ignore[call-overload]
    return f"{','.join(map(str, sorted(mins)))} {h} * * *"


@settings(max_examples=150, deadline=None)
@given(instants, minutes, hours, st.sampled_from(ZONES))
def test_cron_times_ascend_and_match_the_wall_clock(
    after: float, mins: list[int], hrs: object, tz_name: str
) -> None:
    expr = _expr(mins, hrs)
    tz = ZoneInfo(tz_name)
    times = list(islice(cron_times(expr, tz_name, after), 30))
    assert times, expr
    assert times[0] > after
    assert all(a < b for a, b in pairwise(times))
    for t in times:
        wall = datetime.fromtimestamp(t, tz)
        if wall.second == 0 and wall.minute in mins:
            assert hrs == "*" or wall.hour in hrs  # type: ignore[operator]
        else:
            # only a fixed time moved out of a spring-forward gap may differ from its fields
            assert hrs != "*"
            before = datetime.fromtimestamp(t - 1, tz)
            assert wall.utcoffset() != before.utcoffset()


@settings(max_examples=100, deadline=None)
@given(instants, minutes, hours, st.sampled_from(ZONES))
def test_no_time_is_skipped_by_restarting_the_iteration(
    after: float, mins: list[int], hrs: object, tz_name: str
) -> None:
    expr = _expr(mins, hrs)
    times = list(islice(cron_times(expr, tz_name, after), 10))
    # resuming after any produced time yields exactly the rest (what a restarted server does)
    for i, t in enumerate(times[:-1]):
        assert list(islice(cron_times(expr, tz_name, t), len(times) - i - 1)) == times[i + 1 :]


@settings(max_examples=100, deadline=None)
@given(
    instants,
    st.integers(1, 7200),
    st.floats(0, 1),
    st.floats(0, 10_000),
    st.text(min_size=1, max_size=10),
)
def test_jittered_fire_times_are_ordered_and_bounded(
    after: float, every: int, offset_frac: float, jitter: float, sid: str
) -> None:
    spec = ScheduleSpec(
        intervals=[Interval(every=every, offset=int(every * offset_frac) % every)],
        jitter=timedelta(seconds=jitter),
    )
    # the bound is the jitter as the spec holds it: a timedelta, whole microseconds (2.7e-06 s
    # given is 3e-06 s held)
    held = spec.jitter.total_seconds()
    pairs = list(islice(scheduled_times(spec, sid, after), 20))
    assert pairs == list(islice(scheduled_times(spec, sid, after), 20))
    for (n1, f1), (n2, _f2) in pairwise(pairs):
        assert n2 - n1 == every
        assert n1 <= f1 <= n1 + held
        assert f1 <= n2
    assert pairs[0][0] > after
