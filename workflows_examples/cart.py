"""Shopping cart: items are added and removed by updates (each returns the cart), checkout is a
signal; the workflow then charges the customer."""

from __future__ import annotations

import durablefuture as df

PRICES = {"apple": 0.5, "pear": 0.75, "bread": 2.25}


def charge_cart(customer: str, total: float) -> str:
    return f"charged {customer} {total:.2f}"


def cart_workflow(customer: str):  # type: ignore[no-untyped-def]
    items: dict[str, int] = {}
    checked_out: list[bool] = []

    def check_add(sku: str, quantity: int = 1) -> None:
        # runs before anything is recorded: a rejected update leaves no trace in history
        if checked_out:
            raise ValueError("the cart is checked out")
        if sku not in PRICES:
            raise ValueError(f"unknown item {sku!r}")
        if not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"quantity must be a positive integer, got {quantity!r}")

    def add_item(sku: str, quantity: int = 1) -> dict[str, int]:
        items[sku] = items.get(sku, 0) + quantity
        return dict(items)

    def check_remove(sku: str) -> None:
        if sku not in items:
            raise ValueError(f"{sku!r} is not in the cart")

    def remove_item(sku: str) -> dict[str, int]:
        if sku not in items:  # another update removed it after this one was validated
            raise KeyError(f"{sku!r} is not in the cart")
        del items[sku]
        return dict(items)

    df.workflow.set_update_handler("add_item", add_item, validator=check_add)
    df.workflow.set_update_handler("remove_item", remove_item, validator=check_remove)
    df.workflow.set_query_handler("items", lambda: dict(items))
    df.workflow.set_signal_handler("checkout", lambda: checked_out.append(True))
    yield df.wait_condition(lambda: bool(checked_out))
    total = sum(PRICES[sku] * n for sku, n in items.items())
    receipt = yield df.activity(charge_cart, customer, total)
    return {"customer": customer, "items": items, "total": total, "receipt": receipt}


async def shop(handle: df.WorkflowHandle) -> None:
    """What ``df dev --run cart`` does while the cart is open: fill it, then check out."""
    await handle.update("add_item", "apple", 2, update_id="add-apples")
    await handle.update("add_item", "pear", update_id="add-pear")
    await handle.update("add_item", "bread", update_id="add-bread")
    await handle.update("remove_item", "pear", update_id="remove-pear")
    await handle.signal("checkout")
