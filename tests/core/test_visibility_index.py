"""The visibility index answers exactly what evaluating the query on every run answers."""

from __future__ import annotations

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from durablefuture.codec.visibility import listed
from durablefuture.codec.wire import Codec
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.events import ParentRef
from durablefuture.core.failure import Failure
from durablefuture.core.query import matches, ordered, parse_query
from durablefuture.core.search_attributes import SearchAttribute
from durablefuture.core.visibility import IndexedRun, RunIndex
from durablefuture.server.visibility import WROTE_KEEP, VisibilityIndex
from durablefuture.transport.subjects import Layout

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


# ---------------------------------------------------------------- what the df-server keeps


def _full_summary(n: int) -> RunSummary:
    """A closed run's status entry with every field set."""
    return RunSummary(
        workflow_id=f"order-{n}",
        run_id=f"{n:032x}",
        workflow_type="order",
        task_queue="q1",
        status=RunStatus.COMPLETED,
        start_time=1_700_000_000.125 + n,
        request_id=f"req-{n}",
        close_time=1_700_000_000.375 + n,
        result={"status": "charged", "items": [1, 2.5, None, True]},
        failure=Failure(message="an earlier attempt failed", type="ValueError"),
        history_length=9,
        new_run_id=f"{n + 1:032x}",
        parent=ParentRef("default", "parent", f"{n + 2:032x}", 3),
        search_attributes={
            "Region": SearchAttribute("keyword", "eu"),
            "Tags": SearchAttribute("keyword_list", ["a", "b"]),
            "Amount": SearchAttribute("float", 12.5),
        },
        memo={"note": "gift", "lines": [{"sku": "x", "qty": 2}]},
    )


def test_listed_keeps_every_field_but_the_dropped_ones() -> None:
    s = _full_summary(1)
    # a field added to RunSummary but not to ``listed`` would be lost from the index
    assert listed(s) == evolve(s, result=None, failure=None, parent=None, request_id="")


class _CountingCodec(Codec):
    def __init__(self) -> None:
        super().__init__()
        self.decoded = 0

    def decode_summary(self, data: bytes) -> RunSummary:
        self.decoded += 1
        return super().decode_summary(data)


def test_an_entry_this_server_wrote_is_indexed_without_decoding_it_again() -> None:
    codec = _CountingCodec()
    ours = VisibilityIndex(None, Layout("default"), codec)  # type: ignore[arg-type]
    theirs = VisibilityIndex(None, Layout("default"), Codec())  # type: ignore[arg-type]
    summaries = [_full_summary(n) for n in range(3)]
    for s in summaries:
        key = ours.layout.status_key(s.workflow_id, s.run_id)
        body = codec.encode_summary(s)
        ours.wrote(key, body, s)
        ours._apply(ours.index, key, body)
        theirs._apply(theirs.index, key, body)
    assert codec.decoded == 0
    # the same index as a server that decoded the bytes
    assert {k: r.summary for k, r in ours.index.runs.items()} == {
        k: r.summary for k, r in theirs.index.runs.items()
    }
    assert not ours._wrote  # each forgotten once it came back


def test_other_bytes_under_a_key_written_here_are_decoded_and_checked() -> None:
    codec = _CountingCodec()
    vis = VisibilityIndex(None, Layout("default"), codec)  # type: ignore[arg-type]
    mine = _full_summary(1)
    key = vis.layout.status_key(mine.workflow_id, mine.run_id)
    vis.wrote(key, codec.encode_summary(mine), mine)
    other = evolve(mine, status=RunStatus.FAILED)
    vis._apply(vis.index, key, codec.encode_summary(other))  # another writer's entry
    assert codec.decoded == 1 and vis.index.runs[key].summary.status == RunStatus.FAILED
    vis._apply(vis.index, key, b"\x00not json")  # junk: refused, the run leaves the index
    assert codec.decoded == 2 and key not in vis.index.runs


def test_entries_written_here_are_kept_within_a_bound() -> None:
    vis = VisibilityIndex(None, Layout("default"), Codec())  # type: ignore[arg-type]
    s = _full_summary(1)
    for n in range(WROTE_KEEP + 10):
        vis.wrote(f"k{n}", b"{}", s)
    assert len(vis._wrote) == WROTE_KEEP and "k9" not in vis._wrote and "k10" in vis._wrote
