"""TLS to NATS, against a real nats-server that requires TLS and verifies client certificates.

The CA and the certificates are made for each test (``tests/integration/pki.py``). The server
also requires a user and password, so that the tests see that neither the password nor the
client key is ever printed. The daemons, ``df`` and ``df ui`` run as subprocesses, as a user
runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

import durablefuture as df
from durablefuture.natsserver import NatsServer
from tests.conftest import ROOT, wait_namespace
from tests.integration.helpers import ConnectRetries
from tests.integration.pki import Pki, make_pki
from workflows_examples import TASK_QUEUE

PASSWORD = "tls-s3cr3t-pw"


class _TlsNats(NatsServer):
    """nats-server requiring TLS, a client certificate, and a user and password."""

    def _config(self) -> str:
        path = super()._config()
        with open(path, "a") as f:
            f.write(f'authorization {{ user: alice, password: "{PASSWORD}" }}\n')
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_nats(tmp_path: Path, pki: Pki) -> Iterator[_TlsNats]:
    server = _TlsNats(
        str(tmp_path / "nats"),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca=str(pki.ca),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def _url(server: NatsServer, scheme: str = "tls") -> str:
    return f"{scheme}://alice:{PASSWORD}@127.0.0.1:{server.port}"


def _shown(server: NatsServer, scheme: str = "tls") -> str:
    return f"{scheme}://alice:***@127.0.0.1:{server.port}"


def _tls(pki: Pki, **changes: object) -> df.TlsConfig:
    files: dict[str, object] = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key}
    files.update(changes)
    return df.TlsConfig(**files)  # type: ignore[arg-type]


def _context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def _tls_args(pki: Pki) -> tuple[str, ...]:
    return (
        "--tls-ca",
        str(pki.ca),
        "--tls-cert",
        str(pki.client_cert),
        "--tls-key",
        str(pki.client_key),
    )


def _tls_env(pki: Pki) -> dict[str, str]:
    return {
        "DF_NATS_TLS_CA": str(pki.ca),
        "DF_NATS_TLS_CERT": str(pki.client_cert),
        "DF_NATS_TLS_KEY": str(pki.client_key),
    }


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_NATS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run ``python -m ARGS`` to its end: the exit code, then stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return f"[exit {done.returncode}]\n{done.stdout}\n{done.stderr}"


class _Running:
    """A long-running program, its output in a file, stopped by its PID."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=_env(**(env or {})),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_output(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{out}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{out}"
            await asyncio.sleep(0.05)
        return out

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return f"[exit {self.proc.returncode}]\n{self.output()}"


def _secrets(pki: Pki) -> list[str]:
    """The password, and each line of the client and server keys' PEM bodies."""
    lines = [PASSWORD]
    for key in (pki.client_key, pki.server_key):
        lines += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return lines


def _assert_no_secret(outputs: dict[str, str], pki: Pki) -> None:
    for program, output in outputs.items():
        for secret in _secrets(pki):
            assert secret not in output, f"{program} printed a secret:\n{output}"


# ------------------------------------------------------------------ end to end


async def test_a_workflow_runs_end_to_end_over_tls(
    tls_nats: _TlsNats, pki: Pki, tmp_path: Path
) -> None:
    """df-server (options), df-worker (environment variables), df and df ui, all over TLS
    with client certificates; and the library, with a TlsConfig and with an SSLContext."""
    url = _url(tls_nats)
    debug = ("--log-level", "debug", "--log-format", "text")
    server = _Running(
        tmp_path / "server.log", "daemons.df_server", "--nats", url, *_tls_args(pki), *debug
    )
    worker = _Running(
        tmp_path / "worker.log",
        "daemons.df_worker",
        "--nats",
        url,
        "--task-queue",
        TASK_QUEUE,
        "--workflows",
        "workflows_examples:WORKFLOWS",
        "--activities",
        "workflows_examples:ACTIVITIES",
        *debug,
        env=_tls_env(pki),
    )
    ui = _Running(
        tmp_path / "ui.log", "daemons.df_cli", "--nats", url, *_tls_args(pki), "ui", "--port", "0"
    )
    outputs: dict[str, str] = {}
    try:
        await wait_namespace(url, tls=_context(pki))
        cli = ("daemons.df_cli", "--json", "--nats", url, *_tls_args(pki))
        started = await asyncio.to_thread(
            _run,
            *cli,
            "workflow",
            "start",
            "order_workflow",
            "--id",
            "tls-1",
            "--task-queue",
            TASK_QUEUE,
            "--input",
            '["tls-1", 42.0]',
            "--wait",
        )
        outputs["df workflow start"] = started
        assert started.startswith("[exit 0]"), started
        reply = orjson.loads(started.split("\n", 1)[1].split("\n\n", 1)[0])
        assert reply["result"]["tracking"] == "TRACK-TLS-1", started

        async with await df.Client.connect(url, tls=_tls(pki)) as client:
            described = await client.get_workflow_handle("tls-1").describe()
        assert described.status == "completed"
        async with await df.Client.connect(url, tls=_context(pki)) as client:
            assert await client.get_workflow_handle("tls-1").result(timeout=10) == reply["result"]

        banner = await ui.wait_output("Press Ctrl-C")
        address = banner.split("DurableFuture UI on ", 1)[1].split()[0]
        async with httpx.AsyncClient(base_url=address, timeout=20) as http:
            page = await http.get("/workflows/tls-1")
        assert page.status_code == 200 and "tls-1" in page.text, page.text
    finally:
        outputs["df ui"] = ui.stop(signal.SIGINT)
        outputs["df-worker"] = worker.stop()
        outputs["df-server"] = server.stop()
    assert outputs["df-server"].startswith("[exit 0]"), outputs["df-server"]
    assert outputs["df-worker"].startswith("[exit 0]"), outputs["df-worker"]
    assert "df-server serving namespace" in outputs["df-server"]  # it did log, at debug
    _assert_no_secret(outputs, pki)


