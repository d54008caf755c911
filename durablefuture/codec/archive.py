"""The file format of archived histories (``transport/archive.py`` stores them).

A header line ``{"df_archive": 1, "namespace", "workflow_id", "run_id"}`` and then the run's
history messages exactly as the stream stored them, one per line (each is one line of JSON),
so an archive is read back with the same codec and schema checks as the stream.
"""

from __future__ import annotations

import orjson

from durablefuture.core.errors import DecodeError

__all__ = ["ArchivedRun", "decode_archive", "encode_archive"]


class ArchivedRun:
    """One archived run: its ids and its history messages as stored."""

    def __init__(self, workflow_id: str, run_id: str, batches: list[bytes]) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.batches = batches


def encode_archive(namespace: str, workflow_id: str, run_id: str, batches: list[bytes]) -> bytes:
    head = orjson.dumps(
        {
            "df_archive": 1,
            "namespace": namespace,
            "workflow_id": workflow_id,
            "run_id": run_id,
        }
    )
    for b in batches:
        if b"\n" in b:
            raise DecodeError("a history message holds a raw newline; it cannot be archived")
    return b"\n".join([head, *batches]) + b"\n"


def decode_archive(data: bytes, where: str) -> ArchivedRun:
    lines = data.rstrip(b"\n").split(b"\n")
    try:
        head = orjson.loads(lines[0])
    except orjson.JSONDecodeError:
        raise DecodeError(f"{where} is not a DurableFuture archive") from None
    if not isinstance(head, dict) or head.get("df_archive") != 1:
        raise DecodeError(f"{where} is not a DurableFuture archive (version 1)")
    wid, run = head.get("workflow_id"), head.get("run_id")
    if not isinstance(wid, str) or not isinstance(run, str):
        raise DecodeError(f"{where}: the archive header names no workflow and run")
    return ArchivedRun(wid, run, [line for line in lines[1:] if line])
