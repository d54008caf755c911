"""The secured set-up for ``python -m bench --secure on|pair``: logins, TLS and AES-GCM.

For a secured round everything is made in the round's temp dir: ``df auth init`` accounts and
credentials for the bench namespace (df-server logs in as ``server``, df-workers as
``worker``, the driver as ``admin``: the ``client`` role plus the stream and consumer listings
the bench reads its counters from), a throwaway CA with a server certificate for loopback and
a client certificate (nats-server requires TLS and verifies clients), and a fresh AES-256 key
that the driver and the df-workers encrypt every payload with (``--codec bench.secure:codec``).

``--secure pair`` runs, in each round, one unsecured and one secured engine back to back
(alternating which goes first), so both see the same load on a busy machine, and
:func:`ratio_table` prints the medians of each and their ratio.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from attrs import frozen

KEY_ENV = "DF_BENCH_AES_KEY"

__all__ = ["KEY_ENV", "SecureFiles", "codec", "make", "ratio_table"]


@frozen
class SecureFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    auth_config: str
    creds: dict[str, str]
    aes_key: str
    """Base64 of the AES-256 key (for :data:`KEY_ENV`)."""

    parts: tuple[str, ...] = ("auth", "tls", "codec")

    def tls_args(self) -> list[str]:
        if "tls" not in self.parts:
            return []
        return ["--tls-ca", self.ca, "--tls-cert", self.client_cert, "--tls-key", self.client_key]

    def creds_args(self, role: str) -> list[str]:
        return ["--creds", self.creds[role]] if "auth" in self.parts else []


def codec() -> Any:
    """``--codec bench.secure:codec``: AES-GCM with the key of :data:`KEY_ENV`."""
    from durablefuture.codecs import AesGcm

    return AesGcm("bench", base64.b64decode(os.environ[KEY_ENV]))


PARTS = ("auth", "tls", "codec")


def make(directory: str, namespace: str, parts: tuple[str, ...] = PARTS) -> SecureFiles:
    """Credentials, certificates and a key for one secured round, written under ``directory``."""
    from durablefuture.auth import write

    root = Path(directory)
    files = write(root / "auth", [namespace])
    pki = _pki(root / "pki")
    return SecureFiles(
        **pki,
        auth_config=str(files.config),
        creds={role: str(p) for (_, role), p in files.creds.items()},
        aes_key=base64.b64encode(os.urandom(32)).decode(),
        parts=parts,
    )


def _pki(directory: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
        usage: Any = None,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
        )
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), False)
        return b.sign(signer, hashes.SHA256())

    def save(obj: Any, file: str) -> str:
        path = directory / file
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(
                obj.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        return str(path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("bench CA", ca_key, name("bench CA"), ca_key, True)
    loopback: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert(
        "nats-server",
        server_key,
        ca_cert.subject,
        ca_key,
        False,
        ExtendedKeyUsageOID.SERVER_AUTH,
        loopback,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert(
        "df-bench", client_key, ca_cert.subject, ca_key, False, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return {
        "ca": save(ca_cert, "ca.pem"),
        "server_cert": save(server, "server.pem"),
        "server_key": save(server_key, "server-key.pem"),
        "client_cert": save(client, "client.pem"),
        "client_key": save(client_key, "client-key.pem"),
    }


# (workload, key, label, higher is better)
PAIR_ROWS = [
    ("w1", "wf_per_s", "W1 workflows/s", True),
    ("w1", "e2e_p50_ms", "W1 e2e p50 ms", False),
    ("w2", "p50_ms", "W2 p50 ms", False),
    ("w2", "p99_ms", "W2 p99 ms", False),
    ("w1", "nats_out_bytes_per_wf", "W1 nats-server bytes out/wf", False),
    ("w1", "nats_writes_per_wf", "W1 nats-server write calls/wf (sockets + store)", False),
]


def ratio_table(records: list[dict[str, Any]], parts: tuple[str, ...] = PARTS) -> str:
    """Medians of the unsecured and secured rounds and how much slower the secured one is.

    Also the median of the per-round ratios (each pair ran within the same minute)."""
    vals: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    by_round: dict[tuple[str, str, int, str], float] = {}
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        mode = r.get("secure")
        if mode not in ("on", "off") or "error" in r:
            continue
        wl = str(r.get("workload"))
        for _, key, _, _ in PAIR_ROWS:
            if isinstance(r.get(key), int | float):
                vals[(mode, wl, key)].append(float(r[key]))
                by_round[(wl, key, int(r.get("round", 0)), mode)] = float(r[key])
        per_wf = r.get("cpu_ms_per_wf")
        if wl == "w1" and isinstance(per_wf, dict):
            cpu[(mode, "total")].append(sum(per_wf.values()))
            for proc, v in per_wf.items():
                cpu[(mode, proc)].append(v)
    lines = [
        f"| metric (secure: {'+'.join(parts)}) | off | on | on/off | slower by | "
        "per-round on/off |",
        "|---|---|---|---|---|---|",
    ]
    for wl, key, label, higher in PAIR_ROWS:
        off, on = vals.get(("off", wl, key)), vals.get(("on", wl, key))
        if not off or not on:
            continue
        m_off, m_on = statistics.median(off), statistics.median(on)
        ratio = m_on / m_off if m_off else float("nan")
        slower = (1 / ratio - 1) if higher else (ratio - 1)
        rounds = sorted({k[2] for k in by_round if k[:2] == (wl, key)})
        pairs = [
            by_round[(wl, key, n, "on")] / by_round[(wl, key, n, "off")]
            for n in rounds
            if (wl, key, n, "on") in by_round and by_round.get((wl, key, n, "off"))
        ]
        per_round = f"{statistics.median(pairs):.2f} ({len(pairs)} pairs)" if pairs else "–"
        lines.append(
            f"| {label} | {m_off:.2f} | {m_on:.2f} | {ratio:.2f} | {slower:+.0%} | {per_round} |"
        )
    side = [
        float(r["pair_ratio_p50"])
        for r in records
        if r.get("secure") == "on" and isinstance(r.get("pair_ratio_p50"), int | float)
    ]
    if side:  # --secure side: workflow by workflow
        median = statistics.median(side)
        lines.append(
            f"| W2 on/off of workflows run one after the other | | | {median:.2f} | "
            f"{median - 1:+.0%} | {', '.join(f'{x:.2f}' for x in side)} |"
        )
    for proc in ("server", "worker", "client", "nats", "total"):
        off, on = cpu.get(("off", proc)), cpu.get(("on", proc))
        if off and on:
            m_off, m_on = statistics.median(off), statistics.median(on)
            pairs = [b / a for a, b in zip(off, on, strict=False) if a]
            per_round = f"{statistics.median(pairs):.2f} ({len(pairs)} pairs)" if pairs else "–"
            lines.append(
                f"| W1 {proc} CPU ms/wf | {m_off:.2f} | {m_on:.2f} | {m_on / m_off:.2f} | "
                f"{m_on / m_off - 1:+.0%} | {per_round} |"
            )
    return "\n".join(lines) + "\n"
