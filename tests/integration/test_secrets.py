"""NATS passwords and tokens never appear in what the programs print: banners, logs, errors.

The daemons, ``df`` and ``df ui`` run as subprocesses (as a user runs them) against a real
nats-server that requires a user and password (or a token), at debug log level so that
everything that could be printed is; their whole output is searched for the secret.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durablefuture.logs import JsonFormatter, MessageFormatter, TextFormatter
from durablefuture.natsserver import NatsServer, free_port
from durablefuture.transport.redaction import redact, remember, scrub
from tests.conftest import ROOT, wait_namespace
from workflows_examples import TASK_QUEUE

PASSWORD = "s3cr3t-pw"
TOKEN = "t0k3n-s3cr3t-42"


class _AuthNats(NatsServer):
    """nats-server that refuses clients without the credentials in ``auth``."""

    def __init__(self, store_dir: str, auth: str) -> None:
        super().__init__(store_dir)
        self.auth = auth

    def _config(self) -> str:
        path = super()._config()
        with open(path, "a") as f:
            f.write(f"authorization {{ {self.auth} }}\n")
        return path


@pytest.fixture
def password_nats(tmp_path: Path) -> Iterator[_AuthNats]:
    server = _AuthNats(str(tmp_path / "nats"), f'user: alice, password: "{PASSWORD}"')
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def token_nats(tmp_path: Path) -> Iterator[_AuthNats]:
    server = _AuthNats(str(tmp_path / "nats"), f'token: "{TOKEN}"')
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DF_NATS_URL", None)
    env.update(extra)
    return env


def _run(*args: str, timeout: float = 60, **env: str) -> str:
    """Run ``python -m ARGS`` to its end; its stdout and stderr together, with the exit code."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return f"[exit {done.returncode}]\n{done.stdout}\n{done.stderr}"


