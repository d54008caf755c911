"""Timer keys are built and parsed in one place: ``core/timers.py`` (``TimerKey``).

No other module of the library or the daemons spells out a piece of a key's wire form (the
string literals below), so nothing else can build or split one by hand.
"""

from __future__ import annotations

import ast

from tests.architecture.imports import ROOT

HOME = "durablefuture/core/timers.py"
PIECES = {"wf.exec", "wft.", ".hb", ".s2c", ".s2s", ".stc", "hb", "s2c", "s2s", "stc"}


def test_only_core_timers_spells_out_timer_keys() -> None:
    found = []
    for base in (ROOT / "durablefuture", ROOT / "daemons"):
        for file in sorted(base.rglob("*.py")):
            where = file.relative_to(ROOT).as_posix()
            if where == HOME:
                continue
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Constant) and node.value in PIECES:
                    found.append(f"{where}:{node.lineno}: {node.value!r}")
    assert found == []
