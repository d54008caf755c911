"""df.testing.certify: a correct workflow is certified; a crash-sensitive one is caught, with
a minimal schedule and the file:line of its commands."""

from __future__ import annotations

from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.testing import CertificationError, certify


def step(name: str, n: int) -> str:
    return f"{name}-{n}"


OPTS = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=3),
)


def five_steps(name: str):  # type: ignore[no-untyped-def]
    out = []
    for n in range(3):
        out.append((yield df.activity(step, name, n, options=OPTS)))
    both = yield df.all_of(
        df.activity(step, name, 3, options=OPTS), df.activity(step, name, 4, options=OPTS)
    )
    yield df.sleep(60)
    return [*out, *both]


def approval(request: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(step, request, 0, options=OPTS)
    decision = yield df.wait_signal("decision")
    return f"{first}:{decision}"


def crash_sensitive(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(step, name, 0, options=OPTS)
    if not df.workflow.is_replaying():  # a different path when a crash makes it replay
        second = yield df.activity(step, name, 1, options=OPTS)
    else:
        second = yield df.sleep(1)
    return [first, second]


def test_a_deterministic_workflow_is_certified() -> None:
    certificate = certify(five_steps, "o", activities=[step], examples=60, seed=1)
    assert certificate.examples == 60
    assert certificate.outcome == "completed: ['o-0', 'o-1', 'o-2', 'o-3', 'o-4']"


def test_signals_at_any_point_give_the_same_end() -> None:
    certificate = certify(
        approval, "r", activities=[step], signals=[("decision", ["yes"])], examples=40, seed=2
    )
    assert certificate.outcome == "completed: 'r-0:yes'"


def test_a_workflow_that_differs_on_replay_is_caught_with_a_minimal_schedule() -> None:
    with pytest.raises(CertificationError) as info:
        certify(crash_sensitive, "x", activities=[step], examples=100, seed=3)
    text = str(info.value)
    assert "worker crash" in text  # the schedule names the crash that exposed it
    assert "test_certify.py:" in text  # and where the commands were issued
    assert "schedule:" in text and "history:" in text


def test_the_pytest_fixture_certifies(df_certify) -> None:  # type: ignore[no-untyped-def]
    certificate = df_certify(five_steps, "f", activities=[step], examples=10, seed=4)
    assert certificate.outcome.startswith("completed: ['f-0'")