# ------------------------------------------------------------------ handshake failures


async def _refused(url: str, tls: df.TlsConfig | None) -> str:
    """Connect (allowing 20 s); the TlsError's message, which must come at once."""
    with ConnectRetries() as retries, pytest.raises(df.TlsError) as caught:
        await df.Client.connect(url, tls=tls, connect_timeout=20)
    assert retries.count == 0, "a TLS failure was retried"
    return str(caught.value)


async def test_without_a_client_certificate_the_connection_fails_clearly(
    tls_nats: _TlsNats, pki: Pki
) -> None:
    message = await _refused(_url(tls_nats), df.TlsConfig(ca=pki.ca))
    assert message.startswith(f"NATS at {_shown(tls_nats)} requires a TLS client certificate")
    assert "--tls-cert and --tls-key" in message, message

    only_ca = ("--tls-ca", str(pki.ca))
    cli = await asyncio.to_thread(
        _run, "daemons.df_cli", "--nats", _url(tls_nats), *only_ca, "workflow", "list"
    )
    assert cli.startswith("[exit 2]"), cli
    assert f"error: NATS at {_shown(tls_nats)} requires a TLS client certificate" in cli, cli
    assert "Traceback" not in cli, cli
    _assert_no_secret({"df": cli, "library": message}, pki)


async def test_a_wrong_ca_fails_clearly(tls_nats: _TlsNats, pki: Pki) -> None:
    message = await _refused(_url(tls_nats), _tls(pki, ca=pki.other_ca))
    assert message.startswith(f"cannot verify the TLS certificate of NATS at {_shown(tls_nats)}")
    assert f"not signed by the CA in {str(pki.other_ca)!r}" in message, message
    assert "wrong CA?" in message, message

    wrong = (
        "--tls-ca",
        str(pki.other_ca),
        "--tls-cert",
        str(pki.client_cert),
        "--tls-key",
        str(pki.client_key),
    )
    worker = ("--workflows", "workflows_examples:WORKFLOWS")
    cases = {
        "df-server": ("daemons.df_server", "--nats", _url(tls_nats), *wrong),
        "df-worker": ("daemons.df_worker", "--nats", _url(tls_nats), *wrong, *worker),
        "df": ("daemons.df_cli", "--nats", _url(tls_nats), *wrong, "workflow", "list"),
        "df ui": ("daemons.df_cli", "--nats", _url(tls_nats), *wrong, "ui", "--port", "0"),
    }
    outputs = await asyncio.gather(*(asyncio.to_thread(_run, *a) for a in cases.values()))
    for program, output in zip(cases, outputs, strict=True):
        assert not output.startswith("[exit 0]"), f"{program} did not fail:\n{output}"
        assert f"error: cannot verify the TLS certificate of NATS at {_shown(tls_nats)}" in (
            output
        ), f"{program}:\n{output}"
        assert "wrong CA?" in output and "Traceback" not in output, f"{program}:\n{output}"
    _assert_no_secret(dict(zip(cases, outputs, strict=True)), pki)


async def test_a_tls_server_asked_without_tls_options_names_the_ca_option(
    tls_nats: _TlsNats, pki: Pki
) -> None:
    for scheme in ("nats", "tls"):  # a tls:// URL alone trusts only the system's CAs
        message = await _refused(_url(tls_nats, scheme), None)
        assert message.startswith(f"NATS at {_shown(tls_nats, scheme)} requires TLS"), message
        assert "--tls-ca" in message, message


