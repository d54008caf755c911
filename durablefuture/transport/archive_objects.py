"""The payload objects an archived history names, kept in the archive with it.

A history holds only a reference to a payload stored by claim-check (its SHA-256); the object
itself goes with the last run naming it. So archiving a run also archives every object its
history names, exactly as stored (ciphertext stays ciphertext), before the history is written:

- ``dir:PATH``: ``PATH/<namespace>/payloads.sha256/<sha256>``, shared by every run naming it,
  written to a temporary name, synced and renamed (never a half object under its name);
- ``objstore``: object ``payloads.sha256/<sha256>`` in the archive bucket.

(A workflow token never holds a ``.``, so these names meet no run's.) Each object is read back
and checked against its name before the history is written, and again whenever it is read: an
archive may hold junk; a reference whose object is missing or altered is an error naming it,
never another value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from durablefuture.codec.claims import MAX_CLAIM_BYTES, PayloadStore
from durablefuture.core.errors import DecodeError, PayloadError, TransportError

if TYPE_CHECKING:
    from durablefuture.transport.archive import Archive

__all__ = ["OBJECTS", "ArchivedPayloads", "keep_objects", "read_bounded"]

OBJECTS = "payloads.sha256"
"""The folder (``dir:``) or name prefix (``objstore``) of archived payload objects."""
_NAME = re.compile(r"[0-9a-f]{64}")
STALE_AFTER = 3600.0
"""Seconds after which a temporary object file is a crash's leftover."""
CHUNK_TIMEOUT = 10.0
"""Seconds to wait for the next chunk of an archived object."""


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PayloadError(
            f"a reference names payload object {str(name)[:80]!r}, which is not a SHA-256 "
            "digest: the archived history was altered; refused"
        )
    return name


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def keep_objects(archive: Archive, names: Iterable[str], source: PayloadStore) -> None:
    """Store in ``archive`` every object of ``names`` it does not already hold intact, read
    from ``source`` (the namespace's payload bucket), each checked by reading it back."""
    for name in sorted(set(names)):
        _checked_name(name)
        if await _read(archive, name) is not None:
            continue  # archived before (by this run or another one): intact
        try:
            data = await source.get(name)
        except PayloadError as exc:
            # the run is kept (the removal is retried, then dead-lettered with this reason)
            raise PayloadError(
                f"payload object {name} cannot be archived: it is in neither the archive nor "
                f"the payload bucket ({exc}); the run is kept"
            ) from exc
        if _digest(data) != name:
            raise PayloadError(f"payload object {name} in the payload bucket is altered")
        await _write(archive, name, data)
        if await _read(archive, name) is None:
            raise TransportError(
                f"payload object {name} did not read back intact from archive "
                f"{archive.describe()}; the run is left to be archived again"
            )


async def _read(archive: Archive, name: str) -> bytes | None:
    """The object's bytes, None if it is missing or not what its name says."""
    if archive.kind == "dir":
        return await asyncio.to_thread(_read_file, _path(archive, name))
    store = await archive._store(create=False)
    if store is None:
        return None
    assert archive.js is not None
    return await _read_object(archive.js, store, archive.bucket, name)


async def _write(archive: Archive, name: str, data: bytes) -> None:
    if archive.kind == "dir":
        await asyncio.to_thread(_write_file, _path(archive, name), data)
        return
    store = await archive._store(create=True)
    assert store is not None
    try:
        await store.put(f"{OBJECTS}/{name}", data)
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"archiving payload object {name} in {archive.bucket}: {exc}") from exc


def _path(archive: Archive, name: str) -> Path:
    return Path(archive.path) / archive.layout.namespace / OBJECTS / name


def _read_file(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_CLAIM_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_CLAIM_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TransportError(f"reading archived payload object {path}: {exc}") from exc
    return data if _digest(data) == path.name else None


def _write_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two removals (or df-servers) may archive the same object at once
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a crash of the machine
        finally:
            os.close(fd)
    except OSError as exc:
        raise TransportError(f"archiving payload object to {path}: {exc}") from exc
    _forget_stale(path)


def _forget_stale(path: Path) -> None:
    """Delete the temporary files of this object a crash left (older than an hour: one a
    writer is still writing is younger)."""
    limit = time.time() - STALE_AFTER
    for stale in list(path.parent.glob(f".{path.name}.*.tmp"))[:100]:
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < limit:
                stale.unlink()


async def _read_object(
    js: JetStreamContext, store: ObjectStore, bucket: str, name: str
) -> bytes | None:
    try:
        data = await read_bounded(js, store, bucket, f"{OBJECTS}/{name}", MAX_CLAIM_BYTES)
    except DecodeError:
        return None
    return data if data is not None and _digest(data) == name else None


async def read_bounded(
    js: JetStreamContext, store: ObjectStore, bucket: str, key: str, limit: int
) -> bytes | None:
    """Object ``key`` of ``bucket``, read with bounds (a bucket may hold a forged record: a
    link elsewhere, a size over ``limit``, chunks that never come or hold other bytes than
    its digest says): None if there is none, ``DecodeError`` saying why if it is unusable."""
    try:
        info = await store.get_info(key)
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading {bucket}/{key}: {exc}") from exc
    where = f"{bucket}/{key}"
    size = info.size or 0
    if info.deleted:
        return None
    if info.is_link() or not info.nuid or size > limit:
        raise DecodeError(f"{where} is a link, has no chunks or is over {limit:,} bytes")
    data = bytearray()
    if size:
        subject = f"$O.{bucket}.C.{info.nuid}"
        try:
            sub = await js.subscribe(subject, stream=f"OBJ_{bucket}", ordered_consumer=True)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"reading {where}: {exc}") from exc
        try:
            while len(data) < size:
                msg = await sub.next_msg(timeout=CHUNK_TIMEOUT)
                data += msg.data
                if msg.metadata.num_pending == 0:
                    break
        except TimeoutError:
            raise DecodeError(f"{where} is incomplete (a chunk did not come)") from None
        finally:
            await sub.unsubscribe()
    out = bytes(data[:size])
    if len(out) != size or _stated_digest(info.digest or "") != hashlib.sha256(out).digest():
        raise DecodeError(f"{where} is incomplete or altered (its digest does not match)")
    return out


def _stated_digest(text: str) -> bytes | None:
    kind, _, value = text.partition("=")
    if kind.upper() != "SHA-256" or len(value) > 64:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return None


class ArchivedPayloads:
    """Reads payload objects back from an archive (a :class:`PayloadStore` for the codec);
    an object the archive lacks (an archive written before objects were kept) is looked for
    in ``fallback`` (the namespace's payload bucket), while it is still there."""

    def __init__(self, archive: Archive, fallback: PayloadStore | None = None) -> None:
        self.archive = archive
        self.fallback = fallback

    async def put(self, name: str, data: bytes) -> None:
        raise PayloadError("an archive is read-only to its readers")

    async def get(self, name: str) -> bytes:
        data = await _read(self.archive, _checked_name(name))
        if data is not None:
            return data
        if self.fallback is not None:
            try:
                data = await self.fallback.get(name)
            except PayloadError:
                data = None
            if data is not None and _digest(data) == name:
                return data
        raise PayloadError(
            f"payload object {name} named by the archived history is missing from archive "
            f"{self.archive.describe()} or does not hold the bytes it is named by (and is "
            "no longer in the payload bucket); its value cannot be shown"
        )