class _Running:
    """A long-running program (daemon or ``df ui``), its output in a file, stopped by its PID."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=_env(),
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


async def _ui_page(ui: _Running, path: str) -> str:
    banner = await ui.wait_output("Press Ctrl-C")
    address = banner.split("DurableFuture UI on ", 1)[1].split()[0]
    async with httpx.AsyncClient(base_url=address, timeout=20) as http:
        page = await http.get(path)
    assert page.status_code == 200, page.text
    return banner


# ------------------------------------------------------------------ the text functions


def test_redact_masks_the_password_or_token_of_each_url() -> None:
    assert redact("nats://alice:pw@h:4222") == "nats://alice:***@h:4222"
    assert redact("nats://tok3n@h") == "nats://***@h"  # a user without a password is a token
    assert redact("alice:pw@h:4222") == "alice:***@h:4222"  # no scheme
    assert redact("nats://a:p@h1:1,nats://b:q@h2:2, tls://t@h3") == (
        "nats://a:***@h1:1,nats://b:***@h2:2, tls://***@h3"
    )
    assert redact("tls://a:p%40ss@[::1]:4222/x?y=1") == "tls://a:***@[::1]:4222/x?y=1"
    assert redact("nats://a:p@ss@h") == "nats://a:***@h"  # an unescaped "@" in the password
    assert redact("nats://127.0.0.1:4222,h2") == "nats://127.0.0.1:4222,h2"


def test_scrub_removes_remembered_secrets_in_any_form() -> None:
    remember("nats://alice:Sup3r-secret%21@127.0.0.1,nats://T0ken-xyz@10.0.0.1:4222")
    echoes = [
        "nats: ParseResult(scheme='nats', netloc='alice:Sup3r-secret%21@127.0.0.1:4222')",
        "cannot reach nats://alice:Sup3r-secret%21@127.0.0.1:4222 (normalised with its port)",
        "auth failed for user alice password Sup3r-secret! (decoded)",
        "server T0ken-xyz@10.0.0.1:4222 refused",
        "and a URL it was never told of: nats://bob:0ther-pw@example:4222",
    ]
    for text in echoes:
        clean = scrub(text)
        for secret in ("Sup3r-secret", "T0ken-xyz", "0ther-pw"):
            assert secret not in clean, clean
    assert scrub("nats://bob:0ther-pw@example:4222") == "nats://bob:***@example:4222"
    assert scrub("nothing secret here") == "nothing secret here"


def test_log_lines_are_scrubbed_whoever_logs_them() -> None:
    remember("nats://carol:L0g-secret-pw@127.0.0.1:4222")
    try:
        raise ConnectionError("nats://carol:L0g-secret-pw@127.0.0.1:4222 refused")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "nats", logging.ERROR, __file__, 1, "connect to %s", ("carol:L0g-secret-pw@h",), exc_info
    )
    record.nats_url = "nats://carol:L0g-secret-pw@127.0.0.1:4222"
    for formatter in (JsonFormatter(), TextFormatter(), MessageFormatter("%(message)s")):
        line = formatter.format(record)
        assert "L0g-secret-pw" not in line and "***" in line, line


# ------------------------------------------------------------------ the programs


async def test_no_program_prints_the_password(password_nats: _AuthNats, tmp_path: Path) -> None:
    url = f"nats://alice:{PASSWORD}@127.0.0.1:{password_nats.port}"
    unused = f"nats://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    debug = ("--log-level", "debug", "--log-format", "text")
    server = _Running(tmp_path / "server.log", "daemons.df_server", "--nats", url, *debug)
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
    )
    ui = _Running(tmp_path / "ui.log", "daemons.df_cli", "--nats", url, "ui", "--port", "0")
    outputs: dict[str, str] = {}
    try:
        await wait_namespace(url)
        df = ("daemons.df_cli", "--nats", url)
        start = ("workflow", "start", "order_workflow", "--id", "secret-1", "--wait")
        order = ("--task-queue", TASK_QUEUE, "--input", '["secret-1", 1.0]')
        outputs["df workflow start"] = await asyncio.to_thread(_run, *df, *start, *order)
        assert "TRACK-SECRET-1" in outputs["df workflow start"], outputs["df workflow start"]
        outputs["df workflow describe"] = await asyncio.to_thread(
            _run, *df, "workflow", "describe", "secret-1"
        )
        # several servers, the first one unreachable: it connects through the second
        outputs["df with two URLs"] = await asyncio.to_thread(
            _run, "daemons.df_cli", "--nats", f"{unused},{url}", "workflow", "list"
        )
        assert "secret-1" in outputs["df with two URLs"], outputs["df with two URLs"]
        banner = await _ui_page(ui, "/workflows/secret-1")
        assert f"NATS nats://alice:***@127.0.0.1:{password_nats.port}" in banner, banner
        outputs["df dev"] = await asyncio.to_thread(
            _run,
            "daemons.df_cli",
            "dev",
            "--run",
            "order",
            "--data-dir",
            str(tmp_path / "dev"),
            DF_NATS_URL=url,
        )
        assert "[exit 0]" in outputs["df dev"], outputs["df dev"]
    finally:
        outputs["df ui"] = ui.stop(signal.SIGINT)
        outputs["df-worker"] = worker.stop()
        outputs["df-server"] = server.stop()
    assert "df-server serving namespace" in outputs["df-server"]  # it did log, at debug
    for program, output in outputs.items():
        assert PASSWORD not in output, f"{program} printed the password:\n{output}"


def _failures(port: int) -> dict[str, tuple[str, ...]]:
    bad = f"nats://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    wrong = f"nats://alice:Wr0ng-passw0rd@127.0.0.1:{port}"
    fast = ("--connect-timeout", "1")
    worker = ("--workflows", "workflows_examples:WORKFLOWS", "--log-format", "text")
    return {
        "df-server": ("daemons.df_server", "--nats", bad, *fast, "--log-level", "debug"),
        "df-worker": ("daemons.df_worker", "--nats", bad, *fast, *worker),
        "df": ("daemons.df_cli", "--nats", bad, *fast, "workflow", "list"),
        "df ui": ("daemons.df_cli", "--nats", bad, *fast, "ui", "--port", "0"),
        "df, two URLs": ("daemons.df_cli", "--nats", f"{bad},{bad}", *fast, "workflow", "list"),
        "df, wrong password": ("daemons.df_cli", "--nats", wrong, *fast, "workflow", "list"),
        "df-server, wrong password": ("daemons.df_server", "--nats", wrong, *fast),
        "df, malformed URL": (
            "daemons.df_cli",
            "--nats",
            f"nats://alice:{PASSWORD}@127.0.0.1:no-port",
            "workflow",
            "list",
        ),
    }


async def test_failures_name_the_url_but_not_the_password(password_nats: _AuthNats) -> None:
    cases = _failures(password_nats.port)
    outputs = await asyncio.gather(*(asyncio.to_thread(_run, *a) for a in cases.values()))
    for (program, _), output in zip(cases.items(), outputs, strict=True):
        assert "[exit 0]" not in output, f"{program} did not fail:\n{output}"
        assert "error: " in output, f"{program} said no error line:\n{output}"
        assert "alice:***@127.0.0.1:" in output, f"{program} did not name the URL:\n{output}"
        for secret in (PASSWORD, "Wr0ng-passw0rd"):
            assert secret not in output, f"{program} printed a password:\n{output}"
        if "wrong password" in program:
            assert "Authorization Violation" in output, output  # the reason, not a bare timeout
        if "malformed" in program:
            assert "is not valid" in output and "Traceback" not in output, output


async def test_no_program_prints_the_token(token_nats: _AuthNats, tmp_path: Path) -> None:
    url = f"nats://{TOKEN}@127.0.0.1:{token_nats.port}"
    server = _Running(
        tmp_path / "server.log", "daemons.df_server", "--nats", url, "--log-level", "debug"
    )
    ui = _Running(tmp_path / "ui.log", "daemons.df_cli", "--nats", url, "ui", "--port", "0")
    outputs: dict[str, str] = {}
    try:
        await wait_namespace(url)
        banner = await _ui_page(ui, "/")
        assert f"NATS nats://***@127.0.0.1:{token_nats.port}" in banner, banner
        bad = f"nats://{TOKEN}@127.0.0.1:{free_port()}"
        outputs["df, unreachable"] = await asyncio.to_thread(
            _run, "daemons.df_cli", "--nats", bad, "--connect-timeout", "1", "workflow", "list"
        )
        assert (
            "error: could not connect to NATS at nats://***@127.0.0.1:"
            in (outputs["df, unreachable"])
        ), outputs["df, unreachable"]
    finally:
        outputs["df ui"] = ui.stop(signal.SIGINT)
        outputs["df-server"] = server.stop()
    for program, output in outputs.items():
        assert TOKEN not in output, f"{program} printed the token:\n{output}"
