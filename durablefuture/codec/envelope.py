"""Payload codecs: the user's transformation of every payload (encryption, compression).

A user payload (an argument, a result, a signal's or query's arguments, a query's answer, a
heartbeat's or an error's details) is a JSON value. With a :class:`PayloadCodec` configured,
clients and workers turn each one into a :class:`Payload` (its JSON bytes and metadata), run the
codec over them and store the result as an *envelope* in its place::

    {"$dfp": {"m": {"encoding": "json", "encryption": "aes256gcm", "key": "k1"}, "d": "<base64>"}}

The compact form (envelope version 2) holds the same metadata and bytes in one string, the
metadata first (``encoding=json`` implied, known names shortened: ``e`` encryption, ``k`` key,
``z`` compression, ``c`` encoding; ``*g`` for ``encryption=aes256gcm``; names and values
percent-escaped), then ``;`` and the base64::

    {"$dfp": "*g,k=k1;<base64>"}

(``e=aes256gcm,k=k1;<base64>``, as the first compact envelopes were written, is read as well.)
About 60 bytes smaller per payload, and one JSON string instead of three objects for every
process that parses the message (the df-server too). The AES-GCM short cut writes it; every
reader reads both forms (payloads written before stay readable).

The df-server never decodes envelopes: it stores and forwards them as any other JSON value.
Clients and workers decode them when they read messages, so the core only sees plain values
(replay compares what a workflow yields with what history recorded, in the clear).

Envelopes replace values only under the payload fields of engine messages (``args``,
``signal_args``, ``result``, ``value``, ``details``, ``heartbeat_details``): user values
themselves are never walked.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson
from attrs import field, frozen

from durablefuture.codec.compact_meta import meta_text, parse_meta
from durablefuture.codec.decoded import COMPACT as _COMPACT
from durablefuture.codec.decoded import ENVELOPE_KEY, DecodedCache
from durablefuture.codec.slots import Slot, envelope_slots, payload_slots
from durablefuture.core.errors import PayloadError
from durablefuture.core.types import JsonValue

__all__ = [
    "CLAIM",
    "ENVELOPE_KEY",
    "CodecChain",
    "DecodedCache",
    "JsonCipher",
    "Payload",
    "PayloadCodec",
    "as_codec",
    "describe_envelope",
    "is_claim",
    "is_envelope",
    "json_cipher",
    "meta_text",
    "parse_meta",
    "payload_slots",
    "show_envelopes",
    "split_envelope",
]

CLAIM = "claim"
"""Metadata key of a payload stored by reference (see :mod:`durablefuture.codec.claims`)."""


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

    def json_cipher(self) -> JsonCipher | None:
        """A short cut when each codec in the chain offers one (not for subclasses)."""
        if type(self) is not CodecChain or not self.codecs:
            return None
        ciphers = [json_cipher(c) for c in self.codecs]
        if any(c is None for c in ciphers):
            return None
        return _ChainCipher(ciphers)  # type: ignore[arg-type]


_JSON_META = {"encoding": "json"}


class _ChainCipher:
    """The short cut of a chain: every codec but the last passes the payloads through
    unchanged (a :class:`~durablefuture.codecs.Zlib` leaves small payloads as they are), the
    last one encodes them."""

    def __init__(self, ciphers: list[JsonCipher]) -> None:
        self.ciphers = ciphers
        self.compact = ciphers[-1].compact

    def seal_json(self, datas: Sequence[bytes]) -> tuple[dict[str, str], list[bytes]] | None:
        *first, last = self.ciphers
        for cipher in first:
            sealed = cipher.seal_json(datas)
            if sealed is None or sealed[0] != _JSON_META or sealed[1] != list(datas):
                return None
        return last.seal_json(datas)

    def open_json(self, meta: Mapping[str, Any], data: bytes) -> bytes | None:
        *first, last = self.ciphers
        plain = last.open_json(meta, data)
        for cipher in reversed(first):
            if plain is None:
                return None
            plain = cipher.open_json(_JSON_META, plain)
        return plain


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
    if not is_envelope(value):
        return False
    inner = value[ENVELOPE_KEY]  # type: ignore[index]
    return type(inner) is dict and type(meta := inner.get("m")) is dict and CLAIM in meta


def describe_envelope(value: object) -> str:
    """``encrypted (key k1)``, ``compressed (zlib)`` or ``encoded``: what a reader without
    the codec can say of an envelope."""
    inner = value.get(ENVELOPE_KEY) if isinstance(value, dict) else None
    meta = inner.get("m") if isinstance(inner, dict) else None
    if isinstance(inner, str):
        try:
            meta = parse_meta(inner.partition(";")[0])
        except PayloadError:
            meta = None
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
    if type(inner) is str:
        text, sep, raw = inner.partition(";")
        if not sep:
            raise PayloadError("a payload envelope is malformed (no ';' after its metadata)")
        meta = parse_meta(text)
        try:
            return Payload(binascii.a2b_base64(raw, strict_mode=True), meta)
        except ValueError as exc:  # binascii.Error
            raise PayloadError(f"a payload envelope is malformed ({exc})") from None
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
    datas = [orjson.dumps(v) for v in values]
    cipher = json_cipher(codec)
    sealed = cipher.seal_json(datas) if cipher is not None else None
    out: list[JsonValue] = []
    if sealed is not None:
        meta, blobs = sealed
        b2a = binascii.b2a_base64
        head = meta_text(meta) if getattr(cipher, "compact", False) else None
        for plain, blob in zip(datas, blobs, strict=True):
            text = b2a(blob, newline=False).decode()
            if head is not None:
                text = f"{head};{text}"
                out.append({ENVELOPE_KEY: text})
                cache_meta = _COMPACT
            else:
                out.append({ENVELOPE_KEY: {"m": dict(meta), "d": text}})
                cache_meta = meta
            if cache is not None and len(text) <= cache.largest:
                cache.put((text, cache_meta), _compact(plain))
        return out
    plain_payloads = [Payload(d, {"encoding": "json"}) for d in datas]
    encoded = codec.encode(plain_payloads)
    if len(encoded) != len(plain_payloads):
        raise PayloadError(f"payload codec {type(codec).__name__} changed the number of payloads")
    for before, after in zip(plain_payloads, encoded, strict=True):
        envelope = _to_envelope(after)
        if cache is not None:
            key = cache.key(envelope)
            if key is not None:
                cache.put(key, _compact(before.data))
        out.append(envelope)
    return out


def _compact(data: bytes) -> bytes:
    """``data`` in a buffer of its own size: what ``orjson.dumps`` returns sits in a 4 KiB
    allocation whatever its length (orjson 3.x), which a cache of small payloads would keep."""
    return memoryview(data).tobytes()


@runtime_checkable
class JsonCipher(Protocol):
    """A short cut through a codec for small JSON payloads, without :class:`Payload` objects.

    It must produce and accept exactly what the codec's ``encode`` and ``decode`` would (the
    same metadata and bytes: readers without it see no difference); a codec offers one through
    a ``json_cipher()`` method, which may return None (no short cut for this codec). With
    ``compact`` true, what it seals is written as compact envelopes (version 2).
    """

    compact: bool

    def seal_json(self, datas: Sequence[bytes]) -> tuple[dict[str, str], list[bytes]] | None:
        """The metadata and encoded bytes of JSON payloads ``datas``, or None to take the
        codec's own ``encode``."""
        ...

    def open_json(self, meta: Mapping[str, Any], data: bytes) -> bytes | None:
        """The JSON plaintext of one envelope's ``data`` under ``meta``, or None to take the
        codec's own ``decode``. Raises :class:`PayloadError` as ``decode`` would."""
        ...


