"""Built-in payload codecs: AES-256-GCM encryption and zlib compression.

``await df.Client.connect(url, codec=AesGcm("k1", key))`` encrypts every payload the client and
the workers built on it write; ``codec=[Zlib(), AesGcm(...)]`` compresses, then encrypts.
``df-worker``, ``df`` and the UI take ``--codec durablefuture.codecs:from_env`` (keys in
``DF_CODEC_KEYS``) or ``--codec yourmodule:factory`` for your own.

Key rotation: encrypt with a new key and keep the old ones for reading,
``AesGcm("k2", new_key, old_keys={"k1": old_key})``: payloads written under ``k1`` stay readable.
"""

from __future__ import annotations

import base64
import binascii
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from durablefuture.codec.envelope import CodecChain, Payload, PayloadCodec
from durablefuture.core.errors import InvalidArgumentError, PayloadError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEYS_ENV",
    "AesGcm",
    "CodecChain",
    "Payload",
    "PayloadCodec",
    "Zlib",
    "from_env",
    "generate_key",
]

KEYS_ENV = "DF_CODEC_KEYS"
_ALGORITHM = "aes256gcm"
_NONCE = 12
_TAG = 16


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(
            "durablefuture.codecs.AesGcm needs the 'cryptography' package: "
            "pip install durablefuture[crypto]"
        ) from None
    return AESGCM


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(32)


class AesGcm:
    """AES-256-GCM with a key id in each payload's metadata.

    Args:
        key_id: names ``key`` in the payloads it encrypts (``"k1"``, ``"2026-12"``...).
        key: 32 bytes.
        old_keys: earlier keys by id, used only to decrypt payloads written under them.
        compact: write compact envelopes (``{"$dfp": "*g,k=k1;<base64>"}``, about 60 bytes
            smaller per payload); False writes the longer form of DurableFuture 0.1, for
            as long as processes of that version still read what this one writes. Both forms
            are read either way.
    """

    def __init__(
        self,
        key_id: str,
        key: bytes,
        *,
        old_keys: Mapping[str, bytes] = {},
        compact: bool = True,
    ) -> None:
        aesgcm = _aesgcm()
        from cryptography.exceptions import InvalidTag

        self._invalid_tag = InvalidTag  # not imported again for each payload decrypted
        keys = {**old_keys, key_id: key}
        for kid, k in keys.items():
            if not kid or not isinstance(kid, str):
                raise InvalidArgumentError(f"an AES-GCM key id must be a non-empty str: {kid!r}")
            if not isinstance(k, bytes) or len(k) != 32:
                raise InvalidArgumentError(
                    f"AES-GCM key {kid!r} must be 32 bytes (AES-256), not "
                    f"{len(k) if isinstance(k, bytes) else type(k).__name__}"
                )
        self.key_id = key_id
        self.compact = compact
        # one cipher object and one associated-data string per key, made once
        self._ciphers = {kid: aesgcm(k) for kid, k in keys.items()}
        self._aads = {kid: self._aad(kid) for kid in keys}
        # the metadata of a JSON payload this codec encrypted, per key (see open_json)
        self._json_meta = {
            kid: {"encoding": "json", "encryption": _ALGORITHM, "key": kid} for kid in keys
        }

    @staticmethod
    def _aad(key_id: str) -> bytes:
        return f"df/{_ALGORITHM}/{key_id}".encode()

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encrypt = self._ciphers[self.key_id].encrypt
        aad = self._aads[self.key_id]
        added = {"encryption": _ALGORITHM, "key": self.key_id}
        out = []
        for p in payloads:
            nonce = os.urandom(_NONCE)
            out.append(Payload(nonce + encrypt(nonce, p.data, aad), p.metadata | added))
        return out

    def json_cipher(self) -> AesGcm | None:
        """The short cut of :func:`~durablefuture.codec.envelope.encode_values` and
        ``decode_values`` (not for subclasses, which may encode differently)."""
        return self if type(self) is AesGcm else None

    def seal_json(self, datas: Sequence[bytes]) -> tuple[dict[str, str], list[bytes]]:
        """``encode`` of JSON payloads, without the :class:`Payload` objects."""
        encrypt = self._ciphers[self.key_id].encrypt
        aad = self._aads[self.key_id]
        # the nonces of a batch from one read of the system's random source
        nonces = os.urandom(_NONCE * len(datas))
        out = []
        for i, data in enumerate(datas):
            nonce = nonces[i * _NONCE : (i + 1) * _NONCE]
            out.append(nonce + encrypt(nonce, data, aad))
        return self._json_meta[self.key_id], out

    def open_json(self, meta: Mapping[str, Any], data: bytes) -> bytes | None:
        """``decode`` of one JSON payload this codec's keys encrypted (None for any other
        metadata: the caller takes ``decode``)."""
        kid = meta.get("key")
        if type(kid) is not str or self._json_meta.get(kid) != meta:
            return None
        return self._decrypt(kid, data)

    def _decrypt(self, kid: str, data: bytes) -> bytes:
        if len(data) < _NONCE + _TAG:
            raise PayloadError(
                f"a payload encrypted with key {kid!r} is {len(data)} bytes, shorter than a "
                f"nonce and a tag ({_NONCE + _TAG}): it was cut or altered in the store"
            )
        try:
            return self._ciphers[kid].decrypt(data[:_NONCE], data[_NONCE:], self._aads[kid])
        except self._invalid_tag:
            raise PayloadError(
                f"a payload encrypted with key {kid!r} fails authentication: it was altered "
                "in the store, or the key configured under that id is not the one that "
                "wrote it"
            ) from None

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encryption") != _ALGORITHM:
                out.append(p)
                continue
            kid = p.metadata.get("key", "")
            if kid not in self._ciphers:
                raise PayloadError(
                    f"a payload is encrypted with key {kid!r}, which this codec does not have "
                    f"(it has {sorted(self._ciphers)}); add it to old_keys (or {KEYS_ENV})"
                )
            data = self._decrypt(kid, p.data)
            meta = {k: v for k, v in p.metadata.items() if k not in ("encryption", "key")}
            out.append(Payload(data, meta))
        return out


