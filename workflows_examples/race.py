"""Race: ask for a quote, but give up after a deadline; the losing request is cancelled.

``df.any_of`` cancels the commands it started that did not win (``cancel_losers=True``, the
default), so the quote activity, an async function, gets ``asyncio.CancelledError`` at its
``await`` instead of running on for nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import durablefuture as df

QUOTE = df.ActivityOptions(start_to_close_timeout=timedelta(minutes=1))


async def request_quote(item: str, seconds: float) -> float:
    """A slow supplier: answers after ``seconds``."""
    await asyncio.sleep(seconds)
    return 42.0


def quote_workflow(item: str, supplier_seconds: float = 30.0, deadline_seconds: float = 0.5):  # type: ignore[no-untyped-def]
    index, quote = yield df.any_of(
        df.activity(request_quote, item, supplier_seconds, options=QUOTE),
        df.sleep(timedelta(seconds=deadline_seconds)),
    )
    if index == 1:
        return {"item": item, "quote": None, "outcome": "no quote in time; request cancelled"}
    return {"item": item, "quote": quote, "outcome": "quoted"}
