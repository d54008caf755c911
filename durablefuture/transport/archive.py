"""Archives of closed runs' histories, written before retention deletes them.

``dir:PATH``: one file per run, ``PATH/<namespace>/<workflow token>/<run>.jsonl``, written to a
temporary name and renamed (a crash leaves no half file under the real name).
``objstore``: one object per run, ``<workflow token>/<run>``, in the namespace's object store
bucket ``DF_<ns>_archive`` (created on first use), visible to every df-server.

Before the history, the payload objects it names are archived next to it
(:mod:`durablefuture.transport.archive_objects`), so a reference in it still reads back once
retention deleted the object from the payload bucket.

An archive holds a header line (``{"df_archive": 1, "namespace", "workflow_id", "run_id"}``)
and then the run's history messages exactly as they were stored, one per line, so it is read
back with the same codec (and the same schema version checks) as the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from durablefuture.codec.archive import ArchivedRun, decode_archive, encode_archive
from durablefuture.codec.claims import PayloadStore, claim_names
from durablefuture.core.errors import DecodeError, InvalidArgumentError, TransportError
from durablefuture.transport.archive_objects import ArchivedPayloads, keep_objects, read_bounded
from durablefuture.transport.subjects import Layout, encode_token

__all__ = ["MAX_ARCHIVE_BYTES", "Archive", "ArchivedRun", "open_archive", "parse_archive"]

MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
"""The largest archived history read back (a larger file or object is not one of ours)."""


def parse_archive(spec: str) -> tuple[str, str]:
    """``("dir", PATH)`` or ``("objstore", "")`` from ``dir:PATH`` / ``objstore``."""
    if spec == "objstore":
        return "objstore", ""
    if spec.startswith("dir:") and spec[4:].strip():
        return "dir", spec[4:].strip()
    raise InvalidArgumentError(
        f"archive {spec!r} is not understood; use dir:PATH (a folder) or objstore (the "
        "namespace's NATS object store bucket DF_<ns>_archive)"
    )


class Archive:
    """Writes and reads archived histories of one namespace (see the module docstring)."""

    def __init__(self, kind: str, path: str, layout: Layout, js: JetStreamContext | None) -> None:
        self.kind = kind
        self.path = path
        self.layout = layout
        self.js = js

    @property
    def bucket(self) -> str:
        return f"{self.layout.stream}_archive"

    def describe(self) -> str:
        return f"dir:{self.path}" if self.kind == "dir" else f"objstore ({self.bucket})"

    def _folder(self, workflow_id: str) -> Path:
        return Path(self.path) / self.layout.namespace / encode_token(workflow_id)

    async def write(
        self,
        workflow_id: str,
        run_id: str,
        batches: list[bytes],
        payloads: PayloadStore | None = None,
    ) -> None:
        """Archive the run's history messages ``batches``: first every payload object they
        name, read from ``payloads`` (the namespace's payload bucket) and checked, then the
        history (read back and checked too). When this returns, the archive is complete;
        until then, nothing of the run may be deleted (it is archived again)."""
        data = encode_archive(self.layout.namespace, workflow_id, run_id, batches)
        names = set().union(*(claim_names(b) for b in batches)) if batches else set()
        if names:
            if payloads is None:
                raise TransportError(
                    f"run {run_id} names {len(names)} payload object(s): archiving it needs "
                    "the payload bucket to copy them from"
                )
            await keep_objects(self, names, payloads)
        key = f"{encode_token(workflow_id)}/{run_id}"
        if self.kind == "dir":
            await asyncio.to_thread(self._write_file, workflow_id, run_id, data)
            back: bytes | None = await asyncio.to_thread(
                _read_back, self._folder(workflow_id) / f"{run_id}.jsonl"
            )
        else:
            store = await self._store(create=True)
            assert store is not None and self.js is not None
            try:
                await store.put(key, data)
            except (nats.errors.Error, TimeoutError) as exc:
                raise TransportError(f"archiving run {run_id} in {self.bucket}: {exc}") from exc
            try:
                back = await read_bounded(self.js, store, self.bucket, key, MAX_ARCHIVE_BYTES)
            except DecodeError:
                back = None
        if back is None or hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
            raise TransportError(
                f"the archived history of run {run_id} did not read back intact from "
                f"{self.describe()}; the run is left to be archived again"
            )

    def _write_file(self, workflow_id: str, run_id: str, data: bytes) -> None:
        folder = self._folder(workflow_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{run_id}.jsonl.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / f"{run_id}.jsonl")
        except OSError as exc:
            raise TransportError(f"archiving run {run_id} to {folder}: {exc}") from exc

    async def read(self, workflow_id: str, run_id: str | None = None) -> ArchivedRun | None:
        """The archived run (the newest archived run of ``workflow_id`` if no ``run_id``)."""
        if self.kind == "dir":
            return await asyncio.to_thread(self._read_file, workflow_id, run_id)
        store = await self._store(create=False)
        if store is None:
            return None
        prefix = f"{encode_token(workflow_id)}/"
        try:
            if run_id is None:
                infos = [i for i in await store.list() if i.name.startswith(prefix)]
                infos = [i for i in infos if not i.deleted]
                if not infos:
                    return None
                newest = max(infos, key=lambda i: str(i.mtime or ""))
                run_id = newest.name[len(prefix) :]
        except nats.js.errors.NotFoundError:  # an empty bucket
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"reading archived run of {workflow_id!r}: {exc}") from exc
        assert self.js is not None
        data = await read_bounded(self.js, store, self.bucket, prefix + run_id, MAX_ARCHIVE_BYTES)
        return None if data is None else decode_archive(data, f"{self.bucket}/{prefix}{run_id}")

    def objects(self, fallback: PayloadStore | None = None) -> ArchivedPayloads:
        """The archived payload objects, as a store the codec fetches references from."""
        return ArchivedPayloads(self, fallback)

    def _read_file(self, workflow_id: str, run_id: str | None) -> ArchivedRun | None:
        folder = self._folder(workflow_id)
        if run_id is None:
            files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
            if not files:
                return None
            path = files[-1]
        else:
            path = folder / f"{run_id}.jsonl"
        try:
            if path.stat().st_size > MAX_ARCHIVE_BYTES:
                raise DecodeError(f"{path} is over {MAX_ARCHIVE_BYTES:,} bytes: not an archive")
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(f"reading archive {path}: {exc}") from exc
        return decode_archive(data, str(path))

    async def _store(self, *, create: bool) -> ObjectStore | None:
        if self.js is None:
            raise InvalidArgumentError("an objstore archive needs a connection to NATS")
        try:
            return await self.js.object_store(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"opening archive bucket {self.bucket}: {exc}") from exc
        config = ObjectStoreConfig(
            bucket=self.bucket,
            description=f"DurableFuture namespace {self.layout.namespace}: archived histories",
            storage=StorageType.FILE,
        )
        try:
            return await self.js.create_object_store(self.bucket, config)
        except nats.js.errors.APIError:
            try:  # another df-server created it meanwhile
                return await self.js.object_store(self.bucket)
            except (nats.errors.Error, TimeoutError) as exc:
                raise TransportError(f"creating archive bucket {self.bucket}: {exc}") from exc


def _read_back(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def open_archive(spec: str, layout: Layout, js: JetStreamContext | None = None) -> Archive:
    kind, path = parse_archive(spec)
    return Archive(kind, path, layout, js)
