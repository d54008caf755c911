"""The visibility query language: parsing, errors with positions, evaluation, ordering, paging."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durablefuture.core.errors import InvalidArgumentError, InvalidQueryError
from durablefuture.core.query import (
    Between,
    Compare,
    In,
    OrderKey,
    Row,
    Text,
    after_cursor,
    compile_where,
    cursor_of,
    equality_hints,
    matches,
    ordered,
    parse_query,
    sort_key,
    top,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(**kw: object) -> Row:
    base: dict[str, object] = {
        "WorkflowId": "o-1",
        "RunId": "r1",
        "WorkflowType": "order",
        "ExecutionStatus": "completed",
        "TaskQueue": "orders",
        "StartTime": T0,
        "CloseTime": T0 + timedelta(seconds=5),
    }
    base.update(kw)
    return base  # type: ignore[return-value]


def q(text: str, r: Row) -> bool:
    return matches(parse_query(text), r)


def test_operators_on_builtin_fields() -> None:
    r = row()
    assert q("WorkflowType = 'order'", r)
    assert not q("WorkflowType != 'order'", r)
    assert q("WorkflowType <> 'payment'", r)
    assert q('WorkflowId STARTS_WITH "o-"', r)
    assert q("ExecutionStatus = 'Completed'", r)  # Temporal's spelling works too
    assert q("ExecutionStatus IN ('failed', 'completed')", r)
    assert not q("ExecutionStatus NOT IN ('failed', 'completed')", r)
    assert q("StartTime BETWEEN '2025-12-31' AND '2026-01-01T00:00:01Z'", r)
    assert q("StartTime < '2026-01-01T01:00:00+01:00' OR CloseTime > '2030-01-01'", r) is False
    assert q("CloseTime >= '2026-01-01T00:00:05Z' AND CloseTime <= '2026-01-01T00:00:05'", r)
    assert q("(WorkflowType = 'x' OR TaskQueue = 'orders') AND NOT RunId = 'r2'", r)
    assert q("", r) and q("ORDER BY StartTime", r)
    assert q("wOrKfLoWtYpE = 'order'", r) is False  # field names are case-sensitive...
    assert q("WorkflowType = 'order' and RunId = 'r1'", r)  # ...keywords are not


def test_search_attribute_semantics() -> None:
    r = row(
        Priority=3,
        Score=2.5,
        Vip=True,
        Region="eu",
        Tags=("a", "b"),
        Note=Text("Customer asked for Express shipping"),
        Due=T0,
    )
    assert q("Priority = 3 AND Priority >= 2.5 AND Score < 3", r)
    assert not q("Priority = '3'", r)  # kinds never mix
    assert not q("Priority != '3'", r)
    assert q("Vip = TRUE AND Vip != false", r)
    assert q("Tags = 'a' AND Tags IN ('z', 'b') AND Tags != 'c' AND Tags STARTS_WITH 'b'", r)
    assert not q("Tags NOT IN ('b')", r)
    assert q("Note = 'express customer' AND NOT Note = 'overnight'", r)
    assert q("Due BETWEEN '2025-01-01' AND '2027-01-01'", r)
    assert q("Missing IS NULL AND Region IS NOT NULL", r)
    # a run without the attribute matches no comparison, negated ones included
    assert not q("Missing = 1", r) and not q("Missing != 1", r)
    assert not q("Missing NOT IN (1)", r) and not q("Missing NOT BETWEEN 1 AND 2", r)
    assert q("NOT Missing = 1", r)
    assert q("`Region` = 'eu'", r)


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("WorkflowType = ", 15, "a value"),
        ("WorkflowType 'x'", 13, "an operator"),
        ("WorkflowId = 3", 13, "a string value for WorkflowId"),
        ("StartTime > 'yesterday'", 12, "ISO 8601"),
        ("(a = 1", 6, "')'"),
        ("a = 1 b = 2", 6, "AND, OR, ORDER BY"),
        ("a = 1 AND", 9, "a field name"),
        ("a IN ()", 6, "a value"),
        ("a # 1", 2, "a field name, a value"),
        ("ExecutionStatus = 'done'", 18, "a status"),
        ("a NOT = 1", 6, "IN or BETWEEN"),
        ("ORDER BY", 8, "a field name"),
        ("a = 'x' ORDER BY b DESC, ", 25, "a field name"),
        ("a BETWEEN 1 2", 12, "AND"),
        ("a STARTS_WITH 1", 14, "a string"),
    ],
)
def test_parse_errors_name_position_and_expectation(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(InvalidQueryError) as info:
        parse_query(text)
    assert info.value.position == position
    assert expected in info.value.expected
    assert f"position {position}" in str(info.value)
    assert isinstance(info.value, InvalidArgumentError)  # one branch of the df error tree


def test_bounds_on_hostile_text() -> None:
    with pytest.raises(InvalidQueryError, match="characters, more than"):
        parse_query("a = 1 AND " * 1000 + "a = 1")
    with pytest.raises(InvalidQueryError, match="nesting deeper"):
        parse_query("(" * 100 + "a = 1" + ")" * 100)
    with pytest.raises(InvalidQueryError, match="nesting deeper"):
        parse_query("NOT " * 100 + "a = 1")
    with pytest.raises(InvalidQueryError, match="at most 1000 values"):
        parse_query("a IN (" + ",".join(["1"] * 1001) + ")")


def test_equality_hints_only_from_top_level_ands() -> None:
    hints = equality_hints(
        parse_query(
            "WorkflowType = 'a' AND ExecutionStatus IN ('failed','completed') AND x > 1"
        ).where
    )
    assert hints == {"WorkflowType": {"a"}, "ExecutionStatus": {"failed", "completed"}}
    assert equality_hints(parse_query("WorkflowType = 'a' OR RunId = 'r'").where) == {}
    assert equality_hints(parse_query("a IN (1, 2) AND a = 2").where) == {"a": {2}}


def test_ordering_and_paging_cover_every_row_once() -> None:
    rows = [
        row(RunId=f"r{i}", StartTime=T0 + timedelta(seconds=i % 4), Priority=i % 3 or None)
        for i in range(20)
    ]
    for order in [(), (OrderKey("Priority"),), (OrderKey("Priority", True), OrderKey("StartTime"))]:
        full = ordered(rows, order)
        assert top(rows, order, 7) == full[:7]
        seen: list[Row] = []
        while len(seen) < len(rows):
            rest = rows if not seen else [r for r in rows if after(seen[-1], order)(r)]
            seen.extend(top(rest, order, 6))
        assert seen == full
    # default: newest start first; missing values last in either direction
    assert ordered(rows, ())[0]["StartTime"] == T0 + timedelta(seconds=3)
    assert ordered(rows, (OrderKey("Priority", True),))[-1].get("Priority") is None


def after(last: Row, order: tuple[OrderKey, ...]) -> Callable[[Row], bool]:
    raw = [list(p) for p in sort_key(last, order)]  # as a token carries it (JSON lists)
    return after_cursor(order, cursor_of(raw, order))


@pytest.mark.parametrize("raw", [None, [], [[1]], [["x", 1]] * 3, [[1, {"a": 1}]] * 3])
def test_hostile_cursor_is_refused(raw: object) -> None:
    with pytest.raises(InvalidArgumentError, match="next_page_token"):
        cursor_of(raw, ())


# ---------------------------------------------------------------------- generated queries

FIELDS = {"n": st.integers(-3, 3), "s": st.sampled_from(["a", "ab", "b", "c'd"])}


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> tuple[str, Callable[[dict[str, object]], bool]]:
    """A query text and the Python predicate it must mean (missing field: no match)."""
    kind = draw(
        st.sampled_from(
            ["cmp", "in", "between", "starts", "and", "or", "not"][: 4 if depth > 2 else 7]
        )
    )
    if kind in ("and", "or"):
        (ta, fa), (tb, fb) = draw(predicates(depth + 1)), draw(predicates(depth + 1))
        if kind == "and":
            return f"({ta} AND {tb})", lambda r: fa(r) and fb(r)
        return f"({ta} OR {tb})", lambda r: fa(r) or fb(r)
    if kind == "not":
        t, f = draw(predicates(depth + 1))
        return f"NOT {t}", lambda r: not f(r)
    field = draw(st.sampled_from(sorted(FIELDS)))
    if kind == "starts":
        field = "s"
    value = draw(FIELDS[field])
    lit = (lambda v: "'" + v.replace("'", "''") + "'") if field == "s" else str

    def present(r: dict[str, object]) -> bool:
        return r.get(field) is not None

    if kind == "cmp":
        op = draw(st.sampled_from(["=", "!=", "<", ">", "<=", ">="]))
        py = {
            "=": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
        }[op]
        return f"{field} {op} {lit(value)}", lambda r: present(r) and py(r[field], value)
    if kind == "in":
        values = draw(st.lists(FIELDS[field], min_size=1, max_size=3))
        neg = draw(st.booleans())
        text = f"{field} {'NOT ' if neg else ''}IN ({', '.join(lit(v) for v in values)})"
        return text, lambda r: present(r) and ((r[field] in values) != neg)
    if kind == "between":
        lo, hi = draw(FIELDS[field]), draw(FIELDS[field])
        neg = draw(st.booleans())
        text = f"{field} {'NOT ' if neg else ''}BETWEEN {lit(lo)} AND {lit(hi)}"
        return text, lambda r: present(r) and ((lo <= r[field] <= hi) != neg)
    prefix = draw(st.sampled_from(["", "a", "ab", "c'"]))
    return (
        f"s STARTS_WITH {lit(prefix)}",
        lambda r: present(r) and str(r["s"]).startswith(prefix),
    )


ROWS = st.fixed_dictionaries({}, optional={"n": FIELDS["n"], "s": FIELDS["s"]})


@settings(max_examples=300, deadline=None)
@given(predicates(), st.lists(ROWS, max_size=8))
def test_generated_query_means_its_python_predicate(
    case: tuple[str, Callable[[dict[str, object]], bool]], rows: list[dict[str, object]]
) -> None:
    text, predicate = case
    query = parse_query(text)
    compiled = compile_where(query.where)
    for r in rows:
        assert matches(query, r) == predicate(r), (text, r)  # type: ignore[arg-type]
        assert compiled(r) == predicate(r), (text, r)  # type: ignore[arg-type]


@given(st.lists(st.integers(-5, 5), max_size=30), st.integers(1, 7), st.booleans())
def test_pages_concatenate_to_the_sorted_whole(values: list[int], size: int, desc: bool) -> None:
    rows: list[Row] = [{"RunId": f"r{i}", "WorkflowId": "w", "n": v} for i, v in enumerate(values)]
    order = (OrderKey("n", desc),)
    pages: list[Row] = []
    cursor: Callable[[Row], bool] = lambda r: True  # noqa: E731
    while True:
        page = top([r for r in rows if cursor(r)], order, size)
        pages.extend(page)
        if len(page) < size:
            break
        cursor = after(page[-1], order)
    assert [r["n"] for r in pages] == sorted(values, reverse=desc)
    assert sorted(str(r["RunId"]) for r in pages) == sorted(str(r["RunId"]) for r in rows)


def test_ast_shapes() -> None:
    assert parse_query("a = 1.5").where == Compare("a", "=", 1.5)
    assert parse_query("a IN ('x')").where == In("a", ("x",))
    assert parse_query("StartTime BETWEEN '2026-01-01' AND '2026-01-02'").where == Between(
        "StartTime", T0, T0 + timedelta(days=1)
    )


def test_status_names_are_the_engines() -> None:
    from durablefuture.core.effects import RunStatus
    from durablefuture.core.query._parse import STATUSES

    assert set(STATUSES) == {*RunStatus.CLOSED, RunStatus.RUNNING, RunStatus.CORRUPT}
