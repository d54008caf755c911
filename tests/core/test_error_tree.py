"""The error tree drawn in ``core/errors.py`` is the real one, and every error is exported.

``errors.__all__`` is the one list of error names; ``durablefuture`` and ``durablefuture.core``
export it as it is. The drawing in the module's docstring is checked against the classes.
"""

from __future__ import annotations

import re

import durablefuture as df
import durablefuture.core as core
from durablefuture.core import errors

_NODE = re.compile(r"^(?P<indent>[│ ]*)[├└]── (?P<name>\w+)")


def _drawn() -> dict[str, str]:
    """Each class drawn in the docstring, with the class drawn as its parent."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack = ["DurableFutureError"]
    for line in doc.splitlines():
        m = _NODE.match(line.strip("\n")[4:] if line.startswith("    ") else line)
        if m is None:
            continue
        depth = len(m.group("indent")) // 4
        del stack[depth + 1 :]
        parents[m.group("name")] = stack[depth]
        stack.append(m.group("name"))
    return parents


def test_the_drawn_tree_matches_the_classes() -> None:
    drawn = _drawn()
    assert set(drawn) | {"DurableFutureError"} == set(errors.__all__)
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        assert getattr(errors, parent) in cls.__bases__, f"{name} is drawn under {parent}"


def test_every_error_is_exported_from_both_packages() -> None:
    for name in errors.__all__:
        assert name in df.__all__ and name in core.__all__, name
        assert getattr(df, name) is getattr(errors, name) is getattr(core, name)
        assert issubclass(getattr(errors, name), errors.DurableFutureError)


def test_names_used_in_the_public_api_are_exported() -> None:
    assert {"FailureError", "RunStatus", "WorkerOptions", "ResultTimeoutError"} <= set(df.__all__)
    for name in df.__all__:
        assert getattr(df, name) is not None, name
