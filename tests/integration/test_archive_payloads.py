"""An archived history keeps its large payloads: retention archives the payload objects a run's
history names with it (a directory or the archive bucket), deletes them from the payload bucket,
and every reader (``fetch_history``, ``df workflow history``, the UI) still shows the full
values: decoded with the codec when given, ciphertext (never plaintext) in the archive. An
object missing or altered in the archive is an error naming it; a SIGKILL of df-server after
the objects but before the history was archived loses nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner

import durablefuture as df
from daemons.df_cli import main as df_main
from durablefuture.codec.claims import MAX_CLAIM_BYTES, claim_names
from durablefuture.codecs import AesGcm, generate_key
from durablefuture.core.errors import PayloadError
from durablefuture.natsserver import NatsServer
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.archive import open_archive
from durablefuture.transport.archive_objects import OBJECTS
from durablefuture.transport.connection import connect
from durablefuture.transport.payload_store import ObjectPayloads, ensure_payload_bucket
from durablefuture.transport.stored import leader_get
from durablefuture.transport.subjects import Layout
from durablefuture.transport.usage import stream_size
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.ui.conftest import served

pytestmark = pytest.mark.asyncio

SIZE = 1_200_000
ARG = "argument-" + "a1b2c3d4e5" * (SIZE // 10)  # 1.2 MB each way, by reference
MARK = b"a1b2c3d4e5a1b2c3d4e5"
"""In the plaintext of both payloads (the result is the argument reversed, then reversed)."""


def big_echo(text: str):  # type: ignore[no-untyped-def]
    return text[::-1] + "-result"
    yield  # a generator: a workflow


WORKFLOWS = [big_echo]
RESULT = ARG[::-1] + "-result"


async def _removed(client: df.Client) -> bool:
    """No run left, and the payload bucket is empty (the objects were deleted)."""
    js, layout = client.pub.js, client.layout
    runs = (await stream_size(js, f"KV_{layout.runs_bucket}"))[0]
    return runs == 0 and await stream_size(js, f"OBJ_{layout.payloads_bucket}") == (0, 0)


def _objects(root: Path) -> list[Path]:
    folder = root / "default" / OBJECTS
    return (
        sorted(p for p in folder.glob("*") if not p.name.startswith(".")) if folder.exists() else []
    )


def _check(events: list[object]) -> None:
    assert type(events[0]).__name__ == "WorkflowStarted"
    assert events[0].args == (ARG,)  # type: ignore[attr-defined]
    assert type(events[-1]).__name__ == "WorkflowCompleted"
    assert events[-1].result == RESULT  # type: ignore[attr-defined]


async def test_a_dir_archive_keeps_the_payloads_and_refuses_altered_ones(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = f"dir:{root}"
    options = ServerOptions(retention=1.0, archive=archive, payload_grace=1.0)
    # what a crash mid-write would have left: a temporary file, never under an object's name
    stale = (
        root
        / "default"
        / OBJECTS
        / f".{hashlib.sha256(json.dumps(ARG).encode()).hexdigest()}.1.x.tmp"
    )
    stale.parent.mkdir(parents=True)
    stale.write_bytes(ARG.encode()[:1000])
    os.utime(stale, (1.0, 1.0))
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(task_queue="q", workflows=WORKFLOWS):
            assert await client.execute_workflow(big_echo, ARG, id="big", task_queue="q") == RESULT
            await wait_for(lambda: _removed(client), timeout=60)
        # a fresh reader: nothing it remembers having stored or read
        reader = await df.Client.connect(env.nats_url)
        try:
            await _read_dir_archive(env, reader, root, archive)
        finally:
            await reader.close()


async def _read_dir_archive(
    env: LocalEnvironment, reader: df.Client, root: Path, archive: str
) -> None:
    handle = reader.get_workflow_handle("big")
    with pytest.raises(df.WorkflowNotFoundError):
        await handle.fetch_history()
    _check(await handle.fetch_history(archive=archive))
    objects = _objects(root)
    assert len(objects) == 2 and all(p.stat().st_size > SIZE for p in objects)
    assert not list((root / "default" / OBJECTS).glob(".*"))  # no temporary file left

    result = await asyncio.to_thread(
        CliRunner().invoke,
        df_main,
        ["--nats", env.nats_url, "workflow", "history", "big", "--archive", archive],
    )
    assert result.exit_code == 0, result.output
    assert "WorkflowCompleted" in result.output and MARK.decode() in result.output

    async with served(env, archive=archive) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            run = (await http.get("/api/workflows/big")).json()
            assert run["archived"] is True and run["input"] == [ARG]
            assert run["history"][-1]["result"] == RESULT
            state = await http.get("/api/history-state/big", params={"event": "1"})
            assert state.status_code == 200 and MARK.decode() in state.text

    # junk beside the objects changes nothing
    (root / "default" / OBJECTS / "junk").write_bytes(b"not an object")
    (root / "default" / OBJECTS / ("0" * 64)).write_bytes(b"not what its name says")
    _check(await handle.fetch_history(archive=archive))

    # an altered object is refused, naming it: never another value
    altered = objects[0]
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 1
    altered.write_bytes(bytes(data))
    with pytest.raises(PayloadError, match=altered.name):
        await handle.fetch_history(archive=archive)
    async with served(env, archive=archive) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            res = await http.get("/api/workflows/big")
            assert res.status_code != 200 and altered.name in res.text
    # and so is a missing one
    altered.unlink()
    with pytest.raises(PayloadError, match=altered.name):
        await handle.fetch_history(archive=archive)


async def test_a_reference_in_a_forged_archive_cannot_name_a_path(tmp_path: Path) -> None:
    archive = open_archive(f"dir:{tmp_path}", Layout("default"))
    (tmp_path / "secret").write_bytes(b"{}")
    for name in ("../../secret", "A" * 64, "", "0" * 63):
        with pytest.raises(PayloadError, match="not a SHA-256"):
            await archive.objects().get(name)
    with pytest.raises(PayloadError, match="0" * 64):
        await archive.objects().get("0" * 64)


async def test_an_objstore_archive_keeps_the_payloads_and_refuses_altered_ones() -> None:
    options = ServerOptions(retention=1.0, archive="objstore", payload_grace=1.0)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        async with env.worker(task_queue="q", workflows=WORKFLOWS):
            assert await client.execute_workflow(big_echo, ARG, id="obj", task_queue="q") == RESULT
            await wait_for(lambda: _removed(client), timeout=60)
        reader = await df.Client.connect(env.nats_url)
        try:
            handle = reader.get_workflow_handle("obj")
            _check(await handle.fetch_history(archive="objstore"))
            store = await reader.pub.js.object_store(f"{reader.layout.stream}_archive")
            names = sorted(
                i.name
                for i in await store.list(ignore_deletes=True)
                if i.name.startswith(f"{OBJECTS}/")
            )
            assert len(names) == 2
            await store.put(f"{OBJECTS}/junk", b"not an object")
            _check(await handle.fetch_history(archive="objstore"))
            await store.put(names[0], b"other bytes under its name")
            name = names[0].rpartition("/")[2]
            with pytest.raises(PayloadError, match=name):
                await handle.fetch_history(archive="objstore")
            # forged records: one saying it is over the limit, one a link to another bucket
            bucket = f"{reader.layout.stream}_archive"
            key = base64.urlsafe_b64encode(names[1].encode()).decode()
            forged = {"name": names[1], "bucket": bucket, "nuid": "x", "chunks": 1}
            for extra in (
                {"size": MAX_CLAIM_BYTES + 1, "digest": "SHA-256=AAAA"},
                {"size": 0, "options": {"link": {"bucket": reader.layout.payloads_bucket}}},
            ):
                body = json.dumps({**forged, **extra}).encode()
                await reader.pub.js.publish(f"$O.{bucket}.M.{key}", body)
                other = names[1].rpartition("/")[2]
                with pytest.raises(PayloadError, match=other):
                    await handle.fetch_history(archive="objstore")
        finally:
            await reader.close()


@pytest.mark.parametrize("kind", ["dir", "objstore"])
async def test_an_encrypted_run_is_archived_as_ciphertext_and_read_with_the_key(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "archive"
    archive = f"dir:{root}" if kind == "dir" else "objstore"
    codec = AesGcm("k1", generate_key())
    options = ServerOptions(retention=1.0, archive=archive, payload_grace=1.0)
    async with LocalEnvironment(server_options=options, codec=codec) as env:
        client = env.client
        async with env.worker(task_queue="q", workflows=WORKFLOWS):
            assert await client.execute_workflow(big_echo, ARG, id="enc", task_queue="q") == RESULT
            await wait_for(lambda: _removed(client), timeout=60)
        keyed = await df.Client.connect(env.nats_url, codec=codec)
        try:
            _check(await keyed.get_workflow_handle("enc").fetch_history(archive=archive))
        finally:
            await keyed.close()
        # no plaintext anywhere in the archive
        if kind == "dir":
            files = [p for p in root.rglob("*") if p.is_file()]
            assert len(files) == 3  # the history and two objects
            assert all(MARK not in p.read_bytes() for p in files)
        else:
            await _no_plaintext_in_bucket(client, f"OBJ_{client.layout.stream}_archive")
        # without the key the values stay encrypted (shown so), never wrong
        plain = await df.Client.connect(env.nats_url)
        try:
            events = await plain.get_workflow_handle("enc").fetch_history(archive=archive)
            assert len(events) > 1 and ARG not in repr(events[0])
            async with served(env, archive=archive) as url:
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    run = (await http.get("/api/workflows/enc")).json()
                    assert run["input"] == [ARG]  # the UI's client has the codec
            keyless = SimpleNamespace(client=plain)
            async with served(keyless, archive=archive) as url:  # type: ignore[arg-type]
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    run = (await http.get("/api/workflows/enc")).json()
                    [shown] = run["input"]
                    assert shown.startswith("encrypted (key k1), stored by reference"), shown
                    assert MARK.decode() not in str(run)
        finally:
            await plain.close()


async def _no_plaintext_in_bucket(client: df.Client, stream: str) -> None:
    seen = 0
    for seq in range(1, 10_000):
        got = await leader_get(client.nc, stream, {"seq": seq}, "an archive chunk", 10)
        if got is None:
            break
        seen += len(got.data)
        assert MARK not in got.data
    assert seen > 2 * SIZE


async def test_a_sigkill_of_df_server_mid_archive_loses_nothing(
    daemons: Daemons, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    archive = f"dir:{root}"
    daemons.server("--retention", "1s", "--archive", archive)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    try:
        # a directory where the history file goes: the archive cannot finish past the objects
        daemons.worker("--workflows", "tests.integration.test_archive_payloads:WORKFLOWS")
        handle = await client.start_workflow(big_echo, ARG, id="crash", task_queue="tests")
        blocker = root / "default" / "crash" / f"{handle.run_id}.jsonl"
        blocker.mkdir(parents=True)
        assert await handle.result(timeout=60) == RESULT
        await wait_for(lambda: len(_objects(root)) == 2, timeout=60)
        daemons.started[0].kill()  # objects archived, history not: the removal is not done
        assert (await handle.fetch_history())[-1].result == RESULT  # nothing deleted
        shutil.rmtree(blocker)
        daemons.server("--archive", archive)

        async def run_removed() -> bool:
            return (await stream_size(client.pub.js, f"KV_{client.layout.runs_bucket}"))[0] == 0

        await wait_for(run_removed, timeout=90)
        # the archive is complete by itself (the payload bucket is not asked: its objects
        # wait out their grace period there)
        found = await open_archive(archive, client.layout).read("crash", handle.run_id)
        assert found is not None
        names = set().union(*(claim_names(b) for b in found.batches))
        assert {p.name for p in _objects(root)} == names and len(names) == 2
        assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in _objects(root))
        events = await client.history.decode_raw(
            found.workflow_id,
            found.run_id,
            found.batches,
            open_archive(archive, client.layout).objects(),
        )
        _check(events)
        _check(await handle.fetch_history(archive=archive))
    finally:
        await client.close()


async def test_a_run_whose_object_is_gone_everywhere_is_not_archived_and_kept(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    nc = await connect(nats_server.url, timeout=10)
    try:
        layout = Layout("default")
        await ensure_payload_bucket(nc.jetstream(), layout)
        archive = open_archive(f"dir:{tmp_path}", layout, nc.jetstream())
        gone = "ab" * 32
        batch = b'{"v":1,"args":[{"$dfp":{"m":{"claim":"%s"},"d":""}}]}' % gone.encode()
        assert claim_names(batch) == {gone}
        with pytest.raises(PayloadError, match=f"{gone} cannot be archived.*the run is kept"):
            await archive.write("wf", "run1", [batch], ObjectPayloads(nc.jetstream(), layout))
        assert await archive.read("wf", "run1") is None  # no history without its objects
    finally:
        await nc.close()
