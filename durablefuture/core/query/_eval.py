"""Evaluating a parsed query against one run's row, and ordering rows for paging.

A row maps field names to values: the built-in fields (``StartTime``/``CloseTime`` as aware
datetimes) and the run's search attributes. Semantics, kept small and written down:

* a run without the field (or with None) matches no comparison, IN, BETWEEN or STARTS_WITH,
  negated ones included; ``IS NULL`` tests for that, ``NOT`` inverts the whole predicate;
* values of different kinds are never equal or ordered (an int attribute does not match
  ``'5'``), except ints with floats, and datetimes with ISO 8601 strings;
* a keyword list matches ``=`` / ``IN`` / ``STARTS_WITH`` when one of its items does
  (``!=`` / ``NOT IN`` when none does); it has no order;
* a text attribute matches ``=`` when it contains every word of the value (case-insensitive).
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.query._ast import (
    And,
    Compare,
    Expr,
    In,
    IsNull,
    Literal,
    Not,
    Or,
    OrderKey,
    Query,
    StartsWith,
)
from durablefuture.core.query._parse import parse_datetime

__all__ = [
    "DEFAULT_ORDER",
    "FieldValue",
    "Row",
    "Text",
    "after_cursor",
    "comparable",
    "compile_where",
    "cursor_of",
    "equality_hints",
    "evaluate",
    "matches",
    "ordered",
    "sort_key",
    "sort_part",
    "top",
]


class Text(str):
    """A text search attribute's value: matched by words, not as a whole."""

    __slots__ = ()


FieldValue = str | int | float | bool | datetime | tuple[str, ...] | None


class Row(Protocol):
    """What a query is evaluated on: a run's fields by name (a dict will do)."""

    def get(self, key: str, default: FieldValue = None, /) -> FieldValue: ...


DEFAULT_ORDER = (OrderKey("StartTime", descending=True),)
_TIEBREAK = (OrderKey("RunId"), OrderKey("WorkflowId"))
_WORDS = re.compile(r"\w+")


def _kind(v: object) -> str:
    kind = _KINDS.get(type(v))
    if kind is not None:
        return kind
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, datetime):
        return "time"
    if isinstance(v, str):
        return "str"
    return "other"


_KINDS: dict[type, str] = {
    bool: "bool",
    int: "num",
    float: "num",
    datetime: "time",
    str: "str",
    Text: "str",
}


def _pair(v: FieldValue, lit: Literal) -> tuple[object, object] | None:
    """``(v, lit)`` made comparable, or None when they are of different kinds."""
    if isinstance(v, datetime) and isinstance(lit, str):
        when = parse_datetime(lit)
        return None if when is None else (v, when)
    kind = _kind(v)
    if kind != _kind(lit) or kind == "other":
        return None
    return v, lit


def _eq(v: FieldValue, lit: Literal) -> bool:
    if isinstance(v, Text) and isinstance(lit, str):
        words = set(_WORDS.findall(v.lower()))
        wanted = _WORDS.findall(lit.lower())
        return bool(wanted) and all(w in words for w in wanted)
    p = _pair(v, lit)
    return p is not None and p[0] == p[1]


def _cmp(v: FieldValue, op: str, lit: Literal) -> bool:
    if isinstance(v, tuple):
        if op == "=":
            return any(_eq(item, lit) for item in v)
        if op == "!=":
            return not any(_eq(item, lit) for item in v)
        return False
    if op == "=":
        return _eq(v, lit)
    p = _pair(v, lit)
    if p is None:
        return False
    a, b = p
    if op == "!=":
        return not _eq(v, lit)
    if op == "<":
        return bool(a < b)  # type: ignore[operator]
    if op == ">":
        return bool(a > b)  # type: ignore[operator]
    if op == "<=":
        return bool(a <= b)  # type: ignore[operator]
    return bool(a >= b)  # type: ignore[operator]


def evaluate(expr: Expr, row: Row) -> bool:
    """Whether ``row`` satisfies ``expr`` (see the module's docstring for the semantics)."""
    if isinstance(expr, And):
        return all(evaluate(p, row) for p in expr.parts)
    if isinstance(expr, Or):
        return any(evaluate(p, row) for p in expr.parts)
    if isinstance(expr, Not):
        return not evaluate(expr.part, row)
    v = row.get(expr.field)
    if isinstance(expr, IsNull):
        return (v is None) != expr.negate
    if v is None:
        return False
    if isinstance(expr, Compare):
        return _cmp(v, expr.op, expr.value)
    if isinstance(expr, In):
        hit = any(_cmp(v, "=", lit) for lit in expr.values)
        return hit != expr.negate
    if isinstance(expr, StartsWith):
        items = v if isinstance(v, tuple) else (v,)
        return any(isinstance(i, str) and i.startswith(expr.prefix) for i in items)
    if isinstance(v, tuple):
        return False
    inside = _cmp(v, ">=", expr.low) and _cmp(v, "<=", expr.high)
    if expr.negate:
        return not inside and _pair(v, expr.low) is not None and _pair(v, expr.high) is not None
    return inside


