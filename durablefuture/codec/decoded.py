"""The decoded-payload cache of :mod:`~durablefuture.codec.envelope`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["COMPACT", "ENVELOPE_KEY", "DecodedCache"]

ENVELOPE_KEY = "$dfp"

COMPACT: dict[str, Any] = {}
"""The metadata under which a compact envelope's plaintext is cached (its metadata is in the
envelope's text itself)."""


class DecodedCache:
    """The plaintexts of small envelopes decoded lately, by envelope (ciphertext and metadata).

    A workflow worker reads the same payloads again and again (each workflow task carries the
    run's history); this spares decoding them each time. Only what the codec decoded is kept,
    under exactly the envelope it came from, so an altered envelope is never a hit; values are
    kept as JSON bytes and parsed for each reader (they may change what they get).

    ``budget`` bounds the memory the entries take, their bookkeeping included. An entry is the
    envelope's data, the plaintext and the number of its metadata: the few distinct metadata
    maps (one per key id and codec) are kept once, so the entries hold no containers for the
    garbage collector to walk.
    """

    ENTRY_OVERHEAD = 240
    """Bytes an entry takes besides its data and plaintext (the str and bytes objects'
    headers, the tuple, the ordered map's slot and links), as counted against the budget."""
    MAX_METAS = 256
    """Distinct metadata maps kept; envelopes under others are not cached."""

    def __init__(self, budget: int = 8 * 1024 * 1024, largest: int = 16 * 1024) -> None:
        self.budget = budget
        self.largest = largest
        self._entries: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        """Envelope data -> (the number of its metadata, the plaintext): a hit needs both to
        match."""
        self._metas: list[dict[str, Any]] = [COMPACT]
        self._meta_ids: dict[tuple[tuple[Any, Any], ...], int] = {}
        """Metadata maps (as tuples of their items) -> their number; ``COMPACT`` is number 0,
        looked up by identity (most envelopes are compact: no map to hash per entry)."""
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, envelope: Any) -> tuple[str, dict[str, Any]] | None:
        """The envelope's data and metadata, if it is small enough to be kept."""
        inner = envelope[ENVELOPE_KEY]
        if type(inner) is str:  # compact: the text holds the metadata too
            return (inner, COMPACT) if len(inner) <= self.largest else None
        if type(inner) is not dict:
            return None
        data, meta = inner.get("d"), inner.get("m")
        if type(data) is not str or len(data) > self.largest or type(meta) is not dict:
            return None
        return data, meta

    def get(self, key: tuple[str, dict[str, Any]]) -> bytes | None:
        """The plaintext of exactly this data under exactly this metadata, if kept."""
        entry = self._entries.get(key[0])
        if entry is None:
            return None
        meta_id = entry[0]
        if key[1] is COMPACT:
            if meta_id != 0:
                return None
        elif meta_id == 0 or self._metas[meta_id] != key[1]:
            return None
        self._entries.move_to_end(key[0])
        return entry[1]

    def get_compact(self, text: str) -> bytes | None:
        """:meth:`get` of a compact envelope's text (no key tuple to build)."""
        entry = self._entries.get(text)
        if entry is None or entry[0] != 0:
            return None
        self._entries.move_to_end(text)
        return entry[1]

    def _meta_id(self, meta: dict[str, Any]) -> int | None:
        if meta is COMPACT:
            return 0
        try:
            sig = tuple(meta.items())
            found = self._meta_ids.get(sig)
        except TypeError:  # a value that cannot be hashed: not an envelope we wrote
            return None
        if found is None and len(self._metas) < self.MAX_METAS:
            found = self._meta_ids[sig] = len(self._metas)
            self._metas.append(dict(meta))
        return found

    def put(self, key: tuple[str, dict[str, Any]], plain: bytes) -> None:
        data, meta = key
        if data in self._entries:
            return
        meta_id = self._meta_id(meta)
        if meta_id is None:
            return
        self._entries[data] = (meta_id, plain)
        self._bytes += len(plain) + len(data) + self.ENTRY_OVERHEAD
        while self._bytes > self.budget and self._entries:
            old, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped) + len(old) + self.ENTRY_OVERHEAD
