"""The metadata of a compact payload envelope (version 2, see :mod:`~durablefuture.codec.envelope`):
known names shortened, names and values percent-escaped, ``encoding=json`` implied, and a
known name and value together as one short part starting with ``*`` (``*g`` for
``encryption=aes256gcm``: 9 bytes less in every payload AES-GCM seals). A ``*`` never starts a
percent-escaped name, so the two cannot be confused; ``e=aes256gcm``, as written before, is
read as ever."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

from durablefuture.core.errors import PayloadError

__all__ = ["meta_text", "parse_meta"]

_SHORT = {"encryption": "e", "key": "k", "compression": "z", "encoding": "c"}
_LONG = {v: k for k, v in _SHORT.items()}
_PAIRS = {("encryption", "aes256gcm"): "*g"}
_PAIRS_BACK = {v: k for k, v in _PAIRS.items()}
_MAX_META_TEXT = 1024
_META_MEMO = 256
_texts: dict[tuple[tuple[str, str], ...], str | None] = {}
_metas: dict[str, dict[str, str]] = {}


def meta_text(meta: Mapping[str, str]) -> str | None:
    """``meta`` as the metadata of a compact envelope, or None when it has no such form (no
    ``encoding``, or a one-letter name of its own)."""
    sig = tuple(meta.items())
    found = _texts.get(sig, False)
    if found is not False:
        return found  # type: ignore[return-value]
    text: str | None = None
    if meta.get("encoding") is not None and all(
        type(k) is str and type(v) is str and (k in _SHORT or len(k) > 1) for k, v in sig
    ):
        parts = [
            _PAIRS.get((k, v)) or f"{_SHORT.get(k, quote(k, safe=''))}={quote(v, safe='')}"
            for k, v in sig
            if not (k == "encoding" and v == "json")
        ]
        text = ",".join(parts)
    if len(_texts) < _META_MEMO:
        _texts[sig] = text
    return text


def parse_meta(text: str) -> dict[str, str]:
    """The metadata of a compact envelope (a fresh dict)."""
    found = _metas.get(text)
    if found is not None:
        return dict(found)
    if len(text) > _MAX_META_TEXT:
        raise PayloadError(f"a payload envelope's metadata is over {_MAX_META_TEXT} characters")
    meta = {"encoding": "json"}
    for part in text.split(",") if text else ():
        if part[:1] == "*":
            pair = _PAIRS_BACK.get(part)
            if pair is None:
                raise PayloadError(
                    f"a payload envelope's metadata has an unknown part {part[:40]!r}"
                )
            meta[pair[0]] = pair[1]
            continue
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise PayloadError(f"a payload envelope's metadata is malformed at {part[:40]!r}")
        if len(name) == 1:
            if name not in _LONG:
                raise PayloadError(f"a payload envelope's metadata has an unknown name {name!r}")
            name = _LONG[name]
        else:
            name = unquote(name, errors="strict")
        try:
            meta[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise PayloadError("a payload envelope's metadata is not UTF-8") from None
    if len(_metas) < _META_MEMO:
        _metas[text] = dict(meta)
    return meta
