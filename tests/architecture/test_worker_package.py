"""The worker is a package by concern: each module one idea, none over the size limit."""

from __future__ import annotations

from tests.architecture.imports import ROOT

MAX_LINES = 450


def test_every_worker_module_stays_small() -> None:
    sizes = {
        str(f.relative_to(ROOT)): len(f.read_text().splitlines())
        for f in sorted((ROOT / "durablefuture" / "worker").glob("*.py"))
    }
    assert len(sizes) > 1
    assert {f: n for f, n in sizes.items() if n > MAX_LINES} == {}
