"""decode(encode(x)) == x for every event, command and input type, through real bytes."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durablefuture.codec import default_codec
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core import commands as cmd
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from tests.property.strategies import (
    COMMAND_CLASSES,
    EVENT_CLASSES,
    INPUT_CLASSES,
    for_class,
    json_values,
)

CODEC = default_codec()
SETTINGS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def test_every_union_member_is_covered() -> None:
    assert len(EVENT_CLASSES) == len(get_args(ev.Event)) >= 26
    assert len(COMMAND_CLASSES) == len(get_args(cmd.Command)) >= 11
    assert set(INPUT_CLASSES) >= set(get_args(inp.RunInput))


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_event_round_trip(cls: type, data: st.DataObject) -> None:
    event: Any = data.draw(for_class(cls))
    batch = CODEC.encode_batch("in-1", [event])
    assert CODEC.decode_batch(batch) == ("in-1", [event])
    assert CODEC.decode_event(CODEC.encode_event(event)) == event


@pytest.mark.parametrize("cls", COMMAND_CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_command_round_trip(cls: type, data: st.DataObject) -> None:
    command: Any = data.draw(for_class(cls))
    c = CODEC.converter
    assert c.structure(c.unstructure(command, cmd.Command), cmd.Command) == command
    env = InputEnvelope("wf", inp.CompleteWorkflowTask("run", 3, (command, command)))
    assert CODEC.decode_input(CODEC.encode_input(env)) == env


@pytest.mark.parametrize("cls", INPUT_CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_input_round_trip(cls: type, data: st.DataObject) -> None:
    message: Any = data.draw(for_class(cls))
    if isinstance(message, inp.StartWorkflowRequest):
        env = InputEnvelope(message.workflow_id, start=message)
    else:
        env = InputEnvelope("wf", message)
    assert CODEC.decode_input(CODEC.encode_input(env)) == env


@settings(deadline=None, max_examples=100)
@given(json_values)
def test_json_payloads_round_trip_unchanged(value: Any) -> None:
    payloads = CODEC.payloads
    assert payloads.to_payload(value) == value
    assert payloads.from_payload(payloads.to_payload(value)) == value


_PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 0.1, 1e16, 1e-7]),
    st.text(max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(_PLAIN)
def test_a_plain_value_is_the_payload_orjson_would_give_back(value: object) -> None:
    """The values that skip the orjson round trip are exactly what it would give back."""
    import orjson

    payloads = default_codec().payloads
    try:
        expected = orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError:  # (ints beyond 64 bits): refused either way
        with pytest.raises(Exception, match="cannot be encoded"):
            payloads.to_payload(value)
        return
    got = payloads.to_payload(value)
    assert type(got) is type(expected) and repr(got) == repr(expected)
    (arg,) = payloads.to_payloads((value,), "activity 'a'")
    assert type(arg) is type(expected) and repr(arg) == repr(expected)
