"""When a schedule fires: cron expressions, intervals, time zones, DST and jitter (pure).

Times are UTC epoch seconds (floats) throughout; wall clocks only exist inside this module.

Rules (documented in README "Schedules"):

- **Cron**: the usual five fields (minute hour day-of-month month day-of-week, parsed by
  ``cronsim``) or an alias ``@yearly @annually @monthly @weekly @daily @midnight @hourly``,
  evaluated on the wall clock of ``ScheduleSpec.timezone`` (an IANA name, via ``zoneinfo``).
- **DST**, as Debian cron does it. A *fixed-time* expression (minute and hour fields do not
  start with ``*``, e.g. ``30 2 * * *``) fires once per matching wall-clock time: a time that
  falls in the spring-forward gap fires at the first instant after the gap (03:00 in Berlin),
  a time in the repeated fall-back hour fires once, at its first occurrence. A *wildcard*
  expression (``*/15 * * * *``, ``@hourly``) follows real time: nothing fires for wall-clock
  times in the gap (they do not exist), and the repeated hour fires twice (they are different
  instants).
- **Intervals**: ``every`` and ``offset`` count from the Unix epoch in UTC, whatever the time
  zone: ``Interval(every=1h, offset=15min)`` fires at hh:15 UTC.
- **Jitter**: each action fires ``jitter * u`` late, ``u`` in [0, 1) derived from a hash of the
  schedule id and the scheduled time (the same on every server and after every restart),
  capped so that an action never fires after the next one's scheduled time.
- ``start_at`` / ``end_at`` bound the *scheduled* (nominal) times, inclusively.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import field, frozen
from cronsim import CronSim, CronSimError

from durablefuture.core.errors import InvalidArgumentError

__all__ = [
    "Interval",
    "ScheduleSpec",
    "cron_times",
    "iso",
    "jitter_fraction",
    "nominal_times",
    "scheduled_times",
]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MAX_YEARS = 60
_SEARCH_BACK = timedelta(hours=3)  # > any DST shift: catches repeated-hour instants


def _seconds(value: timedelta | float | int) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


def _opt_dt(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidArgumentError(
            f"schedule time {value.isoformat()} has no time zone; pass an aware datetime "
            "(e.g. datetime(..., tzinfo=UTC))"
        )
    return value


def expand_cron(expr: str) -> str:
    """The five-field form of ``expr`` (aliases expanded); raises on anything else."""
    text = " ".join(expr.split())
    five = ALIASES.get(text.lower(), text)
    if len(five.split()) != 5:
        raise InvalidArgumentError(
            f"cron expression {expr!r} must have five fields (minute hour day-of-month month "
            f"day-of-week) or be one of {', '.join(sorted(ALIASES))}"
        )
    try:
        CronSim(five, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError) as exc:
        raise InvalidArgumentError(f"cron expression {expr!r} is invalid: {exc}") from None
    return five


def _check_crons(_inst: object, _attr: object, value: tuple[str, ...]) -> None:
    for expr in value:
        expand_cron(expr)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgumentError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC' ({exc})"
        ) from None


def _check_zone(_inst: object, _attr: object, value: str) -> None:
    zone(value)


@frozen
class Interval:
    """Fire every ``every``, at ``offset`` past each multiple of it since the Unix epoch (UTC)."""

    every: timedelta = field(converter=_seconds)
    offset: timedelta = field(default=timedelta(0), converter=_seconds)

    def __attrs_post_init__(self) -> None:
        if self.every.total_seconds() < 1:
            raise InvalidArgumentError(f"Interval.every must be at least 1 s, not {self.every}")
        if not timedelta(0) <= self.offset < self.every:
            raise InvalidArgumentError(
                f"Interval.offset must be in [0, every), got {self.offset} for every {self.every}"
            )


def _intervals(value: Interval | Iterable[Interval]) -> tuple[Interval, ...]:
    if isinstance(value, Interval):
        return (value,)
    return tuple(value)


def _crons(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@frozen
class ScheduleSpec:
    """When a schedule's actions are due: the union of its cron expressions and intervals."""

    cron: tuple[str, ...] = field(default=(), converter=_crons, validator=_check_crons)
    intervals: tuple[Interval, ...] = field(default=(), converter=_intervals)
    start_at: datetime | None = field(default=None, converter=_opt_dt)
    end_at: datetime | None = field(default=None, converter=_opt_dt)
    jitter: timedelta = field(default=timedelta(0), converter=_seconds)
    timezone: str = field(default="UTC", validator=_check_zone)

    def __attrs_post_init__(self) -> None:
        if not self.cron and not self.intervals:
            raise InvalidArgumentError(
                "a ScheduleSpec needs at least one cron expression or interval "
                "(e.g. ScheduleSpec(cron=['0 2 * * *']) or intervals=[Interval(every=...)])"
            )
        if self.jitter < timedelta(0):
            raise InvalidArgumentError(f"jitter must not be negative, got {self.jitter}")
        if self.start_at and self.end_at and self.end_at < self.start_at:
            raise InvalidArgumentError("ScheduleSpec.end_at is before start_at")


