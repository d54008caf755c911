"""The replayer and the server state machine stay split by concern: no module over 450 lines."""

from __future__ import annotations

from tests.architecture.imports import ROOT

CORE = ROOT / "durablefuture" / "core"
LIMIT = 450
SPLIT = [
    *sorted((CORE / "replay").glob("*.py")),
    *sorted((CORE / "orchestration").glob("*.py")),
    CORE / "vocabulary.py",
    CORE / "state.py",
    CORE / "timers.py",
]


def test_the_split_core_modules_stay_small() -> None:
    assert len(SPLIT) > 10, "the scan found the packages"
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in SPLIT}
    assert {p: n for p, n in sizes.items() if n > LIMIT} == {}