def json_cipher(codec: PayloadCodec) -> JsonCipher | None:
    """The short cut ``codec`` offers, if any."""
    offer = getattr(codec, "json_cipher", None)
    return offer() if callable(offer) else None


def decode_values(
    codec: PayloadCodec, values: Sequence[JsonValue], cache: DecodedCache | None = None
) -> list[JsonValue]:
    """``values`` with every envelope decoded (plain values pass through)."""
    out = list(values)
    at: list[int] = []
    keys: list[tuple[str, dict[str, Any]] | None] = []
    cipher = json_cipher(codec)
    largest = cache.largest if cache is not None else -1
    for i, v in enumerate(values):
        if not is_envelope(v):
            continue
        inner: Any = v[ENVELOPE_KEY]  # type: ignore[index,call-overload]
        key: tuple[str, dict[str, Any]] | None = None
        plain: bytes | None = None
        if type(inner) is str:  # compact: its text is the cache's key
            if len(inner) <= largest:
                key = (inner, _COMPACT)
                plain = cache.get_compact(inner)  # type: ignore[union-attr]
        elif cache is not None:
            key = cache.key(v)
            plain = cache.get(key) if key is not None else None
        if plain is None and cipher is not None:
            if type(inner) is str:
                payload = split_envelope(v)  # type: ignore[arg-type]
                meta, data = payload.metadata, payload.data
            elif type(inner) is dict and type(inner.get("m")) is dict:
                meta, raw = inner["m"], inner.get("d")
                if type(raw) is not str:
                    meta, data = None, b""
                else:
                    try:
                        data = binascii.a2b_base64(raw, strict_mode=True)
                    except ValueError as exc:  # binascii.Error
                        raise PayloadError(f"a payload envelope is malformed ({exc})") from None
            else:
                meta, data = None, b""
            if meta is not None:
                plain = cipher.open_json(meta, data)
                if plain is not None and key is not None:
                    cache.put(key, plain)  # type: ignore[union-attr]
        if plain is not None:
            try:
                out[i] = orjson.loads(plain)
            except orjson.JSONDecodeError as exc:
                raise PayloadError(f"a decoded payload is not JSON ({exc})") from None
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


def transform_tree(
    tree: object, codec: PayloadCodec, encode: bool, cache: DecodedCache | None = None
) -> None:
    """Encode (or decode) in place every payload of an unstructured engine message."""
    if encode:
        slots = payload_slots(tree, skip_envelopes=True)
        if slots:
            _replace(slots, encode_values(codec, [c[k] for c, k in slots], cache))
        return
    slots = envelope_slots(tree)
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


def _replace(slots: list[Slot], values: list[JsonValue]) -> None:
    for (container, key), value in zip(slots, values, strict=True):
        container[key] = value
