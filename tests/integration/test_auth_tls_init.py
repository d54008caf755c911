"""`df auth init --tls-host`: the generated CA and certificates secure a nats-server that
requires TLS with client certificates and the generated logins, and a workflow runs end to end
over it with every role's credentials."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

import durablefuture as df
from daemons.df_cli import main as df_main
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.transport.connection import connect


def checked(order_id: str) -> str:
    return f"checked {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    done = yield df.activity(
        checked, order_id, options=df.ActivityOptions(start_to_close_timeout=10)
    )
    return done


async def test_the_generated_certificates_and_logins_secure_nats(tmp_path: Path) -> None:
    out = tmp_path / "df"
    result = CliRunner().invoke(
        df_main,
        ["auth", "init", "--out", str(out), "--namespace", "a", "--tls-host", "nats.internal"],
    )
    assert result.exit_code == 0, result.output
    tls_dir = out / "tls"
    assert f"--tls-ca {tls_dir / 'ca.pem'}" in result.output
    for key in ("server-key.pem", "client-key.pem"):
        assert stat.S_IMODE((tls_dir / key).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tls_dir / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "nats.internal" in names.get_values_for_type(x509.DNSName)

    nats_server = NatsServer(
        str(tmp_path / "nats"),
        tls_cert=str(tls_dir / "server.pem"),
        tls_key=str(tls_dir / "server-key.pem"),
        tls_ca=str(tls_dir / "ca.pem"),
        include=str(out / "df-auth.conf"),
    ).start()
    tls = df.TlsConfig(
        ca=str(tls_dir / "ca.pem"),
        cert=str(tls_dir / "client.pem"),
        key=str(tls_dir / "client-key.pem"),
    )
    creds = {role: str(out / "a" / f"{role}.creds") for role in ("server", "worker", "client")}
    try:
        assert nats_server.url.startswith("tls://")
        # neither a login without the client certificate nor a certificate without a login
        with pytest.raises(df.DurableFutureError):
            await connect(
                nats_server.url, creds=creds["client"], tls=df.TlsConfig(ca=tls.ca), timeout=2
            )
        with pytest.raises(df.DurableFutureError):
            await connect(nats_server.url, tls=tls, timeout=2)
        server = await Server.connect(
            nats_server.url, ServerOptions(namespace="a"), creds=creds["server"], tls=tls
        )
        await server.start()
        task = asyncio.create_task(server.run())
        try:
            client = await df.Client.connect(nats_server.url, "a", creds=creds["client"], tls=tls)
            workers = await df.Client.connect(nats_server.url, "a", creds=creds["worker"], tls=tls)
            try:
                async with df.Worker(workers, "default", [order], [checked]):
                    got = await client.execute_workflow(order, "o-1", id="o-1", timeout=30)
                assert got == "checked o-1"
            finally:
                await client.close()
                await workers.close()
        finally:
            await server.shutdown()
            await task
    finally:
        nats_server.cleanup()


def test_a_tls_host_that_cannot_be_one_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        df_main,
        ["auth", "init", "--out", str(tmp_path), "--namespace", "a", "--tls-host", "a b"],
    )
    assert result.exit_code == 2 and "--tls-host 'a b'" in result.output, result.output
    assert not list(tmp_path.iterdir())  # nothing written
