"""Hypothesis strategies for every wire type, derived from the attrs classes' type hints.

Each attrs class is built with ``st.builds`` and a strategy per field chosen from the field's
resolved type hint, so a field added to an event later is covered without touching this file
(an unknown hint fails loudly instead of being skipped).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, get_args, get_origin

import attrs
from hypothesis import strategies as st

from durablefuture.codec.converter import _is_json_value
from durablefuture.codec.validate import DURATION_FIELDS, TIMESTAMP_FIELDS
from durablefuture.core import commands as cmd
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, Backoff, RetryPolicy
from durablefuture.core.search_attributes import SearchAttribute

EVENT_CLASSES: tuple[type, ...] = get_args(ev.Event)
COMMAND_CLASSES: tuple[type, ...] = get_args(cmd.Command)
INPUT_CLASSES: tuple[type, ...] = (*get_args(inp.RunInput), inp.StartWorkflowRequest)

INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SMALL_TEXT = st.text(max_size=12)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SMALL_TEXT, inner, max_size=4),
    max_leaves=12,
)
"""Any value JSON can carry (lists, not tuples, inside: that is how payloads come back)."""

failures: st.SearchStrategy[Failure] = st.deferred(
    lambda: st.builds(
        Failure,
        message=st.text(max_size=30),
        type=SMALL_TEXT,
        kind=st.sampled_from(["application", "activity", "timeout", "cancelled", "server"]),
        stack=st.text(max_size=40),
        non_retryable=st.booleans(),
        details=st.lists(json_values, max_size=3).map(tuple),
        type_hierarchy=st.lists(SMALL_TEXT, max_size=3).map(tuple),
        timeout_type=st.none() | SMALL_TEXT,
        next_retry_delay=st.none() | st.floats(min_value=0, max_value=1e6),
        cause=st.none() | failures,
    )
)

POSITIVE = st.floats(min_value=0.001, max_value=1e6)


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    backoff = draw(st.sampled_from(Backoff))
    initial = draw(POSITIVE)
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=draw(st.floats(min_value=1, max_value=10)),
        maximum_interval=draw(st.none() | st.floats(min_value=initial, max_value=2e6)),
        maximum_attempts=draw(st.integers(0, 100)),
        backoff=backoff,
        non_retryable_error_types=tuple(draw(st.lists(SMALL_TEXT, max_size=3))),
        jitter=draw(st.floats(min_value=0, max_value=1)),
    )


activity_options = st.builds(
    ActivityOptions,
    task_queue=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    schedule_to_close_timeout=st.none() | POSITIVE,
    start_to_close_timeout=st.none() | POSITIVE,
    schedule_to_start_timeout=st.none() | POSITIVE,
    heartbeat_timeout=st.none() | POSITIVE,
    retry_policy=st.none() | retry_policies(),
)


search_attribute_values: st.SearchStrategy[SearchAttribute] = st.one_of(
    st.builds(SearchAttribute, st.just("keyword"), st.text(max_size=20)),
    st.builds(SearchAttribute, st.just("text"), st.text(max_size=20)),
    st.builds(SearchAttribute, st.just("int"), st.integers(-(2**63), 2**63 - 1)),
    st.builds(SearchAttribute, st.just("float"), st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(SearchAttribute, st.just("bool"), st.booleans()),
    st.builds(SearchAttribute, st.just("datetime"), st.just("2026-01-02T03:04:05+00:00")),
    st.builds(SearchAttribute, st.just("keyword_list"), st.lists(st.text(max_size=8), max_size=3)),
    st.builds(SearchAttribute, st.just("keyword"), st.none()),
)


def _for_hint(hint: Any) -> st.SearchStrategy[Any]:
    if _is_json_value(hint):
        return json_values
    if hint is Failure:
        return failures
    if hint is ActivityOptions:
        return activity_options
    if hint is RetryPolicy:
        return retry_policies()
    if hint is SearchAttribute:
        return search_attribute_values
    if hint is int:
        return INTS
    if hint is float:
        return FLOATS
    if hint is str:
        return st.text(max_size=20)
    if hint is bool:
        return st.booleans()
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    if isinstance(hint, type) and attrs.has(hint):
        return for_class(hint)
    if hint == cmd.Command:
        return st.one_of([for_class(c) for c in COMMAND_CLASSES])
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_for_hint(a) for a in get_args(hint)])
    if hint is type(None):
        return st.none()
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_for_hint(args[0]), max_size=3).map(tuple)
    if origin is dict:
        key, value = get_args(hint)
        return st.dictionaries(_for_hint(key), _for_hint(value), max_size=3)
    raise TypeError(f"no strategy for type hint {hint!r}: teach tests/property/strategies.py")


# Ids and names have bounds on the wire (durablefuture/codec/validate.py): generate valid ones.
RUN_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(("run_id", "child_run_id", "new_run_id"), RUN_IDS),
    **dict.fromkeys(("continued_from", "first_run_id"), st.just("") | RUN_IDS),
    **dict.fromkeys(
        (
            "workflow_id",
            "child_workflow_id",
            "workflow_type",
            "name",
            "signal_name",
            "activity_type",
            "request_id",
            "update_id",
        ),
        PRINTABLE,
    ),
    **dict.fromkeys(("worker", "chain_request_id"), st.just("") | PRINTABLE),
    "task_queue": st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    "key": st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    **dict.fromkeys(DURATION_FIELDS, st.floats(min_value=0, max_value=1e9)),
    **dict.fromkeys(TIMESTAMP_FIELDS, st.floats(min_value=0, max_value=4e9)),
    "search_attributes": st.dictionaries(
        st.from_regex(r"[a-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
        search_attribute_values,
        max_size=3,
    ),
    "memo": st.dictionaries(PRINTABLE, json_values, max_size=3),
}


def _for_field(name: str, hint: Any) -> st.SearchStrategy[Any]:
    special = _FIELD_STRATEGIES.get(name)
    if special is None:
        return _for_hint(hint)
    if get_origin(hint) in (typing.Union, types.UnionType) and type(None) in get_args(hint):
        return st.none() | special
    return special


_CACHE: dict[type, st.SearchStrategy[Any]] = {}


def for_class(cls: type) -> st.SearchStrategy[Any]:
    """``st.builds(cls, ...)`` with a strategy for every field (defaults included)."""
    if cls not in _CACHE:
        hints = typing.get_type_hints(cls)
        fields = {
            f.name: _for_field(f.name, hints[f.name])
            for f in attrs.fields(cls)
            if f.init and f.name in hints
        }
        _CACHE[cls] = st.builds(cls, **fields)
    return _CACHE[cls]
