"""The visibility index answers exactly what evaluating the query on every run answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.query import matches, ordered, parse_query
from durablefuture.core.search_attributes import SearchAttribute
from durablefuture.core.visibility import IndexedRun, RunIndex

TYPES = ["order", "refund"]
STATUSES = [RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED]


@st.composite
def summaries(draw: st.DrawFn, n: int) -> RunSummary:
    attrs: dict[str, SearchAttribute] = {}
    if draw(st.booleans()):
        attrs["Priority"] = SearchAttribute("int", draw(st.integers(0, 3)))
    if draw(st.booleans()):
        attrs["Region"] = SearchAttribute("keyword", draw(st.sampled_from(["eu", "us"])))
    if draw(st.booleans()):
        attrs["Tags"] = SearchAttribute(
            "keyword_list", draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2))
        )
    if draw(st.booleans()):  # the same name with another type on some runs
        attrs["Flag"] = draw(
            st.sampled_from(
                [
                    SearchAttribute("bool", True),
                    SearchAttribute("int", 1),
                    SearchAttribute("text", "a b"),
                ]
            )
        )
    status = draw(st.sampled_from(STATUSES))
    start = float(draw(st.integers(0, 5)))
    return RunSummary(
        workflow_id=f"w{n % 7}",
        run_id=f"r{n}",
        workflow_type=draw(st.sampled_from(TYPES)),
        task_queue=draw(st.sampled_from(["q1", "q2"])),
        status=status,
        start_time=1_700_000_000.0 + start,
        close_time=None if status == RunStatus.RUNNING else 1_700_000_010.0 + start,
        search_attributes=attrs,
    )


QUERIES = [
    "",
    "WorkflowType = 'order'",
    "WorkflowType = 'order' AND ExecutionStatus = 'completed'",
    "WorkflowType = 'order' AND ExecutionStatus = 'Completed' AND Region = 'eu'",
    "ExecutionStatus IN ('failed', 'running') AND TaskQueue = 'q2'",
    "Priority = 2 AND WorkflowType = 'refund'",
    "Priority IN (1, 3) ORDER BY Priority DESC",
    "Tags = 'a' AND Region != 'us'",
    "Flag = 1",
    "Flag = TRUE AND ExecutionStatus = 'running'",
    "Flag = 'a'",
    "WorkflowId = 'w3' OR Priority >= 2",
    "RunId = 'r4'",
    "Missing = 'x' AND WorkflowType = 'order'",
    "WorkflowType = 'order' ORDER BY CloseTime ASC, Priority DESC",
    "StartTime >= '2023-11-14T22:13:22Z' AND WorkflowType IN ('order', 'refund')",
    "StartTime > '2023-11-14T22:13:22Z'",
    "StartTime <= '2023-11-14T22:13:23Z' AND ExecutionStatus = 'completed'",
    "StartTime < '2023-11-14T22:13:23.000001Z' ORDER BY Priority",
    "StartTime BETWEEN '2023-11-14T22:13:21Z' AND '2023-11-14T22:13:24Z' AND Region = 'eu'",
    "StartTime NOT BETWEEN '2023-11-14T22:13:21Z' AND '2023-11-14T22:13:24Z'",
    "StartTime != '2023-11-14T22:13:22Z'",
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=40).flatmap(
        lambda ops: st.tuples(st.just(ops), st.tuples(*(summaries(i) for i, _ in enumerate(ops))))
    ),
    st.sampled_from(QUERIES),
    st.integers(1, 6),
    st.sampled_from([0, 3, 2000]),
)
def test_index_equals_brute_force(
    case: tuple[list[tuple[int, bool]], tuple[RunSummary, ...]], text: str, size: int, walk: int
) -> None:
    ops, runs = case
    index = RunIndex()
    index.walk_above = walk  # walk the runs newest first, or heap the candidates
    live: dict[str, RunSummary] = {}
    for (slot, delete), summary in zip(ops, runs, strict=True):
        key = f"k{slot}"
        if delete:
            index.remove(key)
            live.pop(key, None)
        else:
            index.put(key, summary)
            live[key] = summary
    query = parse_query(text)
    rows = [IndexedRun(s) for s in live.values()]
    expected = [r.summary for r in ordered([r for r in rows if matches(query, r)], query.order_by)]
    assert index.count(query) == len(expected)
    assert len(index) == len(live)
    pages: list[RunSummary] = []
    cursor = None
    for _ in range(len(live) + 2):  # bounded: a cursor that does not advance fails, not hangs
        page, cursor = index.page(query, size, cursor)
        pages.extend(page)
        if cursor is None:
            break
    assert [s.run_id for s in pages] == [s.run_id for s in expected]
