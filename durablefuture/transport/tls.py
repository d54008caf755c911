"""TLS to NATS: which files to trust and present, turned into an ``ssl.SSLContext``; and what a
failed handshake most likely means, in words.

Only the standard library's ``ssl`` is used. A file is read when the context is made (once per
connect), so a wrong path or a file that is not PEM is refused at once, naming the option, the
environment variable and the path. The contents of a key file are never printed.
"""

from __future__ import annotations

import os
import ssl

from attrs import field, frozen

from durablefuture.core.errors import InvalidArgumentError

__all__ = ["TlsConfig", "explain_handshake_failure"]

# field -> (what it is, the command-line option, its environment variable)
_LABELS = {
    "ca": ("TLS CA file", "--tls-ca", "DF_NATS_TLS_CA"),
    "cert": ("TLS client certificate", "--tls-cert", "DF_NATS_TLS_CERT"),
    "key": ("TLS client key", "--tls-key", "DF_NATS_TLS_KEY"),
}


def _where(name: str) -> str:
    _, option, env = _LABELS[name]
    return f"TlsConfig.{name}, {option}, env {env}"


def _path(value: str | os.PathLike[str] | None) -> str | None:
    """A path as a string; an empty one (an environment variable set to "") is no path."""
    if value is None:
        return None
    text = os.fspath(value)
    return text or None


def _hostname(value: str | None) -> str | None:
    return value or None


@frozen
class TlsConfig:
    """TLS for the connection to NATS: ``df.TlsConfig(ca=..., cert=..., key=...)``.

    Args:
        ca: PEM file of the CA(s) that signed the NATS server's certificate. Without it the
            system's trusted CAs are used.
        cert: PEM file of this client's certificate, for a server that verifies clients
            (``verify: true`` in its ``tls {}`` block). May also hold the key.
        key: PEM file of the client certificate's private key (unencrypted; protect it with file
            permissions). Needs ``cert``.
        hostname: the name the server's certificate must hold, when it differs from the host in
            the URL (e.g. connecting by IP address to a certificate issued for a DNS name).

    ``TlsConfig()`` asks for TLS verified against the system's CAs (as a ``tls://`` URL does).
    """

    ca: str | None = field(default=None, converter=_path, kw_only=True)
    cert: str | None = field(default=None, converter=_path, kw_only=True)
    key: str | None = field(default=None, converter=_path, kw_only=True)
    hostname: str | None = field(default=None, converter=_hostname, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise InvalidArgumentError(
                f"a TLS client key ({self.key!r}) was given without its certificate; pass the "
                f"certificate too ({_where('cert')})"
            )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server (TLS 1.2 or newer) and presents ``cert``.

        Raises:
            InvalidArgumentError: a file is missing, unreadable or not PEM, the key does not
                belong to the certificate, or the key is encrypted; naming the option and path.
        """
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None:
                _check_readable(name, path)
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        except ssl.SSLError as exc:
            raise InvalidArgumentError(
                f"the TLS CA file {self.ca!r} ({_where('ca')}) holds no PEM certificate "
                f"({_reason(exc)}); pass the PEM file of the CA that signed the NATS server's "
                "certificate"
            ) from None
        if self.cert is not None:
            _load_client_certificate(context, self.cert, self.key)
        return context


def _check_readable(name: str, path: str) -> None:
    what = _LABELS[name][0]
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidArgumentError(
            f"cannot read the {what} {path!r} ({_where(name)}): {reason}"
        ) from None


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a daemon would hang there.
    raise _EncryptedKeyError


def _load_client_certificate(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    shown = f"{cert!r}" + (f" and key {key!r}" if key else "")
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKeyError:
        raise InvalidArgumentError(
            f"the TLS client key {key or cert!r} ({_where('key')}) is encrypted with a "
            "passphrase; give an unencrypted key (e.g. `openssl pkey -in KEY -out PLAIN`) and "
            "protect it with file permissions (chmod 600)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problem = "the key is not the one of the certificate"
        elif key is None:
            problem = "the file must hold the PEM certificate and its key, or pass the key too"
        else:
            problem = "both must be PEM: the certificate, and its unencrypted private key"
        raise InvalidArgumentError(
            f"cannot use the TLS client certificate {shown} ({_where('cert')}; "
            f"{_where('key')}): {problem} ({_reason(exc)})"
        ) from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)


# OpenSSL's names for the alerts a server sends when it wants, or rejects, a client certificate
_CLIENT_CERTIFICATE_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
}
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
_IP_ADDRESS_MISMATCH = 64  # X509_V_ERR_IP_ADDRESS_MISMATCH


def explain_handshake_failure(exc: ssl.SSLError, shown: str, tls: TlsConfig | None) -> str:
    """What a failed TLS handshake with NATS at ``shown`` (a redacted URL) most likely means.

    ``tls`` is what this client was configured with (None: no TLS options, or an
    ``ssl.SSLContext`` made elsewhere).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        if exc.verify_code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            return (
                f"the TLS certificate of NATS at {shown} is not valid for the name connected "
                f"to ({detail}); connect with a host name the certificate holds, or pass the "
                "name to check with --tls-hostname (TlsConfig.hostname)"
            )
        if tls is None or tls.ca is None:
            return (
                f"NATS at {shown} requires TLS, and its certificate cannot be verified "
                f"({detail}): it is not signed by a CA this machine trusts; pass the CA that "
                "signed it with --tls-ca (env DF_NATS_TLS_CA, TlsConfig.ca)"
            )
        return (
            f"cannot verify the TLS certificate of NATS at {shown} ({detail}): it is not signed "
            f"by the CA in {tls.ca!r} (--tls-ca, env DF_NATS_TLS_CA, TlsConfig.ca); wrong CA? "
            "Pass the CA that signed the server's certificate"
        )
    reason = _reason(exc)
    if exc.reason in _CLIENT_CERTIFICATE_ALERTS:
        if tls is None or tls.cert is None:
            return (
                f"NATS at {shown} requires a TLS client certificate ({reason}); pass one with "
                "--tls-cert and --tls-key (env DF_NATS_TLS_CERT, DF_NATS_TLS_KEY; "
                "TlsConfig.cert, .key)"
            )
        return (
            f"NATS at {shown} refused the TLS client certificate {tls.cert!r} ({reason}); it "
            "must be signed by a CA the server trusts (the ca_file of its tls block) and be "
            "valid for client authentication"
        )
    return (
        f"the TLS handshake with NATS at {shown} failed ({reason}); check that the server "
        "speaks TLS on that port and that --tls-ca, --tls-cert and --tls-key are right"
    )
