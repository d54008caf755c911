"""Large payloads by claim-check: stored in the namespace's object store, referenced from
messages.

When a message a client or worker sends is over :data:`CLAIM_THRESHOLD`, each payload in it
over the threshold (then the largest others, while the message is still too large) is put in
the object store and replaced by a reference envelope::

    {"$dfp": {"m": {"encoding": "json", ..., "claim": "<sha256>", "size": "20971520"}, "d": ""}}

The object holds the payload's bytes as the codec left them (ciphertext with AES-GCM), named by
their SHA-256, so storing the same bytes twice (a retried report) stores one object. Readers
(workers, clients) fetch and decode references before the values reach the core; the df-server
passes them through. A payload over :data:`MAX_CLAIM_BYTES` is refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

import orjson

from durablefuture.codec.envelope import (
    CLAIM,
    ENVELOPE_KEY,
    Payload,
    PayloadCodec,
    decode_values,
    is_claim,
    is_envelope,
    payload_slots,
    split_envelope,
)
from durablefuture.codec.payloads import MAX_PAYLOAD_BYTES
from durablefuture.core.errors import PayloadError
from durablefuture.core.types import JsonValue

__all__ = [
    "CLAIM_MARK",
    "CLAIM_THRESHOLD",
    "MAX_CLAIM_BYTES",
    "MESSAGE_BUDGET",
    "Claims",
    "PayloadStore",
    "claim_names",
    "has_claims",
    "is_claim",
]

CLAIM_THRESHOLD = 256 * 1024
"""A payload larger than this (encoded) travels by reference."""
MESSAGE_BUDGET = 768 * 1024
"""Payloads are moved out, largest first, until the message is at most this large (NATS
takes 1 MiB a message by default)."""
MAX_CLAIM_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
"""The largest payload stored by reference, as the codec left it (64 MiB of JSON, and room for
what an encryption codec adds)."""
SIZE = "size"
CLAIM_MARK = f'"{CLAIM}":'.encode()
"""In the bytes of every message that holds a reference."""
_CLAIM_NAME = re.compile(rb'"' + CLAIM.encode() + rb'":\s*"([0-9a-f]{64})"')


def claim_names(data: bytes) -> set[str]:
    """The objects a stored message (a history batch) refers to, read from its bytes."""
    if CLAIM_MARK not in data:
        return set()
    return {m.group(1).decode() for m in _CLAIM_NAME.finditer(data)}


RECENT_BYTES = 128 * 1024 * 1024
_PAYLOAD_ATTRS = ("args", "signal_args", "result", "value", "heartbeat_details")


class PayloadStore(Protocol):
    """Where claimed payloads live (the transport's object store bucket of the namespace)."""

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes: ...


def has_claims(obj: object) -> bool:
    """Whether an engine object (event, task, summary, ...) holds a reference anywhere."""
    for name in _PAYLOAD_ATTRS:
        value = getattr(obj, name, None)
        if isinstance(value, tuple | list):
            if any(is_claim(v) for v in value):
                return True
        elif is_claim(value):
            return True
    failure = getattr(obj, "failure", None)
    while failure is not None:
        if any(is_claim(v) for v in getattr(failure, "details", ())):
            return True
        failure = getattr(failure, "cause", None)
    return any(has_claims(c) for c in getattr(obj, "commands", ()))


class Claims:
    """Moves large payloads of outgoing messages to a store, and fetches them back."""

    def __init__(self, store: PayloadStore, threshold: int = CLAIM_THRESHOLD) -> None:
        self.store = store
        self.threshold = threshold
        self._recent: dict[str, bytes] = {}
        """What this process stored lately (a worker reads its own report's payloads back
        in the receipt, right away), at most :data:`RECENT_BYTES` in all."""

    def _remember(self, name: str, data: bytes) -> None:
        self._recent.pop(name, None)
        self._recent[name] = data
        total = sum(len(d) for d in self._recent.values())
        while total > RECENT_BYTES and len(self._recent) > 1:
            total -= len(self._recent.pop(next(iter(self._recent))))

    async def _fetch(self, name: str) -> bytes:
        data = self._recent.get(name)
        if data is None:
            data = await self.store.get(name)
            if hashlib.sha256(data).hexdigest() != name:
                # an object is named by its content: other bytes under its name were put there
                # by someone else, and are never handed to the code as the payload
                raise PayloadError(
                    f"payload {name[:16]}... does not hold the bytes it is named by: it was "
                    "replaced in the object store; refused"
                )
            if len(data) <= RECENT_BYTES // 4:
                self._remember(name, data)
        return data

    async def pack(self, tree: Any, size: int) -> None:
        """Replace, in place, the payloads of ``tree`` (an unstructured message ``size`` bytes
        long, payloads already encoded by the codec) that must travel by reference."""
        sized: list[tuple[int, Any, Any]] = []
        for container, key in payload_slots(tree):
            value = container[key]
            if isinstance(value, str | int | float | bool) or value is None:
                n = len(value) + 2 if isinstance(value, str) else 32
                if n <= 64:
                    continue
            if is_envelope(value):
                inner = value[ENVELOPE_KEY]
                text = inner.get("d") if isinstance(inner, dict) else inner
                n = len(text) * 3 // 4 if isinstance(text, str | bytes) else 0
            else:
                n = len(orjson.dumps(value))
            sized.append((n, container, key))
        sized.sort(key=lambda item: item[0], reverse=True)
        for n, container, key in sized:
            if n <= self.threshold and size <= MESSAGE_BUDGET:
                break
            container[key] = await self._claim(container[key])
            size -= n

    async def _claim(self, value: Any) -> JsonValue:
        if is_envelope(value):
            payload = split_envelope(value)
        else:
            payload = Payload(orjson.dumps(value), {"encoding": "json"})
        if len(payload.data) > MAX_CLAIM_BYTES:
            raise PayloadError(
                f"a payload is {len(payload.data):,} bytes once encoded; the most a payload may "
                f"take is {MAX_CLAIM_BYTES:,} bytes (stored by reference). Store larger data "
                "elsewhere and pass a reference"
            )
        name = hashlib.sha256(payload.data).hexdigest()
        await self.store.put(name, payload.data)
        self._remember(name, payload.data)
        meta = {**payload.metadata, CLAIM: name, SIZE: str(len(payload.data))}
        ref: JsonValue = {ENVELOPE_KEY: {"m": dict(meta), "d": ""}}
        return ref

    async def resolve(self, tree: Any, codec: PayloadCodec | None) -> None:
        """Fetch and decode, in place, every reference in ``tree`` (an unstructured message).
        Without ``codec``, only plain JSON payloads are decoded; the others stay envelopes."""
        slots = [(c, k) for c, k in payload_slots(tree) if is_claim(c[k])]
        for container, key in slots:
            inner = container[key][ENVELOPE_KEY]
            meta = {k: v for k, v in inner["m"].items() if k not in (CLAIM, SIZE)}
            data = await self._fetch(inner["m"][CLAIM])
            if meta == {"encoding": "json"}:
                container[key] = _loads(data)
            elif codec is not None:
                fetched: Any = {ENVELOPE_KEY: {"m": meta, "d": data}}
                [container[key]] = decode_values(codec, [fetched])


def _loads(data: bytes) -> JsonValue:
    try:
        out: JsonValue = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"a payload stored by reference is not JSON ({exc})") from None
    return out
