"""The visibility query language: parse a query, test runs against it, order and page them.

Pure: no I/O. ``parse_query`` turns text into a :class:`Query`; ``matches`` tests a row (a run's
built-in fields and search attributes) against it; ``top`` and the cursor helpers order rows
and resume after a page.
"""

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
from durablefuture.core.query._eval import (
    DEFAULT_ORDER,
    FieldValue,
    Row,
    SortPart,
    Text,
    after_cursor,
    comparable,
    compile_where,
    cursor_of,
    equality_hints,
    evaluate,
    matches,
    ordered,
    sort_key,
    sort_part,
    top,
)
from durablefuture.core.query._parse import (
    MAX_QUERY_LENGTH,
    parse_datetime,
    parse_query,
    split_order_by,
)

__all__ = [
    "BUILTIN_FIELDS",
    "DATETIME_FIELDS",
    "DEFAULT_ORDER",
    "MAX_QUERY_LENGTH",
    "And",
    "Between",
    "Compare",
    "Expr",
    "FieldValue",
    "In",
    "IsNull",
    "Literal",
    "Not",
    "Or",
    "OrderKey",
    "Query",
    "Row",
    "SortPart",
    "StartsWith",
    "Text",
    "after_cursor",
    "comparable",
    "compile_where",
    "cursor_of",
    "equality_hints",
    "evaluate",
    "matches",
    "ordered",
    "parse_datetime",
    "parse_query",
    "sort_key",
    "sort_part",
    "split_order_by",
    "top",
]
