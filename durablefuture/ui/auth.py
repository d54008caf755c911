"""Who may use the web UI: one shared token, and the browser sessions it signs.

The UI has one secret, a token of at least 16 characters the operator chooses (``df ui`` reads
it from an environment variable, never from its command line, which other users can see).

* API clients send it on every request: ``Authorization: Bearer <token>``.
* Browsers sign in once on ``/login`` and then carry a session cookie: an expiry time and its
  HMAC keyed by the token. There is no server-side state: a restart keeps people signed in,
  and changing the token signs everyone out.

Every comparison is constant-time (``hmac.compare_digest``). Nothing here formats the token
into a message, and ``UiAuth``'s repr leaves it out.

Without a token the UI has no login, which is only allowed on a loopback address
(:func:`check_exposure`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import string

from attrs import field, frozen

from durablefuture.core.errors import InvalidArgumentError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "SESSION_SECONDS",
    "UiAuth",
    "check_exposure",
    "check_token",
    "is_loopback",
    "safe_next",
]

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096
SESSION_SECONDS = 12 * 3600
"""How long a browser stays signed in (the cookie's Max-Age, and the expiry it signs)."""
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)
_SESSION = re.compile(r"(?P<expires>[0-9]{1,12})\.(?P<mac>[0-9a-f]{64})")


def check_token(token: str) -> str:
    """``token`` if it can be the UI's token (16+ printable ASCII characters, no spaces).

    Raises:
        InvalidArgumentError: it cannot; the message never includes the token.
    """
    if not isinstance(token, str):
        raise InvalidArgumentError(f"the UI token must be a string, got {type(token).__name__}")
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidArgumentError(
            f"the UI token has {len(token)} characters: use {MIN_TOKEN_LENGTH} to "
            f"{MAX_TOKEN_LENGTH}, e.g. a random one from {TOKEN_HINT}"
        )
    if not set(token) <= _TOKEN_CHARS:
        raise InvalidArgumentError(
            "the UI token has spaces, control or non-ASCII characters (it travels in an HTTP "
            f"header): use letters, digits and punctuation only, e.g. from {TOKEN_HINT}"
        )
    return token


@frozen
class UiAuth:
    """The UI's login: checks bearer headers, sign-in attempts and session cookies."""

    token: str = field(repr=False, validator=lambda _i, _a, v: check_token(v))
    session_seconds: int = SESSION_SECONDS

    def token_ok(self, candidate: str) -> bool:
        """True if ``candidate`` is the token (constant time)."""
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def bearer_ok(self, authorization: str | None) -> bool:
        """True if an ``Authorization`` header value is ``Bearer <the token>``."""
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(credentials.strip())

    def new_session(self, now: float) -> str:
        """A session cookie value that is valid until ``now + session_seconds``."""
        expires = int(now) + self.session_seconds
        return f"{expires}.{self._mac(expires)}"

    def session_ok(self, value: str | None, now: float) -> bool:
        """True if ``value`` is a session this token signed and it has not expired."""
        match = _SESSION.fullmatch(value or "")
        if match is None:
            return False
        expires = int(match["expires"])
        signed = hmac.compare_digest(match["mac"].encode(), self._mac(expires).encode())
        return signed and now < expires

    def _mac(self, expires: int) -> str:
        message = f"durablefuture-ui-session:{expires}".encode()
        return hmac.new(self.token.encode(), message, hashlib.sha256).hexdigest()


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_exposure(host: str, auth: UiAuth | None) -> None:
    """Refuse to serve without a login on an address other machines can reach.

    Raises:
        InvalidArgumentError: ``host`` is not a loopback address and there is no token.
    """
    if auth is None and not is_loopback(host):
        raise InvalidArgumentError(
            f"refusing to serve the UI on {host} without a login: it is not a loopback "
            "address, so anyone who can reach it could cancel or terminate runs; give it a "
            f"token of {MIN_TOKEN_LENGTH}+ characters (auth_token=...; df ui reads DF_UI_TOKEN) "
            "or listen on 127.0.0.1"
        )


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this server, else ``/`` (no open redirect after login)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 0x20 for c in target):
        return "/"
    return target
