"""The parsed form of a visibility query: predicates joined by AND / OR / NOT, and an ordering."""

from __future__ import annotations

from datetime import datetime

from attrs import frozen

__all__ = [
    "BUILTIN_FIELDS",
    "DATETIME_FIELDS",
    "And",
    "Between",
    "Compare",
    "Expr",
    "In",
    "IsNull",
    "Literal",
    "Not",
    "Or",
    "OrderKey",
    "Query",
    "StartsWith",
]

Literal = str | int | float | bool | datetime
"""A value written in a query: a string, an integer, a float, TRUE/FALSE or a datetime."""

DATETIME_FIELDS = frozenset({"StartTime", "CloseTime"})
BUILTIN_FIELDS = frozenset(
    {"WorkflowId", "WorkflowType", "RunId", "ExecutionStatus", "TaskQueue"} | DATETIME_FIELDS
)
"""The fields every run has; any other name is a search attribute."""


@frozen
class Compare:
    """``field op value`` with op one of ``= != < > <= >=``."""

    field: str
    op: str
    value: Literal


@frozen
class In:
    field: str
    values: tuple[Literal, ...]
    negate: bool = False


@frozen
class StartsWith:
    field: str
    prefix: str


@frozen
class Between:
    field: str
    low: Literal
    high: Literal
    negate: bool = False


@frozen
class IsNull:
    """``field IS NULL`` (the run has no such attribute) or ``IS NOT NULL``."""

    field: str
    negate: bool = False


@frozen
class And:
    parts: tuple[Expr, ...]


@frozen
class Or:
    parts: tuple[Expr, ...]


@frozen
class Not:
    part: Expr


Expr = Compare | In | StartsWith | Between | IsNull | And | Or | Not


@frozen
class OrderKey:
    field: str
    descending: bool = False


@frozen
class Query:
    """A whole query: an optional filter (None matches every run) and an ordering (empty: the
    default, newest start first)."""

    where: Expr | None = None
    order_by: tuple[OrderKey, ...] = ()
