"""Reading KV buckets, with NATS errors translated once (a missing key is ``None``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from durablefuture.core.errors import TransportError
from durablefuture.transport.usage import stream_subjects

__all__ = ["KeyValue", "read_entry", "read_key", "read_values", "watch_bucket"]


def _failed(what: str, exc: Exception) -> TransportError:
    return TransportError(f"reading {what} failed: {type(exc).__name__}: {exc}")


async def read_key(kv: KeyValue, key: str) -> bytes | None:
    """The value stored under ``key``; None if there is none (never written, or deleted).

    Raises:
        TransportError: the bucket could not be read.
    """
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise _failed(f"key {key} of a KV bucket", exc) from exc
    return entry.value


async def read_entry(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    """The value stored under ``key`` and its revision (stream sequence); None if none.

    Raises:
        TransportError: the bucket could not be read.
    """
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise _failed(f"key {key} of a KV bucket", exc) from exc
    if entry.value is None:
        return None
    return entry.value, entry.revision or 0


async def read_values(kv: KeyValue) -> list[bytes]:
    """Every value in the bucket (entries deleted meanwhile are left out).

    Raises:
        TransportError: the bucket's keys could not be listed.
    """
    # the keys as the stream's state tells them: nats-py's ``keys()`` ends its watch on the
    # first "nothing pending" it sees, which under load can come before every key has
    # (nats.py#842), and a list missing runs would be wrong
    prefix = f"$KV.{kv._name}."  # (as the stream stores them, whatever prefix reads them)
    subjects = await stream_subjects(kv._js, kv._stream, f"{prefix}>")
    keys = [s[len(prefix) :] for s in subjects if s.startswith(prefix)]
    entries = await asyncio.gather(*(kv.get(k) for k in keys), return_exceptions=True)
    out: list[bytes] = []
    for entry in entries:
        if isinstance(entry, nats.js.errors.KeyNotFoundError | nats.js.errors.KeyDeletedError):
            continue  # deleted since the keys were listed
        if isinstance(entry, nats.errors.Error | TimeoutError):
            # a read that failed is not an entry that is gone: a list missing it would be wrong
            raise _failed("an entry of a KV bucket", entry) from entry
        if isinstance(entry, BaseException):
            raise entry
        if entry.value is not None:
            out.append(entry.value)
    return out


async def watch_bucket(kv: KeyValue) -> AsyncIterator[tuple[str, bytes | None] | None]:
    """Every key's latest value, then every change as it happens: ``(key, value)``, with
    value None when the key was deleted or purged, and one None once the values stored when
    the watch began have all been given.

    Raises:
        TransportError: the watch could not be set up.
    """
    try:
        watcher = await kv.watchall()
    except (nats.errors.Error, TimeoutError) as exc:
        raise _failed("a KV bucket (watching it)", exc) from exc
    try:
        async for entry in watcher:
            if entry is None:
                yield None
            elif entry.operation in ("DEL", "PURGE") or entry.value is None:
                yield entry.key, None
            else:
                yield entry.key, entry.value
    finally:
        try:
            await watcher.stop()  # type: ignore[no-untyped-call]
        except (nats.errors.Error, TimeoutError, AttributeError) as exc:
            _ = exc  # the connection is going away with it
