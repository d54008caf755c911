"""The order example: charge a credit card, then ship the package."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import durablefuture as df


def charge_credit_card(order_id: str, amount: float) -> dict[str, object]:
    """A sync activity (runs in the worker's thread pool)."""
    return {"order_id": order_id, "amount": amount, "status": "charged"}


async def ship_package(order_id: str) -> str:
    """An async activity (runs on the worker's event loop)."""
    await asyncio.sleep(0)
    return f"TRACK-{order_id.upper()}"


def order_workflow(order_id: str, amount: float):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=df.RetryPolicy(maximum_attempts=3),
    )
    charge = yield df.activity(charge_credit_card, order_id, amount, options=opts)
    tracking = yield df.activity(ship_package, order_id, options=opts)
    return {"charge": charge, "tracking": tracking}
