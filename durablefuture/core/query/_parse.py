"""A recursive-descent parser for the visibility query language.

Grammar (keywords are case-insensitive, field names are not)::

    query     := [expr] [ORDER BY key ("," key)*]
    key       := field [ASC | DESC]
    expr      := conj (OR conj)*
    conj      := unary (AND unary)*
    unary     := NOT unary | "(" expr ")" | predicate
    predicate := field op value                    op: = != <> < > <= >=
               | field [NOT] IN "(" value ("," value)* ")"
               | field STARTS_WITH string
               | field [NOT] BETWEEN value AND value
               | field IS [NOT] NULL
    field     := identifier | `any name`
    value     := 'string' | "string" | integer | float | TRUE | FALSE

A string compared with ``StartTime`` / ``CloseTime`` (or any datetime attribute) is read as an
ISO 8601 datetime (``'2026-01-31T12:00:00Z'``; no offset means UTC). Every error names the
character position and what was expected there. The text is bounded (length, nesting, list
sizes): it may come from anyone allowed to list runs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from durablefuture.core.errors import InvalidQueryError
from durablefuture.core.query._ast import (
    BUILTIN_FIELDS,
    DATETIME_FIELDS,
    And,
    Between,
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

__all__ = ["MAX_QUERY_LENGTH", "STATUSES", "parse_datetime", "parse_query", "split_order_by"]

MAX_QUERY_LENGTH = 8192
MAX_DEPTH = 32
MAX_IN_VALUES = 1000
MAX_ORDER_KEYS = 4
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>`[^`]*`)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
# ExecutionStatus accepts the engine's names and Temporal's (Completed, TimedOut, Canceled, ...)
# (the names of ``core.effects.RunStatus``, spelled out: that module imports the events, which
# import this package through the search attributes; a test checks they agree)
STATUSES = (
    "running",
    "completed",
    "failed",
    "cancelled",
    "terminated",
    "timed_out",
    "continued_as_new",
    "corrupt",
)
_STATUSES = {s.replace("_", ""): s for s in STATUSES} | {"canceled": "cancelled"}
_KEYWORDS = frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "IN",
        "STARTS_WITH",
        "BETWEEN",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "TRUE",
        "FALSE",
        "IS",
        "NULL",
    ]
)


class _Tok:
    __slots__ = ("kind", "pos", "text", "value")

    def __init__(self, kind: str, text: str, pos: int, value: Literal | None = None) -> None:
        self.kind = kind  # string number ident field op punct kw end
        self.text = text
        self.pos = pos
        self.value = value


def _unquote(text: str) -> str:
    quote, body = text[0], text[1:-1]
    body = body.replace(quote * 2, quote)
    return re.sub(r"\\(.)", r"\1", body)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidQueryError(
                f"query: unexpected character {text[pos]!r} at position {pos}; expected a "
                "field name, a value, an operator or a parenthesis",
                position=pos,
                expected="a field name, a value, an operator or a parenthesis",
            )
        kind = m.lastgroup or ""
        tok = m.group()
        if kind == "string":
            out.append(_Tok("string", tok, pos, _unquote(tok)))
        elif kind == "number":
            value: Literal = float(tok) if any(c in tok for c in ".eE") else int(tok)
            out.append(_Tok("number", tok, pos, value))
        elif kind == "ident":
            upper = tok.upper()
            if upper in _KEYWORDS:
                out.append(_Tok("kw", upper, pos))
            else:
                out.append(_Tok("field", tok, pos))
        elif kind == "quoted":
            out.append(_Tok("field", tok[1:-1], pos))
        elif kind in ("op", "punct"):
            out.append(_Tok(kind, "!=" if tok == "<>" else tok, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


def parse_datetime(text: str) -> datetime | None:
    """``text`` as an aware datetime (UTC when it names no offset), or None if it is not one."""
    t = text.strip()
    if len(t) < 10 or len(t) > 40 or not t[:4].isdigit():
        return None
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, expected: str, tok: _Tok | None = None) -> InvalidQueryError:
        t = tok or self.tok
        found = "the end of the query" if t.kind == "end" else repr(t.text)
        return InvalidQueryError(
            f"query: expected {expected} at position {t.pos}, found {found}",
            position=t.pos,
            expected=expected,
        )

    def take(self) -> _Tok:
        t = self.tok
        self.i += 1
        return t

    def accept_kw(self, *words: str) -> str | None:
        if self.tok.kind == "kw" and self.tok.text in words:
            return self.take().text
        return None

    def expect_kw(self, word: str) -> None:
        if self.accept_kw(word) is None:
            raise self.fail(word)

    def expect_punct(self, p: str) -> None:
        if self.tok.kind != "punct" or self.tok.text != p:
            raise self.fail(repr(p))
        self.take()

    # ------------------------------------------------------------------ grammar

    def query(self) -> Query:
        where: Expr | None = None
        if not (self.tok.kind == "end" or (self.tok.kind == "kw" and self.tok.text == "ORDER")):
            where = self.expr()
        order: list[OrderKey] = []
        if self.accept_kw("ORDER"):
            self.expect_kw("BY")
            while True:
                if len(order) == MAX_ORDER_KEYS:
                    raise self.fail(f"the end of ORDER BY (at most {MAX_ORDER_KEYS} keys)")
                f = self.field()
                desc = self.accept_kw("ASC", "DESC") == "DESC"
                order.append(OrderKey(f, desc))
                if self.tok.kind != "punct" or self.tok.text != ",":
                    break
                self.take()
        if self.tok.kind != "end":
            raise self.fail("AND, OR, ORDER BY or the end of the query")
        return Query(where, tuple(order))

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"a simpler expression (nesting deeper than {MAX_DEPTH})")
        parts = [self.conj()]
        while self.accept_kw("OR"):
            parts.append(self.conj())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conj(self) -> Expr:
        parts = [self.unary()]
        while self.accept_kw("AND"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self) -> Expr:
        if self.accept_kw("NOT"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"a simpler expression (nesting deeper than {MAX_DEPTH})")
            inner = self.unary()
            self.depth -= 1
            return Not(inner)
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.take()
            inner = self.expr()
            self.expect_punct(")")
            return inner
        return self.predicate()

    def field(self) -> str:
        t = self.tok
        if t.kind != "field":
            raise self.fail("a field name (WorkflowId, WorkflowType, ... or a search attribute)")
        if not FIELD_NAME.match(t.text):
            raise self.fail("a field name of letters, digits and _ (at most 64)")
        self.take()
        return t.text

    def value(self, field: str) -> Literal:
        t = self.tok
        if t.kind in ("string", "number") and t.value is not None:
            self.take()
            return self._typed(field, t)
        if t.kind == "kw" and t.text in ("TRUE", "FALSE"):
            self.take()
            return self._typed(field, _Tok("bool", t.text, t.pos, t.text == "TRUE"))
        raise self.fail("a value ('text', a number, TRUE or FALSE)")

    def _typed(self, field: str, t: _Tok) -> Literal:
        """Values of built-in fields are checked here, where the position is known."""
        value = t.value
        assert value is not None
        if field in DATETIME_FIELDS:
            when = parse_datetime(value) if isinstance(value, str) else None
            if when is None:
                raise self.fail(f"an ISO 8601 datetime string for {field}", t)
            return when
        if field == "ExecutionStatus" and isinstance(value, str):
            status = _STATUSES.get(value.replace("_", "").lower())
            if status is None:
                raise self.fail(f"a status ({', '.join(sorted(set(_STATUSES.values())))})", t)
            return status
        if field in BUILTIN_FIELDS and not isinstance(value, str):
            raise self.fail(f"a string value for {field}", t)
        if isinstance(value, str) and len(value) > 1024:
            raise self.fail("a string of at most 1024 characters", t)
        return value

    def predicate(self) -> Expr:
        field = self.field()
        t = self.tok
        if t.kind == "op":
            self.take()
            return Compare(field, t.text, self.value(field))
        if self.accept_kw("IS"):
            negate = self.accept_kw("NOT") is not None
            self.expect_kw("NULL")
            return IsNull(field, negate)
        if self.accept_kw("STARTS_WITH"):
            if self.tok.kind != "string":
                raise self.fail("a string after STARTS_WITH")
            prefix = self.take().value
            assert isinstance(prefix, str)
            return StartsWith(field, prefix)
        negate = self.accept_kw("NOT") is not None
        if self.accept_kw("IN"):
            self.expect_punct("(")
            values = [self.value(field)]
            while self.tok.kind == "punct" and self.tok.text == ",":
                self.take()
                if len(values) == MAX_IN_VALUES:
                    raise self.fail(f"')' (IN takes at most {MAX_IN_VALUES} values)")
                values.append(self.value(field))
            self.expect_punct(")")
            return In(field, tuple(values), negate)
        if self.accept_kw("BETWEEN"):
            low = self.value(field)
            self.expect_kw("AND")
            return Between(field, low, self.value(field), negate)
        if negate:
            raise self.fail("IN or BETWEEN after NOT")
        raise self.fail("an operator (=, !=, <, >, <=, >=, IN, STARTS_WITH, BETWEEN, IS)")


def split_order_by(text: str) -> tuple[str, str]:
    """``text`` as (its filter, its ``ORDER BY ...`` clause or ""), split where the clause's
    keyword is (not inside a string)."""
    if len(text) > MAX_QUERY_LENGTH:
        return text, ""
    for tok in _tokens(text):
        if tok.kind == "kw" and tok.text == "ORDER":
            return text[: tok.pos], text[tok.pos :]
    return text, ""


def parse_query(text: str) -> Query:
    """Parse a visibility query; an empty one matches every run.

    Raises:
        InvalidQueryError: the text does not parse; the message names the position and what
            was expected there.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidQueryError(
            f"query: {len(text)} characters, more than the {MAX_QUERY_LENGTH} allowed; "
            "narrow it down or split it",
            position=MAX_QUERY_LENGTH,
            expected="a shorter query",
        )
    return _Parser(text).query()