def compile_where(expr: Expr | None) -> Callable[[Row], bool]:
    """``expr`` as one function of a row, equal to ``evaluate(expr, row)`` (which stays the
    reference) without walking the tree for every row: what the index runs over many rows."""
    if expr is None:
        return lambda _r: True
    if isinstance(expr, And | Or):
        fs = tuple(compile_where(p) for p in expr.parts)
        want = isinstance(expr, Or)

        def junction(r: Row) -> bool:
            for f in fs:
                if f(r) is want:
                    return want
            return not want

        return junction
    if isinstance(expr, Not):
        inner = compile_where(expr.part)
        return lambda r: not inner(r)
    field = expr.field
    if isinstance(expr, IsNull):
        negate = expr.negate
        return lambda r: (r.get(field) is None) != negate
    if isinstance(expr, Compare):
        op, lit = expr.op, expr.value

        def compare(r: Row) -> bool:
            v = r.get(field)
            return v is not None and _cmp(v, op, lit)

        return compare
    if isinstance(expr, In):
        values, negate_in = expr.values, expr.negate

        def among(r: Row) -> bool:
            v = r.get(field)
            if v is None:
                return False
            return any(_cmp(v, "=", lit) for lit in values) != negate_in

        return among
    leaf = expr
    return lambda r: evaluate(leaf, r)


def matches(query: Query, row: Row) -> bool:
    return query.where is None or evaluate(query.where, row)


def equality_hints(expr: Expr | None) -> dict[str, frozenset[Literal]]:
    """The fields a query pins to a set of values in every match (``f = v`` or ``f IN (...)``
    among its top-level ANDs): an index may look only at runs with those values."""
    if expr is None:
        return {}
    parts = expr.parts if isinstance(expr, And) else (expr,)
    out: dict[str, frozenset[Literal]] = {}
    for p in parts:
        if isinstance(p, Compare) and p.op == "=":
            values: frozenset[Literal] = frozenset({p.value})
        elif isinstance(p, In) and not p.negate:
            values = frozenset(p.values)
        else:
            continue
        out[p.field] = out[p.field] & values if p.field in out else values
    return out


# ---------------------------------------------------------------------- ordering and paging

_RANKS = {"bool": 0, "num": 1, "str": 2, "time": 3}
_MISSING = 9
SortPart = tuple[int, str | int | float | bool]


def sort_part(v: FieldValue) -> SortPart:
    """One value as it is ordered: (kind's rank, comparable value); missing ranks last."""
    if isinstance(v, tuple):
        v = v[0] if v else None
    if v is None:
        return (_MISSING, 0)
    kind = _kind(v)
    if kind == "time":
        assert isinstance(v, datetime)
        return (_RANKS["time"], v.timestamp())
    assert isinstance(v, str | int | float | bool)
    return (_RANKS.get(kind, _MISSING), v)


def _keys(order: Sequence[OrderKey]) -> tuple[OrderKey, ...]:
    return (*(order or DEFAULT_ORDER), *_TIEBREAK)


def sort_key(row: Row, order: Sequence[OrderKey]) -> list[SortPart]:
    """The values ``row`` is ordered by (JSON-able: a page token holds the last one's).

    A row may offer ``sort_part(field)`` (the same as ``sort_part(row.get(field))``, faster)."""
    part = getattr(row, "sort_part", None)
    if part is not None:
        return [part(k.field) for k in _keys(order)]
    return [sort_part(row.get(k.field)) for k in _keys(order)]


def _desc(v: str | int | float | bool) -> object:
    if isinstance(v, str):  # reversed, and a string before its own prefixes
        return (*(-ord(c) for c in v), 1)
    return -v


def comparable(parts: Sequence[SortPart], order: Sequence[OrderKey]) -> tuple[object, ...]:
    """``parts`` as one tuple Python orders the way ``order`` says (missing values last in
    either direction), so sorting and heaps compare natively."""
    return tuple(
        (rank, _desc(v) if k.descending and rank != _MISSING else v)
        for (rank, v), k in zip(parts, _keys(order), strict=True)
    )


def ordered(rows: Sequence[Row], order: Sequence[OrderKey]) -> list[Row]:
    """``rows`` sorted by ``order`` (default: newest start first), ties broken by run id."""
    return top(rows, order, len(rows))


def top(rows: Iterable[Row], order: Sequence[OrderKey], n: int) -> list[Row]:
    """The first ``n`` of ``rows`` in ``order`` (a heap: no full sort of a large set)."""
    keyed = ((comparable(sort_key(r, order), order), i, r) for i, r in enumerate(rows))
    return [r for _, _, r in heapq.nsmallest(n, keyed, key=lambda x: (x[0], x[1]))]


def _fits(rank: int, v: object) -> bool:
    if rank == _MISSING:
        return v == 0
    if rank == _RANKS["bool"]:
        return isinstance(v, bool)
    if rank == _RANKS["str"]:
        return isinstance(v, str) and len(v) <= 4096
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def cursor_of(raw: object, order: Sequence[OrderKey]) -> list[SortPart]:
    """A page token's sort key, validated (it came from a client)."""
    n = len(_keys(order))
    if not isinstance(raw, list) or len(raw) != n:
        raise InvalidArgumentError("next_page_token: not a token of this query; start over")
    out: list[SortPart] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or item[0] not in (*_RANKS.values(), _MISSING)
            or not _fits(item[0], item[1])
        ):
            raise InvalidArgumentError("next_page_token: malformed; start over from the first page")
        out.append((item[0], item[1]))
    return out


def after_cursor(order: Sequence[OrderKey], cursor: Sequence[SortPart]) -> Callable[[Row], bool]:
    """A test for rows that come after ``cursor`` in ``order``."""
    last = comparable(cursor, order)

    def test(row: Row) -> bool:
        return comparable(sort_key(row, order), order) > last

    return test
