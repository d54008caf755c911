"""Payload codecs: the user's transformation of every payload (encryption, compression).

A user payload (an argument, a result, a signal's or query's arguments, a query's answer, a
heartbeat's or an error's details) is a JSON value. With a :class:`PayloadCodec` configured,
clients and workers turn each one into a :class:`Payload` (its JSON bytes and metadata), run the
codec over them and store the result as an *envelope* in its place::

    {"$dfp": {"m": {"encoding": "json", "encryption": "aes256gcm", "key": "k1"}, "d": "<base64>"}}

The df-server never decodes envelopes: it stores and forwards them as any other JSON value.
Clients and workers decode them when they read messages, so the core only sees plain values
(replay compares what a workflow yields with what history recorded, in the clear).

Envelopes replace values only under the payload fields of engine messages (``args``,
``signal_args``, ``result``, ``value``, ``details``, ``heartbeat_details``): user values
themselves are never walked.
"""

from __future__ import annotations

import binascii
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson
from attrs import field, frozen

from durablefuture.core.errors import PayloadError
from durablefuture.core.types import JsonValue

__all__ = [
    "CLAIM",
    "ENVELOPE_KEY",
    "CodecChain",
    "DecodedCache",
    "Payload",
    "PayloadCodec",
    "as_codec",
    "describe_envelope",
    "is_claim",
    "is_envelope",
    "payload_slots",
    "show_envelopes",
    "split_envelope",
]

ENVELOPE_KEY = "$dfp"
CLAIM = "claim"
"""Metadata key of a payload stored by reference (see :mod:`durablefuture.codec.claims`)."""
_LIST_KEYS = frozenset({"args", "signal_args", "details", "heartbeat_details"})
_ONE_KEYS = frozenset({"result", "value"})


def _metadata(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@frozen
class Payload:
    """One encoded payload: bytes and string metadata (what encoded it, which key)."""

    data: bytes
    metadata: dict[str, str] = field(factory=dict, converter=_metadata)


@runtime_checkable
class PayloadCodec(Protocol):
    """Transforms payloads on their way to the store and back.

    ``encode`` and ``decode`` take and return lists of the same length. ``decode`` must pass
    through, unchanged, any payload whose metadata shows this codec did not encode it: runs
    written before the codec was configured stay readable.
    """

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]: ...

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]: ...


class CodecChain:
    """Several codecs as one: encode through them in order, decode in reverse order.

    ``CodecChain(Zlib(), AesGcm(keys))`` compresses, then encrypts.
    """

    def __init__(self, *codecs: PayloadCodec) -> None:
        self.codecs = tuple(codecs)

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = list(payloads)
        for codec in self.codecs:
            out = codec.encode(out)
        return out

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = list(payloads)
        for codec in reversed(self.codecs):
            out = codec.decode(out)
        return out


def as_codec(codec: PayloadCodec | Sequence[PayloadCodec] | None) -> PayloadCodec | None:
    """A codec, a list of codecs (chained) or None, as one codec or None."""
    if codec is None:
        return None
    if isinstance(codec, Sequence):
        return CodecChain(*codec) if codec else None
    if not isinstance(codec, PayloadCodec):
        raise TypeError(
            f"a payload codec needs encode() and decode() methods; got {type(codec).__name__}"
        )
    return codec


# ------------------------------------------------------------------ envelopes


def is_envelope(value: object) -> bool:
    return type(value) is dict and len(value) == 1 and ENVELOPE_KEY in value


def is_claim(value: object) -> bool:
    """An envelope that refers to a payload stored by reference."""
    return is_envelope(value) and CLAIM in value[ENVELOPE_KEY].get("m", ())  # type: ignore[index]


def describe_envelope(value: object) -> str:
    """``encrypted (key k1)``, ``compressed (zlib)`` or ``encoded``: what a reader without
    the codec can say of an envelope."""
    inner = value.get(ENVELOPE_KEY) if isinstance(value, dict) else None
    meta = inner.get("m") if isinstance(inner, dict) else None
    if not isinstance(meta, dict):
        return "encoded"
    if "encryption" in meta:
        text = f"encrypted (key {meta.get('key', '?')})"
    elif "compression" in meta:
        text = f"compressed ({meta['compression']})"
    else:
        text = "encoded"
    if CLAIM in meta:
        text += f", stored by reference ({meta.get('size', '?')} bytes)"
    return text


def _to_envelope(payload: Payload) -> dict[str, Any]:
    data = binascii.b2a_base64(payload.data, newline=False).decode()
    return {ENVELOPE_KEY: {"m": dict(payload.metadata), "d": data}}


