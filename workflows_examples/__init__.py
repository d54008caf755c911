"""Example workflows, runnable with ``df dev --run <name>`` (see README.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from workflows_examples.approval import approval_workflow, approve, notify_requester
from workflows_examples.batch import batch_workflow, process_item
from workflows_examples.cart import cart_workflow, charge_cart, shop
from workflows_examples.coordinator import coordinator_workflow, part_workflow
from workflows_examples.order import charge_credit_card, order_workflow, ship_package
from workflows_examples.quorum import quorum_workflow, two_reviewers
from workflows_examples.race import quote_workflow, request_quote
from workflows_examples.recovery import recovery_workflow, reserve_inventory
from workflows_examples.saga import (
    book_car,
    book_flight,
    book_hotel,
    cancel_car,
    cancel_flight,
    cancel_hotel,
    trip_workflow,
)

TASK_QUEUE = "examples"

WORKFLOWS: list[Callable[..., object]] = [
    order_workflow,
    recovery_workflow,
    trip_workflow,
    approval_workflow,
    batch_workflow,
    quorum_workflow,
    quote_workflow,
    coordinator_workflow,
    part_workflow,
    cart_workflow,
]
ACTIVITIES: list[Callable[..., object]] = [
    charge_credit_card,
    ship_package,
    reserve_inventory,
    book_flight,
    book_hotel,
    book_car,
    cancel_flight,
    cancel_hotel,
    cancel_car,
    notify_requester,
    process_item,
    request_quote,
    charge_cart,
]

Driver = Callable[[Any], Awaitable[None]]

EXAMPLES: dict[str, tuple[Callable[..., object], tuple[object, ...], Driver | None]] = {
    "order": (order_workflow, ("order-1", 42.0), None),
    "recovery": (recovery_workflow, ("order-2",), None),
    "saga": (trip_workflow, ("trip-1", True), None),
    "approval": (approval_workflow, ("req-1", 60.0), approve),
    "batch": (batch_workflow, (list(range(1, 101)),), None),
    "quorum": (quorum_workflow, ("req-2", 2, 600.0), two_reviewers),
    "race": (quote_workflow, ("widget", 30.0, 0.5), None),
    "coordinator": (coordinator_workflow, (3,), None),
    "cart": (cart_workflow, ("ann",), shop),
}
"""``df dev --run NAME`` starts EXAMPLES[NAME] = (workflow, arguments, driver); the driver, if
any, acts on the running workflow (e.g. sends the approval signal)."""

__all__ = ["ACTIVITIES", "EXAMPLES", "TASK_QUEUE", "WORKFLOWS"]
