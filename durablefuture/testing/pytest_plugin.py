"""A pytest plugin: the ``df_certify`` fixture and a ``--df-examples`` option.

Enable it in ``conftest.py`` with ``pytest_plugins = ["durablefuture.testing.pytest_plugin"]``::

    def test_order_survives_crashes(df_certify):
        df_certify(order_workflow, "o-1", 42.0, activities=[charge_credit_card, ship_package])

``pytest --df-examples 1000`` explores more schedules (a nightly job, say) without code changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from durablefuture.testing.certification import Certificate, certify

__all__ = ["df_certify", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--df-examples",
        type=int,
        default=None,
        help="schedules df_certify explores per workflow (default: certify's, 100)",
    )


@pytest.fixture
def df_certify(request: pytest.FixtureRequest) -> Callable[..., Certificate]:
    """``certify`` with the number of examples taken from ``--df-examples`` when given."""
    examples = request.config.getoption("--df-examples")

    def run(workflow: Callable[..., object], *args: object, **kwargs: Any) -> Certificate:
        if examples is not None:
            kwargs.setdefault("examples", examples)
        return certify(workflow, *args, **kwargs)

    return run
