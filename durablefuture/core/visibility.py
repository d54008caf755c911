"""The visibility index: every run's status entry in memory, with value indexes for queries.

A df-server keeps one :class:`RunIndex` per namespace, fed by a watch of the status bucket
(every put and delete, in order). A query reads only the runs its equality filters can match:
``f = v`` / ``f IN (...)`` among the query's top-level ANDs, on a built-in keyword field
(``WorkflowType``, ``ExecutionStatus``, ``TaskQueue``, ``WorkflowId``) or on a search attribute
whose values are all keywords, ints, bools or keyword lists, select the candidate runs from a
value index (the smallest such set, intersected with the others); the whole query is then
evaluated on each candidate. Without such a filter, every run is evaluated (in memory).

Pure: no I/O, no clock. The result is always what evaluating the query on every run would give
(a property test checks that against a brute-force filter).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from durablefuture.core.effects import RunSummary
from durablefuture.core.query import (
    DEFAULT_ORDER,
    And,
    Between,
    Compare,
    Expr,
    FieldValue,
    In,
    Query,
    SortPart,
    after_cursor,
    compile_where,
    equality_hints,
    sort_key,
    sort_part,
    top,
)
from durablefuture.core.search_attributes import row_values

__all__ = ["IndexedRun", "RunIndex"]

_BUILTIN_INDEXED: dict[str, Callable[[RunSummary], str]] = {
    "WorkflowType": lambda s: s.workflow_type,
    "ExecutionStatus": lambda s: s.status,
    "TaskQueue": lambda s: s.task_queue,
    "WorkflowId": lambda s: s.workflow_id,
}
_INDEXABLE_TYPES = frozenset({"keyword", "int", "bool", "keyword_list"})
_TIME_RANK = sort_part(datetime(2000, 1, 1, tzinfo=UTC))[0]
_STR_RANK = sort_part("")[0]
_WALK = 2000
"""A default-order page over more candidates than this walks the runs newest first instead
of heaping every candidate."""


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class IndexedRun:
    """One run as the index holds it: its status entry (without result and failure) and its
    search attributes as the evaluator reads them (a query row)."""

    __slots__ = ("summary", "values")

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        self.values = row_values(summary.search_attributes) if summary.search_attributes else None

    def get(self, field: str, default: FieldValue = None, /) -> FieldValue:
        s = self.summary
        if field == "StartTime":
            return _time(s.start_time)
        if field == "CloseTime":
            return _time(s.close_time)
        if field == "RunId":
            return s.run_id
        builtin = _BUILTIN_INDEXED.get(field)
        if builtin is not None:
            value: FieldValue = builtin(s)
            return value
        return default if self.values is None else self.values.get(field, default)

    def sort_part(self, field: str) -> SortPart:
        """``sort_part(self.get(field))`` without building datetimes."""
        s = self.summary
        if field == "StartTime":
            return (_TIME_RANK, s.start_time)
        if field == "CloseTime":
            return sort_part(None) if s.close_time is None else (_TIME_RANK, s.close_time)
        if field == "RunId":
            return (_STR_RANK, s.run_id)
        builtin = _BUILTIN_INDEXED.get(field)
        if builtin is not None:
            return (_STR_RANK, builtin(s))
        return sort_part(None if self.values is None else self.values.get(field))

    def newest_first(self, key: str) -> tuple[float, str, str, str]:
        """Where the run sits in the default order (newest start first, then run id, id)."""
        s = self.summary
        return (-s.start_time, s.run_id, s.workflow_id, key)


class RunIndex:
    """Runs by key (the status entry's key), with a value index per indexable field."""

    def __init__(self) -> None:
        self.runs: dict[str, IndexedRun] = {}
        # field -> value -> the keys of the runs with it (one key alone is kept as the string:
        # a set per workflow id, or per unique attribute value, would cost ~200 bytes a run)
        self._by: dict[str, dict[object, str | set[str]]] = {f: {} for f in _BUILTIN_INDEXED}
        self._unindexable: dict[str, int] = {}  # attribute -> runs with a non-indexable type
        self._newest: list[tuple[float, str, str, str]] = []  # every run, in the default order
        self.walk_above = _WALK

    def __len__(self) -> int:
        return len(self.runs)

    # ------------------------------------------------------------------ maintenance

    def _postings(self, run: IndexedRun) -> Iterator[tuple[str, object]]:
        s = run.summary
        for f, get in _BUILTIN_INDEXED.items():
            yield f, get(s)
        for name, a in s.search_attributes.items():
            if a.type not in _INDEXABLE_TYPES or a.value is None:
                continue
            if isinstance(a.value, list):
                for item in a.value:
                    yield name, item
            else:
                yield name, a.value

    def put(self, key: str, summary: RunSummary) -> None:
        """Add or replace the run stored under ``key``."""
        self.remove(key)
        run = IndexedRun(summary)
        self.runs[key] = run
        insort(self._newest, run.newest_first(key))
        for f, v in self._postings(run):
            values = self._by.setdefault(f, {})
            keys = values.get(v)
            if keys is None:
                values[v] = key
            elif isinstance(keys, str):
                if keys != key:
                    values[v] = {keys, key}
            else:
                keys.add(key)
        for name, a in summary.search_attributes.items():
            if a.type not in _INDEXABLE_TYPES:
                self._unindexable[name] = self._unindexable.get(name, 0) + 1

    def remove(self, key: str) -> None:
        """Forget the run stored under ``key`` (its status entry was deleted)."""
        run = self.runs.pop(key, None)
        if run is None:
            return
        place = run.newest_first(key)
        i = bisect_left(self._newest, place)
        if i < len(self._newest) and self._newest[i] == place:
            del self._newest[i]
        for f, v in self._postings(run):
            values = self._by.get(f)
            if values is None:
                continue
            keys = values.get(v)
            if keys == key:
                del values[v]
            elif isinstance(keys, set):
                keys.discard(key)
                if len(keys) == 1:
                    values[v] = next(iter(keys))
        for name, a in run.summary.search_attributes.items():
            if a.type not in _INDEXABLE_TYPES:
                left = self._unindexable.get(name, 0) - 1
                if left > 0:
                    self._unindexable[name] = left
                else:
                    self._unindexable.pop(name, None)

    # ------------------------------------------------------------------ reading

    def _candidates(self, where: Expr | None) -> tuple[set[str] | None, bool]:
        """The keys of the runs that may match (None: every run), and whether the value
        indexes alone decide the match."""
        hints = equality_hints(where)
        sets: list[set[str]] = []
        for f, values in hints.items():
            index = self._by.get(f)
            if f == "RunId" or f in self._unindexable or (index is None and f in _BUILTIN_INDEXED):
                continue
            per_value = [_as_set((index or {}).get(v)) for v in values]
            # one value: its set as it is (only read here); several: their union
            sets.append(per_value[0] if len(per_value) == 1 else set().union(*per_value))
        parts: tuple[Expr, ...] = (
            () if where is None else where.parts if isinstance(where, And) else (where,)
        )
        for p in parts:
            started = self._started_between(p)
            if started is not None:
                sets.append(started)
        if not sets:
            return None, where is None
        sets.sort(key=len)
        found = sets[0]
        for other in sets[1:]:
            found = found & other
        # covered: every top-level part is one of the hints used (so no evaluation is needed)
        covered = len(sets) == len(parts) and all(
            isinstance(p, Compare | In) and _plain(p) for p in parts
        )
        return found, covered

    def _started_between(self, p: Expr) -> set[str] | None:
        """The runs a ``StartTime`` range (``<``, ``<=``, ``>``, ``>=``, ``BETWEEN``) may match,
        from the newest-first list (a microsecond wider on each side: the query compares the
        times as datetimes, which hold microseconds), or None for any other part."""
        low = high = None
        if isinstance(p, Compare) and p.field == "StartTime" and isinstance(p.value, datetime):
            t = p.value.timestamp()
            if p.op in (">", ">="):
                low = t
            elif p.op in ("<", "<="):
                high = t
            else:
                return None
        elif (
            isinstance(p, Between)
            and p.field == "StartTime"
            and not p.negate
            and isinstance(p.low, datetime)
            and isinstance(p.high, datetime)
        ):
            low, high = p.low.timestamp(), p.high.timestamp()
        else:
            return None
        newest = self._newest  # ordered by -start: later starts first
        first = 0 if high is None else bisect_left(newest, (-high - 1e-6,))
        last = len(newest) if low is None else bisect_left(newest, (-low + 1e-6,))
        return {e[3] for e in newest[first:last]}

    def count(self, query: Query) -> int:
        """How many runs match ``query``."""
        found, covered = self._candidates(query.where)
        if covered:
            return len(self.runs) if found is None else len(found)
        runs = self.runs.values() if found is None else (self.runs[k] for k in found)
        test = compile_where(query.where)
        return sum(1 for r in runs if test(r))

    def page(
        self, query: Query, size: int, after: list[SortPart] | None = None
    ) -> tuple[list[RunSummary], list[SortPart] | None]:
        """Up to ``size`` matches in the query's order after ``after`` (a previous page's
        cursor), and the cursor of this page's last run if more may follow (else None)."""
        found, covered = self._candidates(query.where)
        test = (lambda _r: True) if covered else compile_where(query.where)
        default = not query.order_by or tuple(query.order_by) == DEFAULT_ORDER
        if default and (found is None or len(found) > self.walk_above):
            shown = self._walk(test, size + 1, found, after)
        else:
            rest = after_cursor(query.order_by, after) if after is not None else None
            runs = self.runs.values() if found is None else (self.runs[k] for k in found)
            rows = (r for r in runs if test(r) and (rest is None or rest(r)))
            shown = [r for r in top(rows, query.order_by, size + 1) if isinstance(r, IndexedRun)]
        more = len(shown) > size
        shown = shown[:size]
        cursor = sort_key(shown[-1], query.order_by) if more and shown else None
        return [r.summary for r in shown], cursor

    def _walk(
        self,
        test: Callable[[IndexedRun], bool],
        n: int,
        found: set[str] | None,
        after: list[SortPart] | None,
    ) -> list[IndexedRun]:
        """The first ``n`` matches in the default order, walking the runs newest first (it
        stops as soon as it has them: a broad query reads a page's worth of runs)."""
        start = 0
        if after is not None:
            # the cursor in the default order: (start time, run id, workflow id)
            (_, started), (_, run_id), (_, wid) = after
            place = (-float(started), str(run_id), str(wid), "\U0010ffff")
            start = bisect_right(self._newest, place)
        out: list[IndexedRun] = []
        newest = self._newest
        for i in range(start, len(newest)):
            key = newest[i][3]
            if found is not None and key not in found:
                continue
            run = self.runs[key]
            if test(run):
                out.append(run)
                if len(out) >= n:
                    break
        return out


def _as_set(keys: str | set[str] | None) -> set[str]:
    if keys is None:
        return set()
    return {keys} if isinstance(keys, str) else keys


def _plain(p: Compare | In) -> bool:
    """An equality whose index lookup is exact: string values only (a string equals only a
    keyword, or an item of a keyword list, which is what ``=`` means for one; a number could
    also find a bool under the same hash). Text and datetime attributes are never looked up."""
    if isinstance(p, Compare):
        return p.op == "=" and isinstance(p.value, str)
    return not p.negate and all(isinstance(v, str) for v in p.values)