def iso(ts: float) -> str:
    """``2024-03-31T01:00:00Z`` (milliseconds only when there are any)."""
    d = datetime.fromtimestamp(ts, tz=UTC)
    if d.microsecond:
        return d.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ cron on a wall clock


def _fixed_time(five: str) -> bool:
    minute, hour = five.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def _instants(wall: datetime, tz: ZoneInfo, fixed: bool) -> list[float]:
    """The real instants an existing wall-clock time stands for in ``tz``: two in a repeated
    hour for wildcard expressions, else one (see the module rules)."""
    ta = wall.replace(tzinfo=tz, fold=0).timestamp()
    tb = wall.replace(tzinfo=tz, fold=1).timestamp()
    if ta != tb and not fixed:
        return sorted({ta, tb})
    return [min(ta, tb)]


def _transition_after_gap(wall: datetime, tz: ZoneInfo) -> float:
    a = wall.replace(tzinfo=tz, fold=0).timestamp()
    b = wall.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = min(a, b), max(a, b)
    # the transition lies in (lo, hi]: find the first instant whose wall clock is past `wall`
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) > wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def cron_times(expr: str, tz_name: str, after: float) -> Iterator[float]:
    """Instants strictly after ``after`` at which cron ``expr`` fires in ``tz_name``, ascending."""
    five = expand_cron(expr)
    tz = zone(tz_name)
    fixed = _fixed_time(five)
    start_wall = datetime.fromtimestamp(after, tz).replace(tzinfo=None) - _SEARCH_BACK
    limit = start_wall + timedelta(days=366 * _MAX_YEARS)
    pending: list[float] = []
    last = after
    try:
        for wall in CronSim(five, start_wall.replace(second=0, microsecond=0)):
            if wall > limit:
                break
            a = wall.replace(tzinfo=tz, fold=0)
            real = a.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
            if not real:
                if fixed:
                    heapq.heappush(pending, _transition_after_gap(wall, tz))
                continue
            for t in _instants(wall, tz, fixed):
                heapq.heappush(pending, t)
            floor = a.timestamp()  # no later wall maps to an instant before this one
            while pending and pending[0] <= floor:
                t = heapq.heappop(pending)
                if t > last:
                    last = t
                    yield t
    except StopIteration:  # pragma: no cover - cronsim gives up after 50 years
        pass
    while pending:
        t = heapq.heappop(pending)
        if t > last:
            last = t
            yield t


# ------------------------------------------------------------------ intervals and the union


def interval_times(interval: Interval, after: float) -> Iterator[float]:
    every = round(interval.every.total_seconds() * 1_000_000)
    offset = round(interval.offset.total_seconds() * 1_000_000)
    after_us = math.floor(after * 1_000_000)
    k = (after_us - offset) // every + 1
    while True:
        t = (offset + k * every) / 1_000_000
        if t > after:
            yield t
        k += 1


def nominal_times(spec: ScheduleSpec, after: float) -> Iterator[float]:
    """Scheduled (nominal) times strictly after ``after``, ascending, without duplicates."""
    start = spec.start_at.timestamp() if spec.start_at else None
    end = spec.end_at.timestamp() if spec.end_at else None
    if start is not None and after < start:
        after = math.nextafter(start, -math.inf)
    sources = [cron_times(c, spec.timezone, after) for c in spec.cron]
    sources += [interval_times(i, after) for i in spec.intervals]
    last: float | None = None
    for t in heapq.merge(*sources):
        if end is not None and t > end:
            return
        if t != last:
            last = t
            yield t


def jitter_fraction(schedule_id: str, nominal: float) -> float:
    """A number in [0, 1) fixed by the schedule id and the scheduled time (FNV-1a, 64 bit)."""
    h = 0xCBF29CE484222325
    for byte in f"{schedule_id}|{iso(nominal)}".encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (h >> 11) / float(1 << 53)


def scheduled_times(
    spec: ScheduleSpec, schedule_id: str, after: float
) -> Iterator[tuple[float, float]]:
    """``(nominal, fire_at)`` pairs strictly after nominal ``after``: ``fire_at`` adds the
    deterministic jitter, capped below the next nominal time (so fire times stay ordered)."""
    jitter = spec.jitter.total_seconds()
    times = nominal_times(spec, after)
    current = next(times, None)
    while current is not None:
        following = next(times, None)
        delay = 0.0
        if jitter > 0:
            room = jitter if following is None else min(jitter, following - current)
            delay = room * jitter_fraction(schedule_id, current)
        yield current, current + delay
        current = following
