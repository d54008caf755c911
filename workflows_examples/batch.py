"""Fan-out / fan-in: process a batch of items in parallel, then combine the results."""

from __future__ import annotations

import durablefuture as df


def process_item(item: int) -> int:
    return item * item


def batch_workflow(items: list[int]):  # type: ignore[no-untyped-def]
    squares = yield df.all_of(*(df.activity(process_item, i) for i in items))
    return {"items": len(items), "sum_of_squares": sum(squares)}
