"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest

from tests.integration import orders


@pytest.fixture(autouse=True)
def _orders_reset() -> None:
    """The shared order activities (``orders.py``) start each test with nothing run and no
    pause."""
    orders.reset()
