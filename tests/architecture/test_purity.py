"""The pure core imports no I/O, clock, randomness or adapter: checked on its own import statements.

Only what ``durablefuture/core``'s files import counts, so a dependency that uses ``time`` inside
itself cannot fail this test, while a real ``import time`` in the core still does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.architecture.imports import ROOT, Import, imports_in_source, imports_of, top

CORE = ROOT / "durablefuture" / "core"

# What the core may import: its own modules, attrs, and stdlib modules that do no I/O and read no
# clock or entropy. Anything else (asyncio, nats, orjson, time, random, uuid, socket, threading,
# the codec or transport layers, ...) is refused.
ALLOWED_STDLIB = frozenset(
    {
        "abc",
        "bisect",
        "collections",
        "contextlib",
        "contextvars",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "functools",
        "heapq",
        "inspect",
        "itertools",
        "math",
        "operator",
        "re",
        "traceback",
        "types",
        "typing",
        "weakref",
        # reads the bundled IANA time-zone data, never the clock (schedules on a wall clock)
        "zoneinfo",
    }
)
# cronsim: a pure cron expression evaluator (calendar arithmetic only; no clock, no I/O)
ALLOWED_THIRD_PARTY = frozenset({"attrs", "cronsim"})


def violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if imp.module == "durablefuture" or imp.module.startswith("durablefuture.core"):
            continue
        if top(imp.module) in ALLOWED_STDLIB | ALLOWED_THIRD_PARTY:
            continue
        bad.append(f"{imp.where()}: imports {imp.module}")
    return bad


def test_core_imports_nothing_impure() -> None:
    found = list(imports_of(CORE))
    assert len(found) > 50, "the scan found the core's imports"
    assert violations(found) == []


@pytest.mark.parametrize(
    "planted",
    [
        "import time",
        "from time import monotonic",
        "import asyncio",
        "from durablefuture.codec import make_converter",
        "from ..codec import wire",
        "import nats.js",
        "def later():\n    import random\n",
    ],
)
def test_a_planted_impure_import_is_caught(planted: str) -> None:
    file = CORE / "planted.py"
    found = list(imports_in_source(planted + "\n", file))
    assert violations(found), f"{planted!r} was not caught"


def test_the_core_own_relative_imports_pass() -> None:
    file: Path = CORE / "planted.py"
    found = list(imports_in_source("from . import events\nfrom .types import JsonValue\n", file))
    assert violations(found) == []