class Zlib:
    """zlib compression of payloads of at least ``min_size`` bytes that it makes smaller
    (others pass through unchanged)."""

    compact = True

    def __init__(self, level: int = 6, min_size: int = 256) -> None:
        self.level = level
        self.min_size = min_size

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if len(p.data) < self.min_size:
                out.append(p)
                continue
            packed = zlib.compress(p.data, self.level)
            if len(packed) < len(p.data):
                p = Payload(packed, {**p.metadata, "compression": "zlib"})
            out.append(p)
        return out

    def json_cipher(self) -> Zlib | None:
        """The short cut of :func:`~durablefuture.codec.envelope.encode_values` for payloads
        too small to compress (not for subclasses)."""
        return self if type(self) is Zlib else None

    def seal_json(self, datas: Sequence[bytes]) -> tuple[dict[str, str], list[bytes]] | None:
        """The payloads unchanged when each is below ``min_size``; None otherwise."""
        if any(len(d) >= self.min_size for d in datas):
            return None
        return {"encoding": "json"}, list(datas)

    def open_json(self, meta: Mapping[str, Any], data: bytes) -> bytes | None:
        return data if meta == {"encoding": "json"} else None

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("compression") == "zlib":
                try:
                    data = zlib.decompress(p.data)
                except zlib.error as exc:
                    raise PayloadError(f"a zlib-compressed payload is corrupt ({exc})") from None
                meta = {k: v for k, v in p.metadata.items() if k != "compression"}
                p = Payload(data, meta)
            out.append(p)
        return out


def from_env(environ: Mapping[str, str] | None = None) -> PayloadCodec:
    """``Zlib`` then ``AesGcm`` with the keys of ``DF_CODEC_KEYS``: ``id:base64key`` entries,
    comma-separated, the first one encrypting (``k2:...,k1:...``). For ``--codec
    durablefuture.codecs:from_env``."""
    env: Mapping[str, Any] = os.environ if environ is None else environ
    raw = str(env.get(KEYS_ENV, "")).strip()
    if not raw:
        raise InvalidArgumentError(
            f"{KEYS_ENV} is not set: give it 'id:base64key' entries, comma-separated, the first "
            "one encrypting"
        )
    keys: dict[str, bytes] = {}
    for entry in raw.split(","):
        kid, sep, b64 = entry.strip().partition(":")
        try:
            keys[kid] = base64.b64decode(b64, validate=True)
        except binascii.Error:
            sep = ""
        if not sep:
            raise InvalidArgumentError(f"{KEYS_ENV} entry for key {kid!r} is not 'id:base64key'")
    current, *_ = keys
    old = {k: v for k, v in keys.items() if k != current}
    return CodecChain(Zlib(), AesGcm(current, keys[current], old_keys=old))
