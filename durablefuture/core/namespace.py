"""A namespace's storage settings: how long closed runs are kept, and how long a history may grow.

They are stored with the namespace (the metadata of its stream), so every df-server applies the
same ones; a df-server started with a setting given explicitly writes it there. Pure: text in,
values out, and the verdict on a history's size.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import evolve, field, frozen
from attrs.validators import ge

from durablefuture.core.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_RETENTION",
    "HistoryVerdict",
    "NamespaceSettings",
    "format_duration",
    "history_verdict",
    "parse_duration",
    "parse_size",
]

DEFAULT_RETENTION = 7 * 86400.0
"""Seconds a closed run is kept by default (7 days)."""
MAX_RETENTION = 100 * 365 * 86400.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_SIZES = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_SIZES |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds of ``90``, ``90s``, ``15m``, ``2h``, ``7d`` or ``2w``."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise InvalidArgumentError(f"{what} {text!r} is not a duration; use e.g. 30s, 15m, 2h, 7d")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not 0 < seconds <= MAX_RETENTION:
        raise InvalidArgumentError(f"{what} {text!r} must be above 0 and at most 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact text :func:`parse_duration` reads back (``7d``, ``90s``)."""
    for unit in ("w", "d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


def parse_size(text: str, what: str = "size") -> int:
    """Bytes of ``10485760``, ``10MB`` (10**6) or ``10MiB`` (2**20)."""
    m = _SIZE.fullmatch(text)
    unit = (m.group(2) if m else "").lower()
    if m is None or unit not in _SIZES:
        raise InvalidArgumentError(f"{what} {text!r} is not a size; use e.g. 10MB, 512KiB")
    value = int(float(m.group(1)) * _SIZES[unit])
    if value < 1:
        raise InvalidArgumentError(f"{what} {text!r} must be at least 1 byte")
    return value


@frozen
class NamespaceSettings:
    """Retention of closed runs and the history limits of one namespace."""

    retention: float = field(default=DEFAULT_RETENTION, validator=ge(1.0))
    """Seconds a closed run (history, status entry, payloads) is kept after it closed."""
    history_warn_events: int = field(default=10_240, validator=ge(1))
    history_warn_bytes: int = field(default=10 * 1024 * 1024, validator=ge(1))
    history_limit_events: int = field(default=51_200, validator=ge(1))
    """A run whose history reaches this many events is ended (continue-as-new before)."""
    history_limit_bytes: int = field(default=50 * 1024 * 1024, validator=ge(1))

    def __attrs_post_init__(self) -> None:
        if self.history_warn_events > self.history_limit_events:
            raise InvalidArgumentError(
                f"the history warning at {self.history_warn_events:,} events is above the "
                f"limit of {self.history_limit_events:,}; lower the warning or raise the limit"
            )
        if self.history_warn_bytes > self.history_limit_bytes:
            raise InvalidArgumentError(
                f"the history warning at {self.history_warn_bytes:,} bytes is above the "
                f"limit of {self.history_limit_bytes:,}; lower the warning or raise the limit"
            )

    def to_metadata(self) -> dict[str, str]:
        """The stream metadata entries that store these settings."""
        return {
            "df.retention": format_duration(self.retention),
            "df.history_warn_events": str(self.history_warn_events),
            "df.history_warn_bytes": str(self.history_warn_bytes),
            "df.history_limit_events": str(self.history_limit_events),
            "df.history_limit_bytes": str(self.history_limit_bytes),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> NamespaceSettings:
        """The settings stored in stream ``metadata`` (defaults for what is missing).

        Raises:
            InvalidArgumentError: a stored value cannot be read (someone edited it by hand).
        """
        md = metadata or {}
        out = cls()
        changes: dict[str, Any] = {}
        if "df.retention" in md:
            changes["retention"] = parse_duration(md["df.retention"], "stored df.retention")
        for name in (
            "history_warn_events",
            "history_warn_bytes",
            "history_limit_events",
            "history_limit_bytes",
        ):
            raw = md.get(f"df.{name}")
            if raw is None:
                continue
            if not raw.isascii() or not raw.isdigit():
                raise InvalidArgumentError(f"stored df.{name} {raw!r} is not a whole number")
            changes[name] = int(raw)
        return evolve(out, **changes) if changes else out


@frozen
class HistoryVerdict:
    """What a history's length and size call for: nothing, a warning, or ending the run."""

    warn: bool = False
    fail: bool = False
    message: str = ""


def history_verdict(settings: NamespaceSettings, events: int, size: int) -> HistoryVerdict:
    """Compare a history of ``events`` events and ``size`` bytes with the namespace's limits."""
    over = []
    if events >= settings.history_limit_events:
        over.append(f"{events:,} events (the limit is {settings.history_limit_events:,})")
    if size >= settings.history_limit_bytes:
        over.append(f"{size:,} bytes (the limit is {settings.history_limit_bytes:,})")
    if over:
        return HistoryVerdict(
            warn=True,
            fail=True,
            message=f"the history has reached {' and '.join(over)}; the run is terminated. Call "
            "df.continue_as_new(...) before that (df.workflow.info().continue_as_new_suggested "
            "tells when), or raise the namespace's limits (df-server --history-limit-events / "
            "--history-limit-bytes)",
        )
    near = []
    if events >= settings.history_warn_events:
        near.append(f"{events:,} events (warning at {settings.history_warn_events:,})")
    if size >= settings.history_warn_bytes:
        near.append(f"{size:,} bytes (warning at {settings.history_warn_bytes:,})")
    if near:
        return HistoryVerdict(
            warn=True,
            message=f"the history has {' and '.join(near)}; at {settings.history_limit_events:,} "
            f"events or {settings.history_limit_bytes:,} bytes the run is terminated: continue "
            "as new (df.continue_as_new) soon",
        )
    return HistoryVerdict()