def split_envelope(value: dict[str, Any]) -> Payload:
    inner = value[ENVELOPE_KEY]
    try:
        meta = inner["m"]
        raw = inner["d"]  # bytes once fetched from the store
        data = raw if isinstance(raw, bytes) else binascii.a2b_base64(raw, strict_mode=True)
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise TypeError("metadata is not a map of strings")
    except (KeyError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise PayloadError(f"a payload envelope is malformed ({exc})") from None
    return Payload(data, meta)


def encode_values(
    codec: PayloadCodec, values: Sequence[JsonValue], cache: DecodedCache | None = None
) -> list[JsonValue]:
    """``values`` as envelopes (one batch through ``codec``).

    With ``cache``, each envelope's plaintext is remembered under it: the process that wrote a
    payload reads it back without decoding it (a worker reads its own reports in the receipts
    and the next workflow task of the run)."""
    if not values:
        return list(values)
    plain = [Payload(orjson.dumps(v), {"encoding": "json"}) for v in values]
    encoded = codec.encode(plain)
    if len(encoded) != len(plain):
        raise PayloadError(f"payload codec {type(codec).__name__} changed the number of payloads")
    out: list[JsonValue] = []
    for before, after in zip(plain, encoded, strict=True):
        envelope = _to_envelope(after)
        if cache is not None:
            key = cache.key(envelope)
            if key is not None:
                cache.put(key, before.data)
        out.append(envelope)
    return out


class DecodedCache:
    """The plaintexts of small envelopes decoded lately, by envelope (ciphertext and metadata).

    A workflow worker reads the same payloads again and again (each workflow task carries the
    run's history); this spares decoding them each time. Only what the codec decoded is kept,
    under exactly the envelope it came from, so an altered envelope is never a hit; values are
    kept as JSON bytes and parsed for each reader (they may change what they get).
    """

    def __init__(self, budget: int = 8 * 1024 * 1024, largest: int = 16 * 1024) -> None:
        self.budget = budget
        self.largest = largest
        self._entries: OrderedDict[str, tuple[dict[str, Any], bytes]] = OrderedDict()
        """Envelope data -> (its metadata, the plaintext): a hit needs both to match."""
        self._bytes = 0

    def key(self, envelope: Any) -> tuple[str, dict[str, Any]] | None:
        """The envelope's data and metadata, if it is small enough to be kept."""
        inner = envelope[ENVELOPE_KEY]
        data, meta = inner.get("d"), inner.get("m")
        if type(data) is not str or len(data) > self.largest or type(meta) is not dict:
            return None
        return data, meta

    def get(self, key: tuple[str, dict[str, Any]]) -> bytes | None:
        """The plaintext of exactly this data under exactly this metadata, if kept."""
        entry = self._entries.get(key[0])
        if entry is None or entry[0] != key[1]:
            return None
        self._entries.move_to_end(key[0])
        return entry[1]

    def put(self, key: tuple[str, dict[str, Any]], plain: bytes) -> None:
        data, meta = key
        if data in self._entries:
            return
        self._entries[data] = (dict(meta), plain)
        self._bytes += len(plain) + len(data)
        while self._bytes > self.budget and self._entries:
            old, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped) + len(old)


def decode_values(
    codec: PayloadCodec, values: Sequence[JsonValue], cache: DecodedCache | None = None
) -> list[JsonValue]:
    """``values`` with every envelope decoded (plain values pass through)."""
    out = list(values)
    at: list[int] = []
    keys: list[tuple[str, dict[str, Any]] | None] = []
    for i, v in enumerate(values):
        if not is_envelope(v):
            continue
        key = cache.key(v) if cache is not None else None
        plain = cache.get(key) if cache is not None and key is not None else None
        if plain is not None:
            out[i] = orjson.loads(plain)
        else:
            at.append(i)
            keys.append(key)
    if not at:
        return out
    decoded = codec.decode([split_envelope(values[i]) for i in at])  # type: ignore[arg-type]
    for i, key, payload in zip(at, keys, decoded, strict=True):
        if payload.metadata.get("encoding") != "json":
            raise PayloadError(
                f"a payload is still {describe_envelope(_to_envelope(payload))} after the "
                "configured codec decoded it: configure the codec (and key) that wrote it"
            )
        try:
            out[i] = orjson.loads(payload.data)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"a decoded payload is not JSON ({exc})") from None
        if cache is not None and key is not None:
            cache.put(key, payload.data)
    return out


# ------------------------------------------------------------------ message trees

_Slot = tuple[Any, Any]  # (container, key or index)
_CONTAINERS = (dict, list)


def payload_slots(tree: object, skip_envelopes: bool = False) -> list[_Slot]:
    """Where the payloads of an unstructured engine message are, as (container, key) pairs."""
    slots: list[_Slot] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, child in node.items():
            if key in _LIST_KEYS and isinstance(child, list):
                slots.extend(
                    (child, i)
                    for i, v in enumerate(child)
                    if not (skip_envelopes and is_envelope(v))
                )
            elif key in _ONE_KEYS:
                if child is not None and not (skip_envelopes and is_envelope(child)):
                    slots.append((node, key))
            elif isinstance(child, _CONTAINERS):
                stack.append(child)
    return slots


def transform_tree(
    tree: object, codec: PayloadCodec, encode: bool, cache: DecodedCache | None = None
) -> None:
    """Encode (or decode) in place every payload of an unstructured engine message."""
    if encode:
        slots = payload_slots(tree, skip_envelopes=True)
        if slots:
            _replace(slots, encode_values(codec, [c[k] for c, k in slots], cache))
        return
    slots = [
        (c, k)
        for c, k in payload_slots(tree)
        if is_envelope(v := c[k]) and CLAIM not in v[ENVELOPE_KEY].get("m", ())
    ]
    if slots:
        _replace(slots, decode_values(codec, [c[k] for c, k in slots], cache))


def show_envelopes(tree: Any) -> Any:
    """A copy of ``tree`` (any JSON value) with each envelope in it as text saying what it is
    (``encrypted (key k1)``): for displays without the codec."""
    if is_envelope(tree):
        return describe_envelope(tree)
    if isinstance(tree, dict):
        return {k: show_envelopes(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [show_envelopes(v) for v in tree]
    return tree


def _replace(slots: list[_Slot], values: list[JsonValue]) -> None:
    for (container, key), value in zip(slots, values, strict=True):
        container[key] = value
