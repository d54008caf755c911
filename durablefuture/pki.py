"""A private CA and the certificates for TLS to NATS (``df auth init --tls-host HOST``).

One CA signs a server certificate for nats-server (valid for the given host names and
addresses, plus ``localhost`` and ``127.0.0.1``) and one client certificate that every
DurableFuture process presents (nats-server's ``verify: true``). Keys are EC P-256, written
mode 0600; the CA's key is not kept: to add a host or renew, run it again (new CA, new
certificates for everyone). Needs ``cryptography`` (``pip install durablefuture[crypto]``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from durablefuture.core.errors import InvalidArgumentError

__all__ = ["TLS_DIR", "TlsFiles", "check_hosts", "write_tls"]

TLS_DIR = "tls"
VALID_DAYS = 365


@frozen
class TlsFiles:
    """What :func:`write_tls` wrote (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _x509() -> Any:
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - depends on the installation
        raise InvalidArgumentError(
            "making TLS certificates needs the 'cryptography' package: "
            "pip install durablefuture[crypto]"
        ) from None
    return x509


def check_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` and ``localhost``, ``127.0.0.1``, each checked to be a name or an address."""
    for host in hosts:
        if not host or any(c.isspace() or c in "/:@" for c in host) or len(host) > 253:
            raise InvalidArgumentError(f"--tls-host {host!r} is not a host name or an address")
    return list(dict.fromkeys([*hosts, "localhost", "127.0.0.1"]))


def _names(hosts: Sequence[str]) -> list[Any]:
    x509 = _x509()
    out: list[Any] = []
    for host in check_hosts(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def write_tls(
    directory: str | os.PathLike[str], hosts: Sequence[str], *, force: bool = False
) -> TlsFiles:
    """Write ``ca.pem``, ``server.pem``/``server-key.pem`` (for ``hosts``) and
    ``client.pem``/``client-key.pem`` into ``directory``.

    Raises:
        InvalidArgumentError: a host is not a name or an address, or the files exist already
            (and ``force`` is false).
    """
    check_hosts(hosts)
    if not force and (Path(directory) / "ca.pem").exists():
        raise InvalidArgumentError(
            f"{Path(directory) / 'ca.pem'} exists already; pass --force to make a new CA and "
            "new certificates for everyone"
        )
    x509 = _x509()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    sans = _names(hosts)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def sign(subject: str, key: Any, ca_key: Any, issuer: Any, leaf: Any = None) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(
                x509.BasicConstraints(ca=leaf is None, path_length=0 if leaf is None else None),
                critical=True,
            )
        )
        if leaf is not None:
            usage, alt = leaf
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if alt:
                builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def save_cert(cert: Any, file: str) -> Path:
        path = root / file
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def save_key(key: Any, file: str) -> Path:
        path = root / file
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = sign("DurableFuture NATS CA", ca_key, ca_key, name("DurableFuture NATS CA"))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = sign(
        "nats-server", server_key, ca_key, ca.subject, (ExtendedKeyUsageOID.SERVER_AUTH, sans)
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = sign(
        "durablefuture", client_key, ca_key, ca.subject, (ExtendedKeyUsageOID.CLIENT_AUTH, [])
    )
    return TlsFiles(
        ca=save_cert(ca, "ca.pem"),
        server_cert=save_cert(server, "server.pem"),
        server_key=save_key(server_key, "server-key.pem"),
        client_cert=save_cert(client, "client.pem"),
        client_key=save_key(client_key, "client-key.pem"),
    )
