"""``result_type_of``: the declared return type, remembered per function once resolved."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from durablefuture.core.definitions import result_type_of


def test_a_return_type_resolved_later_is_found_then() -> None:
    namespace: dict[str, Any] = {}
    exec(  # a forward reference its module defines only after the function
        "def activity() -> 'Receipt':\n    return Receipt()\n", namespace
    )
    fn = namespace["activity"]
    assert result_type_of(fn) is None  # not resolvable yet: plain JSON
    assert result_type_of(fn) is None

    class Receipt:
        pass

    namespace["Receipt"] = Receipt
    assert result_type_of(fn) is Receipt
    assert result_type_of(fn) is Receipt  # (remembered)


def test_generator_workflows_and_plain_functions() -> None:
    def wf() -> Generator[Any, Any, int]:
        yield None
        return 1

    def act() -> dict[str, int]:
        return {}

    def nothing() -> None:
        return None

    for _ in range(2):
        assert result_type_of(wf) is int
        assert result_type_of(act) == dict[str, int]
        assert result_type_of(nothing) is None
        assert result_type_of("by-name") is None
