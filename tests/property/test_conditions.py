"""``df.wait_condition`` under hypothesis-chosen interleavings of signals, results and timers.

(i)  Replaying any prefix of the recorded history re-issues exactly the recorded commands and
     every command decided within the prefix (the same decisions, at the same points).
(ii) A worker that never caches (every workflow task replays from scratch) records the same
     history and result as one that does.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.testing import Simulation
from tests.property.programs import check_every_prefix, check_without_cache, drive_with_inputs

SETTINGS = settings(
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@df.defn(name="echo")
def echo(v: int) -> int:
    return v


@df.defn(name="gate")
def gate(plan: list[dict[str, Any]]) -> Generator[Any, Any, Any]:
    got: list[int] = []
    df.workflow.set_signal_handler("approve", got.append)
    out: list[Any] = []
    for step in plan:
        need = step["need"]
        if "act" in step:
            index, value = yield df.any_of(
                df.wait_condition(lambda n=need: len(got) >= n), df.activity(echo, step["act"])
            )
            out.append(["any", index, value, len(got)])
        else:
            ok = yield df.wait_condition(lambda n=need: len(got) >= n, timeout=step["timeout"])
            out.append(["wait", ok, len(got)])
    return out


steps = st.one_of(
    st.fixed_dictionaries(
        {"need": st.integers(0, 4), "timeout": st.one_of(st.none(), st.sampled_from([1.0, 5.0]))}
    ).map(lambda d: d if d["timeout"] is not None or d["need"] <= 3 else {**d, "timeout": 1.0}),
    st.fixed_dictionaries({"need": st.integers(0, 4), "act": st.integers(0, 9)}),
)
plans = st.lists(steps, min_size=1, max_size=5)


def drive(sim: Simulation, choices: list[int] | None, data: st.DataObject | None) -> list[int]:
    """Run to the end; each step either sends a signal or runs one piece of pending work.
    With ``choices`` the steps are replayed; otherwise hypothesis draws them."""

    def send(_: int, n: int) -> None:
        sim.signal("g", "approve", n)

    return drive_with_inputs(
        sim, "g", send, kinds=1, most=6, max_steps=500, choices=choices, data=data
    )


def new_sim(plan: list[dict[str, Any]], *, cache: bool = True) -> Simulation:
    sim = Simulation([gate], [echo], cache=cache, start_time=1000.0)
    sim.start("gate", plan, id="g")
    return sim


@SETTINGS
@given(plan=plans, data=st.data())
def test_replaying_any_prefix_makes_the_same_decisions(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    sim = new_sim(plan)
    drive(sim, None, data)
    check_every_prefix(sim, "g", gate)


@SETTINGS
@given(plan=plans, data=st.data())
def test_a_worker_without_cache_records_the_same_history(
    plan: list[dict[str, Any]], data: st.DataObject
) -> None:
    original, again = check_without_cache(
        lambda cache: new_sim(plan, cache=cache), drive, data, "g"
    )
    assert again.status("g") == original.status("g")
