"""Where the payloads of an unstructured engine message are (see
:mod:`~durablefuture.codec.envelope`).

Payloads sit under the payload fields of engine messages (``args``, ``signal_args``,
``result``, ``value``, ``details``, ``heartbeat_details``), at any depth; user values
themselves are never walked. Every message a client or worker sends or reads with a payload
codec is walked once, so the walks below are written for speed: one pass, no helper calls per
node, and on the way in only the envelopes (not the plain values beside them) are collected.
"""

from __future__ import annotations

from typing import Any

from durablefuture.codec.decoded import ENVELOPE_KEY

__all__ = ["Slot", "envelope_slots", "payload_slots"]

Slot = tuple[Any, Any]
"""(container, key or index) of one payload."""

LIST_KEYS = frozenset({"args", "signal_args", "details", "heartbeat_details"})
ONE_KEYS = frozenset({"result", "value"})
PAYLOAD_KEYS = LIST_KEYS | ONE_KEYS


def _envelope(value: object) -> bool:
    return type(value) is dict and len(value) == 1 and ENVELOPE_KEY in value


def payload_slots(tree: object, skip_envelopes: bool = False) -> list[Slot]:
    """Where the payloads of an unstructured engine message are, as (container, key) pairs;
    with ``skip_envelopes``, those already encoded are left out."""
    slots: list[Slot] = []
    add = slots.append
    stack = [tree]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is list:
            for c in node:
                if type(c) is dict or type(c) is list:
                    push(c)
            continue
        if type(node) is not dict:
            continue
        for key, child in node.items():
            kind = type(child)
            if key in PAYLOAD_KEYS:
                if key in ONE_KEYS:
                    if child is not None and not (skip_envelopes and _envelope(child)):
                        add((node, key))
                elif kind is list:
                    for i, v in enumerate(child):
                        if not (skip_envelopes and _envelope(v)):
                            add((child, i))
                elif kind is dict:
                    push(child)
            elif kind is dict or kind is list:
                push(child)
    return slots


def envelope_slots(tree: object) -> list[Slot]:
    """The slots of :func:`payload_slots` that hold an envelope the codec decodes: not plain
    values, not references to payloads stored elsewhere (fetched first, see
    :mod:`~durablefuture.codec.claims`)."""
    slots: list[Slot] = []
    add = slots.append
    stack = [tree]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is list:
            for c in node:
                if type(c) is dict or type(c) is list:
                    push(c)
            continue
        if type(node) is not dict:
            continue
        for key, child in node.items():
            kind = type(child)
            if key in PAYLOAD_KEYS:
                if kind is dict:
                    if len(child) == 1 and ENVELOPE_KEY in child:
                        if key in ONE_KEYS and _decodable(child):
                            add((node, key))
                    elif key in LIST_KEYS:
                        push(child)
                elif kind is list and key in LIST_KEYS:
                    for i, v in enumerate(child):
                        if type(v) is dict and len(v) == 1 and ENVELOPE_KEY in v and _decodable(v):
                            add((child, i))
            elif kind is dict or kind is list:
                push(child)
    return slots


def _decodable(envelope: dict[str, Any]) -> bool:
    """Not a reference (a compact envelope never is one)."""
    inner = envelope[ENVELOPE_KEY]
    if type(inner) is str:
        return True
    return not (type(inner) is dict and type(meta := inner.get("m")) is dict and "claim" in meta)
