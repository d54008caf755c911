"""One df-server process serving several namespaces: with `df auth init` accounts (each
namespace logs in with its own server.creds, the namespaces stay isolated) and without auth
(one shared connection)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import durablefuture as df
from daemons.df_server import main as df_server_main
from durablefuture.auth import write
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from durablefuture.server import ServerOptions, Servers
from durablefuture.transport.connection import connect
from durablefuture.transport.subjects import Layout
from tests.conftest import ROOT, Daemon, wait_for, wait_namespace
from tests.integration.test_auth import Probe


def stamp(namespace: str, order_id: str) -> str:
    return f"{namespace}:{order_id}"


def tenant_order(namespace: str, order_id: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=10)
    done = yield df.activity(stamp, namespace, order_id, options=opts)
    return done


async def _run_in(url: str, ns: str, creds: dict[str, str] | None) -> str:
    """Start ``tenant_order`` with id ``order`` in ``ns`` and wait for its result."""
    client = await df.Client.connect(url, ns, creds=creds and creds[f"{ns}/client"])
    worker_client = await df.Client.connect(url, ns, creds=creds and creds[f"{ns}/worker"])
    try:
        async with df.Worker(worker_client, "default", [tenant_order], [stamp]):
            result: str = await client.execute_workflow(
                tenant_order, ns, f"o-{ns}", id="order", timeout=30
            )
            return result
    finally:
        await client.close()
        await worker_client.close()


async def test_one_df_server_serves_every_namespace_of_its_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files = write(tmp_path / "auth", ["a", "b"])
    creds = {f"{ns}/{role}": str(p) for (ns, role), p in files.creds.items()}
    nats_server = NatsServer(str(tmp_path / "nats"), include=str(files.config)).start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # no --namespace: every namespace with a server.creds in --creds-dir
    args = ["daemons.df_server", "--nats", nats_server.url, "--log-format", "text"]
    args += ["--creds-dir", str(tmp_path / "auth"), "--input-ack-wait", "2"]
    server = Daemon("server", args, tmp_path / "server.log", env).start()
    try:
        await wait_for(lambda: "serving 2 namespaces: a, b" in server.log(), 60)
        # the same workflow id in both namespaces: two runs, each with its own result
        results = await asyncio.gather(
            _run_in(nats_server.url, "a", creds), _run_in(nats_server.url, "b", creds)
        )
        assert results == ["a:o-a", "b:o-b"], server.log()
        # isolation holds with one process: b's users see and touch nothing of a's
        async with await df.Client.connect(nats_server.url, "b", creds=creds["b/client"]) as b:
            [started, *_] = await b.get_workflow_handle("order").fetch_history()
            assert isinstance(started, ev.WorkflowStarted) and started.args == ("b", "o-b")
        nc = await connect(nats_server.url, creds=creds["b/client"], timeout=10)
        try:
            probe = Probe(nc, caplog)
            lay_a = Layout("a")
            await probe.publish_refused(lay_a.input("run"))
            await probe.subscribe_refused(f"{lay_a.events_prefix}.closed.>")
        finally:
            await nc.close()
        assert "violation" not in server.log().lower(), server.log()
        assert server.terminate() == 0, server.log()
    finally:
        server.kill()
        nats_server.cleanup()


async def test_namespaces_without_auth_share_one_connection(nats_server: NatsServer) -> None:
    servers = await Servers.connect(nats_server.url, ["x", "y", "x"], ServerOptions())
    assert servers.namespaces == ["x", "y"]
    assert len({id(s.nc) for s in servers.servers}) == 1
    await servers.start()
    task = asyncio.create_task(servers.run())
    try:
        for ns in ("x", "y"):
            await wait_namespace(nats_server.url, ns)
        results = await asyncio.gather(
            _run_in(nats_server.url, "x", None), _run_in(nats_server.url, "y", None)
        )
        assert results == ["x:o-x", "y:o-y"]
    finally:
        await servers.shutdown()
        await task


def test_the_namespaces_and_credentials_are_checked_before_connecting(tmp_path: Path) -> None:
    write(tmp_path / "auth", ["a"])
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--creds-dir", str(empty)], "no <namespace>/server.creds"),
        (["--creds-dir", str(tmp_path / "auth"), "--namespace", "b"], "namespace 'b'"),
        (
            [
                "--creds-dir",
                str(tmp_path / "auth"),
                "--creds",
                str(tmp_path / "auth/a/server.creds"),
            ],
            "not both",
        ),
    ]
    for args, reason in cases:
        result = runner.invoke(df_server_main, ["--nats", "nats://127.0.0.1:1", *args])
        assert result.exit_code == 2, result.output
        assert reason in result.output, result.output
