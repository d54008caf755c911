"""The recovery example: an activity that fails its first attempts, retried with backoff."""

from __future__ import annotations

from datetime import timedelta

import durablefuture as df


def reserve_inventory(order_id: str) -> str:
    """Fails on attempts 1 and 2 (a flaky dependency), succeeds on attempt 3."""
    attempt = df.activity_info().attempt
    if attempt < 3:
        raise df.ApplicationError(f"inventory service unavailable (attempt {attempt})")
    return f"reserved:{order_id}:attempt-{attempt}"


def recovery_workflow(order_id: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=df.RetryPolicy(
            initial_interval=timedelta(milliseconds=200), maximum_attempts=5
        ),
    )
    reservation = yield df.activity(reserve_inventory, order_id, options=opts)
    return {"order_id": order_id, "reservation": reservation}
