"""Random workflow shapes: a JSON "program" and one generator workflow that interprets it.

A program is a list of steps::

    {"op": "act", "v": 3}                          one activity
    {"op": "flaky", "fails": 2, "max": 3, "v": 1}  an activity failing its first 2 attempts,
                                                   retried up to 3 attempts in all
    {"op": "sleep", "s": 2.0}                      a durable timer
    {"op": "all" | "any", "items": [...]}          groups of the three above, nested
    {"op": "side"}                                 a side effect returning a fresh counter value
    {"op": "rand"}                                 df.workflow.random(), fed into later arguments
    {"op": "try", "body": [...]}                   try/except ActivityError around steps

Side effects are deliberately non-deterministic (a counter that moves each time the function
runs), so a replay that re-ran one instead of reading history would change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Simulation

Program = list[dict[str, Any]]


def _leaves(safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Leaf steps; ``safe`` flaky activities succeed within their attempts."""
    flaky = st.fixed_dictionaries(
        {
            "op": st.just("flaky"),
            "fails": st.integers(0, 3),
            "max": st.integers(1, 3),
            "v": st.integers(0, 9),
        }
    )
    if safe:
        flaky = flaky.map(lambda d: {**d, "max": max(d["max"], d["fails"] + 1)})
    return st.one_of(
        st.fixed_dictionaries({"op": st.just("act"), "v": st.integers(0, 9)}),
        flaky,
        st.fixed_dictionaries({"op": st.just("sleep"), "s": st.sampled_from([0.5, 1.0, 2.0, 5.0])}),
    )


def _steps(safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    groups = st.recursive(
        _leaves(safe),
        lambda inner: st.fixed_dictionaries(
            {
                "op": st.sampled_from(["all", "any"]),
                "items": st.lists(inner, min_size=1, max_size=4),
            }
        ),
        max_leaves=6,
    )
    return st.one_of(groups, st.just({"op": "side"}), st.just({"op": "rand"}))


programs: st.SearchStrategy[Program] = st.lists(
    st.one_of(
        _steps(safe=True),
        st.fixed_dictionaries(
            {"op": st.just("try"), "body": st.lists(_steps(safe=False), min_size=1, max_size=3)}
        ),
        _leaves(safe=False),
    ),
    min_size=2,
    max_size=8,
)
"""Programs whose failing activities sit inside ``try`` (a few still fail the workflow:
an uncaught failure is also a shape worth replaying)."""


def _options(step: dict[str, Any]) -> df.ActivityOptions:
    return df.ActivityOptions(
        start_to_close_timeout=10,
        retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=step["max"]),
    )


def make_environment() -> tuple[Callable[..., object], list[Callable[..., object]]]:
    """A fresh workflow and activities (their counters are per simulation)."""
    attempts: dict[str, int] = {}
    side_calls: list[int] = []

    @df.defn(name="echo")
    def echo(key: str, v: int, salt: float) -> list[Any]:
        return [key, v]

    @df.defn(name="flaky")
    def flaky(key: str, fails: int, v: int, salt: float) -> int:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] <= fails:
            raise df.ApplicationError(f"{key} attempt {attempts[key]}", type="Flaky")
        return v

    def next_side() -> int:
        side_calls.append(1)
        return len(side_calls)

    @df.defn(name="program")
    def program(steps: Program) -> Generator[Any, Any, Any]:
        acc: list[Any] = []
        state = {"salt": 0.0}

        def yieldable(step: dict[str, Any], key: str) -> Any:
            op = step["op"]
            if op == "act":
                return df.activity("echo", key, step["v"], state["salt"])
            if op == "flaky":
                return df.activity(
                    "flaky", key, step["fails"], step["v"], state["salt"], options=_options(step)
                )
            if op == "sleep":
                return df.sleep(step["s"])
            items = [yieldable(it, f"{key}.{j}") for j, it in enumerate(step["items"])]
            return df.all_of(*items) if op == "all" else df.any_of(*items)

        def run(steps: Program, path: str) -> Generator[Any, Any, None]:
            for i, step in enumerate(steps):
                key = f"{path}{i}"
                op = step["op"]
                if op == "try":
                    try:
                        yield from run(step["body"], f"{key}.")
                    except df.ActivityError as err:
                        acc.append(["caught", key, err.activity_name, err.attempt])
                elif op == "side":
                    acc.append(["side", (yield df.side_effect(next_side))])
                elif op == "rand":
                    state["salt"] = round(df.workflow.random(), 6)
                    acc.append(["rand", state["salt"]])
                else:
                    result = yield yieldable(step, key)
                    acc.append([op, result, df.workflow.now().timestamp()])

        yield from run(steps, "")
        return acc

    return program, [echo, flaky]


def new_simulation(program: Program, *, cache: bool = True) -> Simulation:
    wf, acts = make_environment()
    sim = Simulation([wf], acts, cache=cache, start_time=1000.0)
    sim.start("program", program, id="p")
    return sim


def outcome(sim: Simulation) -> tuple[str, Any]:
    """The run's status and result (or failure description)."""
    summary = sim.run_of("p").state.summary()
    if summary.failure is not None:
        return summary.status, summary.failure.describe()
    return summary.status, summary.result


def command_events(events: list[ev.Event]) -> list[ev.Event]:
    return [e for e in events if isinstance(e, ev.COMMAND_EVENTS + ev.TERMINAL_EVENTS)]
