"""NonDeterminismError: replaying history with changed code names the event, both sides and
the ``file:line`` of the offending yield."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core.errors import NonDeterminismError
from durablefuture.testing import Replayer
from tests.core.helpers import Driver, History, replay


def line_of(fn: Callable[..., object], text: str) -> str:
    """``file:line`` of the first line of ``fn`` containing ``text``."""
    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if text in line:
            return f"{inspect.getsourcefile(fn)}:{start + i}"
    raise AssertionError(f"{text!r} not in {fn.__name__}")


def original() -> Generator[Any, Any, Any]:
    a = yield df.activity("reserve", "sku-1", 2)
    b = yield df.activity("charge", a)
    return b


def recorded_history() -> History:
    """reserve -> charge -> completed, as the original code recorded it."""
    d = Driver(original)
    d.step()
    d.h.completed(1, 10)
    d.step()
    d.h.completed(2, "paid")
    d.step()
    return d.h


def test_the_original_code_replays_cleanly() -> None:
    h = recorded_history()
    assert [type(e).__name__ for e in h.events] == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    act = replay(original, h.events)
    assert act.commands == () and act.finished


def mismatch(fn: Callable[..., object], h: History | None = None) -> NonDeterminismError:
    with pytest.raises(NonDeterminismError) as info:
        replay(fn, (h or recorded_history()).events)
    return info.value


def test_changed_activity_name() -> None:
    def changed() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)
        b = yield df.activity("charge_card", a)
        return b

    err = mismatch(changed)
    assert err.event_id == 4
    assert err.seq == 2
    assert err.recorded == "activity 'charge' args=[10]"
    assert err.yielded == "activity 'charge_card' args=[10]"
    assert err.location == line_of(changed, "charge_card")
    text = str(err)
    for part in ("event 4", "'charge'", "'charge_card'", err.location, "patched"):
        assert part in text
    assert "=>   2" in text  # the side-by-side table points at the command


def test_changed_arguments() -> None:
    def changed() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 3)
        b = yield df.activity("charge", a)
        return b

    err = mismatch(changed)
    assert (err.event_id, err.seq) == (2, 1)
    assert err.recorded == "activity 'reserve' args=['sku-1', 2]"
    assert err.yielded == "activity 'reserve' args=['sku-1', 3]"
    assert err.location == line_of(changed, '"reserve"')


def test_changed_kind_of_command() -> None:
    def changed() -> Generator[Any, Any, Any]:
        yield df.sleep(5)
        return None

    err = mismatch(changed)
    assert (err.event_id, err.recorded, err.yielded) == (
        2,
        "activity 'reserve' args=['sku-1', 2]",
        "sleep 5s",
    )
    assert err.location == line_of(changed, "df.sleep")


def test_extra_command_where_history_recorded_the_end() -> None:
    def extra() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)
        b = yield df.activity("charge", a)
        yield df.activity("notify", b)
        return b

    err = mismatch(extra)
    assert err.event_id == 6
    assert err.recorded == "return (workflow completed)"
    assert err.yielded == "activity 'notify' args=['paid']"
    assert err.location == line_of(extra, '"notify"')
    assert "has not finished" in str(err)


def test_extra_command_inside_a_group() -> None:
    def extra() -> Generator[Any, Any, Any]:
        a, _ = yield df.all_of(df.activity("reserve", "sku-1", 2), df.activity("audit"))
        b = yield df.activity("charge", a)
        return b

    err = mismatch(extra)
    # command #2 is 'audit' now, but history recorded 'charge' there
    assert (err.event_id, err.seq) == (4, 2)
    assert err.yielded == "activity 'audit' args=[]"


def test_missing_command() -> None:
    def missing() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)
        return a

    err = mismatch(missing)
    assert err.event_id == 4
    assert err.recorded == "activity 'charge' args=[10]"
    assert err.yielded == "return (workflow completed)"
    assert err.location == line_of(missing, '"reserve"')  # the last yield it reached
    assert "issued only 1 command(s)" in str(err)


def test_missing_command_while_the_code_still_waits() -> None:
    h = History("wf")
    h.activity(1, "reserve", "sku-1", 2)
    h.signal("go")
    h.activity(2, "charge", 10)  # the recorded run acted on the signal

    def waits() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)  # the current code ignores the signal
        yield df.activity("charge", a)

    err = mismatch(waits, h)
    assert err.event_id == 4
    assert err.recorded == "activity 'charge' args=[10]"
    assert err.yielded is None  # nothing yielded for command #2
    assert err.location == line_of(waits, '"reserve"')
    assert f"waiting at {err.location}" in str(err)


def test_different_terminal() -> None:
    def raises() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)
        yield df.activity("charge", a)
        raise RuntimeError("changed my mind")

    err = mismatch(raises)
    assert err.event_id == 6
    assert err.recorded == "return (workflow completed)"
    assert err.yielded == "raise RuntimeError (workflow failed)"
    assert err.location == line_of(raises, '"charge"')


def test_a_result_for_a_command_the_code_never_issued() -> None:
    h = History("wf")
    h.activity(1, "a")
    h.activity(2, "b")
    h.completed(2, "x")

    def fewer() -> Generator[Any, Any, Any]:
        yield df.activity("a")

    # command #2 is recorded before its result, so the mismatch is found there
    err = mismatch(fewer, h)
    assert err.event_id == 3


def test_the_replayer_raises_on_mismatch_and_decodes_json_histories() -> None:
    from durablefuture.codec import default_codec

    h = recorded_history()

    def original_renamed() -> Generator[Any, Any, Any]:
        a = yield df.activity("reserve", "sku-1", 2)
        b = yield df.activity("charge", a)
        return b

    df.defn(original_renamed, name="original")
    raw = [default_codec().encode_event(e) for e in h.events]
    assert Replayer([original_renamed]).replay(raw).finished
    with pytest.raises(NonDeterminismError):
        Replayer([df.defn(lambda: (yield df.sleep(1)), name="original")]).replay(h.events)
    with pytest.raises(df.NotRegisteredError, match="'original'"):
        Replayer([]).replay(h.events)
    with pytest.raises(ValueError, match="starts with WorkflowStarted"):
        Replayer([original]).replay(h.events[1:])
