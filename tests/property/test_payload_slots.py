"""The payload walks of the codec find exactly the payloads of the plain definition: under the
payload fields of engine messages, at any depth, never inside a payload."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durablefuture.codec.envelope import ENVELOPE_KEY, is_claim, is_envelope
from durablefuture.codec.slots import envelope_slots, payload_slots

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

LIST_KEYS = ("args", "signal_args", "details", "heartbeat_details")
ONE_KEYS = ("result", "value")
KEYS = st.sampled_from([*LIST_KEYS, *ONE_KEYS, "task", "ev", "options", "m", "claim", "x"])

envelopes = st.sampled_from(
    [
        {ENVELOPE_KEY: "e=aes256gcm,k=k1;AAAA"},
        {ENVELOPE_KEY: {"m": {"encoding": "json", "key": "k1"}, "d": "AAAA"}},
        {ENVELOPE_KEY: {"m": {"encoding": "json", "claim": "ab", "size": "9"}, "d": ""}},
        {ENVELOPE_KEY: {"m": "not a map", "d": "AAAA"}},
        {ENVELOPE_KEY: 7},
        {ENVELOPE_KEY: "x", "other": 1},  # not an envelope: two keys
    ]
)
leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | envelopes
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=30,
)


def _reference(tree: Any) -> list[tuple[int, Any]]:
    """The payload slots by the plain recursive definition, as (id(container), key)."""
    out: list[tuple[int, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for c in node:
                walk(c)
        elif isinstance(node, dict):
            for key, child in node.items():
                if key in ONE_KEYS:
                    if child is not None:
                        out.append((id(node), key))
                elif key in LIST_KEYS and isinstance(child, list):
                    out.extend((id(child), i) for i in range(len(child)))
                else:
                    walk(child)

    walk(tree)
    return out


def _ids(slots: list[tuple[Any, Any]]) -> list[tuple[int, Any]]:
    return [(id(c), k) for c, k in slots]


@SETTINGS
@given(tree=st.dictionaries(KEYS, trees, max_size=5))
def test_payload_slots_are_those_of_the_definition(tree: dict[str, Any]) -> None:
    expected = _reference(tree)
    assert sorted(_ids(payload_slots(tree)), key=repr) == sorted(expected, key=repr)


@SETTINGS
@given(tree=st.dictionaries(KEYS, trees, max_size=5))
def test_encoding_skips_only_envelopes(tree: dict[str, Any]) -> None:
    found = payload_slots(tree, skip_envelopes=True)
    expected = [(c, k) for c, k in payload_slots(tree) if not is_envelope(c[k])]
    assert sorted(_ids(found), key=repr) == sorted(_ids(expected), key=repr)


@SETTINGS
@given(tree=st.dictionaries(KEYS, trees, max_size=5))
def test_envelope_slots_are_the_decodable_envelopes_among_the_payloads(
    tree: dict[str, Any],
) -> None:
    expected = [(c, k) for c, k in payload_slots(tree) if is_envelope(c[k]) and not is_claim(c[k])]
    assert sorted(_ids(envelope_slots(tree)), key=repr) == sorted(_ids(expected), key=repr)
