"""Example workflows, runnable with ``df dev --run <name>`` (see README.md)."""

from __future__ import annotations

from collections.abc import Callable

from workflows_examples.order import charge_credit_card, order_workflow, ship_package
from workflows_examples.recovery import recovery_workflow, reserve_inventory

TASK_QUEUE = "examples"

WORKFLOWS: list[Callable[..., object]] = [order_workflow, recovery_workflow]
ACTIVITIES: list[Callable[..., object]] = [charge_credit_card, ship_package, reserve_inventory]

EXAMPLES: dict[str, tuple[Callable[..., object], tuple[object, ...]]] = {
    "order": (order_workflow, ("order-1", 42.0)),
    "recovery": (recovery_workflow, ("order-2",)),
}
"""``df dev --run NAME`` starts EXAMPLES[NAME] = (workflow, arguments)."""

__all__ = ["ACTIVITIES", "EXAMPLES", "TASK_QUEUE", "WORKFLOWS"]