async def test_the_server_name_is_checked_and_can_be_set(
    tls_nats: _TlsNats, pki: Pki, tmp_path: Path
) -> None:
    message = await _refused(_url(tls_nats), _tls(pki, hostname="nats.example.com"))
    assert "is not valid for the name connected to" in message, message
    assert "--tls-hostname" in message, message

    # a certificate for nats.example.com, reached at 127.0.0.1: refused, unless that name is set
    other = NatsServer(
        str(tmp_path / "other"),
        tls_cert=str(pki.wrong_host_cert),
        tls_key=str(pki.wrong_host_key),
        tls_ca=str(pki.ca),
    )
    with other:
        message = await _refused(other.url, _tls(pki))
        assert "IP address mismatch" in message and "--tls-hostname" in message, message
        client = await df.Client.connect(other.url, tls=_tls(pki, hostname="nats.example.com"))
        await client.close()


async def test_a_nats_url_is_upgraded_to_tls(tls_nats: _TlsNats, pki: Pki) -> None:
    client = await df.Client.connect(_url(tls_nats, "nats"), tls=_tls(pki))
    try:
        assert client.nc.is_connected
    finally:
        await client.close()


async def test_tls_is_never_dropped_for_plain_text(nats_server: NatsServer, pki: Pki) -> None:
    """nats-py would talk in plain text to a server that does not require TLS."""
    port = nats_server.port
    for url, tls in (
        (f"nats://127.0.0.1:{port}", df.TlsConfig(ca=pki.ca)),
        (f"tls://127.0.0.1:{port}", None),
    ):
        message = await _refused(url, tls)
        assert message.startswith(f"NATS at {url} does not require TLS, but TLS was asked for")


# ------------------------------------------------------------------ files that cannot work


def test_tls_files_that_cannot_work_are_refused_naming_the_option_and_path(
    pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-ca.pem"

    def refusal(**files: object) -> str:
        with pytest.raises(df.InvalidArgumentError) as caught:
            df.TlsConfig(**files).ssl_context()  # type: ignore[arg-type]
        return str(caught.value)

    message = refusal(ca=missing)
    assert f"cannot read the TLS CA file {str(missing)!r}" in message, message
    assert "--tls-ca, env DF_NATS_TLS_CA" in message and "No such file" in message, message
    message = refusal(ca=tmp_path)
    assert "--tls-ca" in message and "Is a directory" in message, message
    message = refusal(ca=pki.client_key)
    assert "holds no PEM certificate" in message and "--tls-ca" in message, message
    message = refusal(cert=pki.client_cert, key=missing)
    assert "TLS client key" in message and "--tls-key, env DF_NATS_TLS_KEY" in message, message
    message = refusal(cert=pki.client_cert, key=pki.server_key)
    assert "the key is not the one of the certificate" in message, message
    assert "--tls-cert" in message and "--tls-key" in message, message
    message = refusal(cert=pki.client_cert)
    assert "must hold the PEM certificate and its key" in message, message

    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    message = refusal(cert=pki.client_cert, key=encrypted)  # refused, not prompted for
    assert "is encrypted with a passphrase" in message, message

    with pytest.raises(df.InvalidArgumentError, match=r"without its certificate.*--tls-cert"):
        df.TlsConfig(key=pki.client_key)
    assert df.TlsConfig(ca="", cert="", key="", hostname="") == df.TlsConfig()


def test_the_programs_refuse_a_tls_file_that_cannot_work_before_connecting(
    pki: Pki, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.pem")
    unreachable = "tls://127.0.0.1:9"  # nothing listens: it must not get that far
    worker = ("--workflows", "workflows_examples:WORKFLOWS")
    cli = _run("daemons.df_cli", "--nats", unreachable, "--tls-ca", missing, "workflow", "list")
    server = _run(
        "daemons.df_server",
        "--nats",
        unreachable,
        env={"DF_NATS_TLS_CERT": str(pki.client_cert), "DF_NATS_TLS_KEY": missing},
    )
    worker_out = _run(
        "daemons.df_worker", "--nats", unreachable, *worker, env={"DF_NATS_TLS_KEY": missing}
    )
    assert cli.startswith("[exit 2]"), cli
    assert f"error: cannot read the TLS CA file {missing!r} (TlsConfig.ca, --tls-ca" in cli, cli
    assert server.startswith("[exit 2]"), server
    assert f"cannot read the TLS client key {missing!r}" in server, server
    assert "DF_NATS_TLS_KEY" in server, server
    assert worker_out.startswith("[exit 2]"), worker_out
    assert "without its certificate" in worker_out and "--tls-cert" in worker_out, worker_out
    for output in (cli, server, worker_out):
        assert "could not connect" not in output and "Traceback" not in output, output
