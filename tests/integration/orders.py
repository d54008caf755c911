"""The order workflow and its activities that the eager activity and eager start tests share
(run by in-process workers, under the names ``order``, ``charge`` and ``ship``).

Each activity notes in ``ran`` that it ran, then takes ``PAUSE[name]`` seconds (none unless a
test sets it). ``tests/integration/conftest.py`` clears both before every test.
"""

from __future__ import annotations

import asyncio

import durablefuture as df

__all__ = [
    "OPTS",
    "PAUSE",
    "charge",
    "one_charge",
    "order",
    "ran",
    "reset",
    "ship",
    "wait_then_charge",
]

OPTS = df.ActivityOptions(start_to_close_timeout=30)
ran: list[str] = []
PAUSE: dict[str, float] = {}


def reset() -> None:
    """No activity ran yet, none pauses."""
    ran.clear()
    PAUSE.clear()


async def _ran(name: str, order_id: str) -> None:
    ran.append(f"{name} {order_id}")
    await asyncio.sleep(PAUSE.get(name, 0.0))


async def charge(order_id: str) -> str:
    await _ran("charge", order_id)
    return f"charged {order_id}"


async def ship(order_id: str) -> str:
    await _ran("ship", order_id)
    return f"shipped {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    s = yield df.activity(ship, order_id, options=OPTS)
    return [c, s]


def one_charge(order_id: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(charge, order_id, options=OPTS))


def wait_then_charge(order_id: str):  # type: ignore[no-untyped-def]
    go = yield df.wait_signal("go")
    c = yield df.activity(charge, order_id, options=OPTS)
    return f"{c} {go}"
