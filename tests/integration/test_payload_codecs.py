"""Encrypted payloads end to end: with an AES-GCM codec on the client and the worker, a run's
argument, activity result, signal, update, heartbeat details, query and result round-trip, and
nothing of them is stored in the clear: every message of every JetStream stream (histories,
tasks, KV buckets) is read raw and searched for the plaintext."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.codecs import AesGcm, Zlib, from_env, generate_key
from durablefuture.core import events as ev
from durablefuture.transport.connection import connect
from tests.conftest import Daemons, wait_for, wait_namespace

pytestmark = pytest.mark.asyncio

KEY = generate_key()
KEYS_ENV = {"DF_CODEC_KEYS": f"k1:{base64.b64encode(KEY).decode()}"}
ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "argument": "ARG-CARD-4111-1111",
    "activity": "ACT-RECEIPT-7731",
    "signal": "SIG-SHIP-TO-BAKER-ST",
    "query": "QRY-STATUS-PLAIN",
    "heartbeat": "HB-PROGRESS-NOTE",
    "update": "UPD-GIFT-WRAP-NOTE",
    "update result": "UPDRES-ACCEPTED-42",
}


def charge(card: str) -> str:
    df.heartbeat(SECRETS["heartbeat"])
    return f"{SECRETS['activity']} for {card}"


def secret_order(card: str):  # type: ignore[no-untyped-def]
    df.workflow.set_query_handler("status", lambda: SECRETS["query"])
    df.workflow.set_update_handler(
        "note", lambda text: SECRETS["update result"] if text == SECRETS["update"] else "?"
    )
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=20))
    receipt = yield df.activity(charge, card, options=opts)
    address = yield df.wait_signal("ship")
    return {"receipt": receipt, "address": address}


async def _raw_store(url: str) -> list[bytes]:
    """Every message of every stream (KV buckets are streams too), as stored."""
    nc = await connect(url, timeout=10)
    out: list[bytes] = []
    try:
        js = nc.jetstream(timeout=5)
        for info in await js.streams_info():
            state = info.state
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except Exception:
                    continue  # deleted (an acked work-queue task, a purged key)
                out.append(msg.subject.encode() + b" " + (msg.data or b""))
                out.extend(str(v).encode() for v in (msg.headers or {}).values())
    finally:
        await nc.close()
    return out


async def df_cli(url: str, *args: str, codec: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    if codec:
        env |= {"DF_CODEC": "durablefuture.codecs:from_env", **KEYS_ENV}
    cmd = [sys.executable, "-m", "daemons.df_cli", "--nats", url, *args]
    out = await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_an_encrypted_run_stores_no_plaintext() -> None:
    codec = from_env(KEYS_ENV)
    async with df.testing.LocalEnvironment(codec=codec) as env:
        async with env.worker(workflows=[secret_order], activities=[charge]):
            handle = await env.client.start_workflow(
                secret_order, SECRETS["argument"], id="secret-1"
            )

            async def waiting() -> bool:
                history = await handle.fetch_history()
                return any(isinstance(e, ev.SignalWaitStarted) for e in history)

            await wait_for(waiting, 20)
            assert await handle.query("status") == SECRETS["query"]
            assert await handle.update("note", SECRETS["update"]) == SECRETS["update result"]
            await handle.signal("ship", SECRETS["signal"])
            result = await handle.result()
            assert result == {
                "receipt": f"{SECRETS['activity']} for {SECRETS['argument']}",
                "address": SECRETS["signal"],
            }
            # the history read back through the codec is in the clear
            history = await handle.fetch_history()
            started = history[0]
            assert isinstance(started, ev.WorkflowStarted)
            assert started.args == (SECRETS["argument"],)
        stored = await _raw_store(env.nats_url)
        # the store holds the run (its history, status), but none of its payloads
        assert any(b"secret-1" in m for m in stored)
        # (compact envelopes: the metadata, key id included, then the ciphertext)
        assert any(b'"$dfp":"*g,k=k1;' in m for m in stored)
        for what, text in SECRETS.items():
            found = [m[:200] for m in stored if text.encode() in m]
            assert not found, f"the {what} payload is stored in the clear: {found}"

        # a client without the codec sees that the payloads are encrypted, and under which key
        async with await df.Client.connect(env.nats_url) as plain:
            with pytest.raises(df.PayloadError, match=r"encrypted \(key k1\)"):
                await plain.get_workflow_handle("secret-1").result()

        # df workflow history: decoded with --codec (here DF_CODEC), "encrypted (key k1)" without
        shown = await df_cli(env.nats_url, "workflow", "history", "secret-1", codec=True)
        assert SECRETS["argument"] in shown and SECRETS["signal"] in shown
        hidden = await df_cli(env.nats_url, "workflow", "history", "secret-1", codec=False)
        assert "encrypted (key k1)" in hidden
        assert not any(text in hidden for text in SECRETS.values())
        result = await df_cli(env.nats_url, "--json", "workflow", "result", "secret-1", codec=True)
        assert SECRETS["signal"] in result


async def test_a_key_rotation_keeps_old_runs_readable() -> None:
    # the run starts under k1 in the long envelopes of DurableFuture 0.1 and goes on under k2
    # in compact ones: both are read
    old = AesGcm("k1", KEY, compact=False)
    new = AesGcm("k2", generate_key(), old_keys={"k1": KEY})
    async with df.testing.LocalEnvironment(codec=old) as env:
        async with env.worker(workflows=[secret_order], activities=[charge]):
            handle = await env.client.start_workflow(secret_order, "old card", id="rotate-1")

            async def waiting() -> bool:
                history = await handle.fetch_history()
                return any(isinstance(e, ev.SignalWaitStarted) for e in history)

            await wait_for(waiting, 20)
        # workers and clients move to k2; the run started under k1 finishes under k2
        async with await df.Client.connect(env.nats_url, codec=[Zlib(), new]) as client:
            worker = await df.Client.connect(env.nats_url, codec=[Zlib(), new])
            async with df.Worker(worker, "default", [secret_order], [charge]):
                rotated = client.get_workflow_handle("rotate-1")
                await rotated.signal("ship", "new address")
                result = await rotated.result()
            await worker.close()
        assert result == {
            "receipt": f"{SECRETS['activity']} for old card",
            "address": "new address",
        }
        stored = await _raw_store(env.nats_url)
        assert any(b'"key":"k1"' in m for m in stored)
        assert any(b'"$dfp":"*g,k=k2;' in m for m in stored)


async def test_df_worker_takes_a_codec(daemons: Daemons) -> None:
    daemons.env |= KEYS_ENV
    daemons.server()
    daemons.worker(
        "--codec",
        "durablefuture.codecs:from_env",
        "--workflows",
        "tests.integration.test_payload_codecs:secret_order",
        "--activities",
        "tests.integration.test_payload_codecs:charge",
    )
    await wait_namespace(daemons.url)
    async with await df.Client.connect(daemons.url, codec=from_env(KEYS_ENV)) as client:
        handle = await client.start_workflow(
            secret_order, "daemon card", id="d-1", task_queue="tests"
        )
        await handle.signal("ship", "there")
        result = await handle.result(timeout=30)
    assert result["receipt"].endswith("daemon card"), daemons.logs()
    assert not any(b"daemon card" in m for m in await _raw_store(daemons.url))


def greet_secret(name: str) -> str:
    return f"hello {name}"


def scheduled_greeting(name: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=20))
    return (yield df.activity(greet_secret, name, options=opts))


async def test_schedule_arguments_are_encrypted_too() -> None:
    from datetime import UTC, datetime

    codec = AesGcm("k1", KEY)
    async with df.testing.LocalEnvironment(codec=codec) as env:
        async with env.worker(workflows=[scheduled_greeting], activities=[greet_secret]):
            action = df.ScheduleStartWorkflow(
                scheduled_greeting, "SCHED-SECRET-99", id_prefix="sg", task_queue="default"
            )
            far = df.ScheduleSpec(cron=["0 0 1 1 *"], start_at=datetime(2100, 1, 1, tzinfo=UTC))
            handle = await env.client.create_schedule("s1", df.Schedule(action=action, spec=far))
            await handle.trigger()

            async def started() -> list[str]:
                return [r.workflow_id for r in await env.client.list_workflows()]

            ids = await wait_for(started, 20)
            result = await env.client.get_workflow_handle(ids[0]).result(timeout=20)
            assert result == "hello SCHED-SECRET-99"
        stored = await _raw_store(env.nats_url)
        assert not [m[:200] for m in stored if b"SCHED-SECRET-99" in m]
