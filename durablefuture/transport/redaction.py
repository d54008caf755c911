"""Keeping NATS passwords and tokens out of everything we print: banners, logs, errors.

A NATS URL may carry a secret: ``nats://user:password@host`` or ``nats://token@host`` (and a
``--nats`` value may list several URLs, comma-separated). :func:`redact` shows such a URL with
the secret replaced by ``***``. :func:`scrub` cleans free text (an error from nats-py, a log
line, a traceback): it redacts every URL in it, and removes every secret :func:`remember` was
given, in whatever form the text holds it (nats-py may echo a URL it normalised, or just the
host part with the credentials). ``transport.connection.connect`` remembers the secrets of each
URL it is given, ``df ui`` its login token (:func:`remember_secret`); the log formatters and
the command-line programs scrub what they print.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

__all__ = ["redact", "remember", "remember_secret", "scrub", "secrets_of"]

MASK = "***"
_MIN_LITERAL = 4
"""Shorter secrets are only masked inside URLs: removing every "ab" from a log would garble it."""

# userinfo before "@" in anything that looks like a URL (scheme://user[:password]@)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/@,'\"<>]+)@"
)

_known: set[str] = set()
_lock = threading.Lock()


def _mask_userinfo(userinfo: str) -> str:
    user, sep, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if sep else MASK  # without a password, the user part is a token


def _split_userinfo(one: str) -> tuple[str, str, str] | None:
    """(prefix up to the userinfo, userinfo, the rest from "@") of one URL, or None."""
    scheme_end = one.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    authority_end = len(one)
    for stop in "/?#":
        found = one.find(stop, start)
        if found >= 0:
            authority_end = min(authority_end, found)
    at = one.rfind("@", start, authority_end)
    if at < 0:
        return None
    return one[:start], one[start:at], one[at:]


def redact(url: str) -> str:
    """``url`` (one, or several comma-separated) with passwords and tokens shown as ``***``.

    ``nats://alice:pw@host:4222`` -> ``nats://alice:***@host:4222``;
    ``nats://s3cr3t@host`` -> ``nats://***@host`` (a user without a password is a token).
    """
    parts = []
    for one in url.split(","):
        split = _split_userinfo(one)
        if split is not None:
            prefix, userinfo, rest = split
            one = prefix + _mask_userinfo(userinfo) + rest
        parts.append(one)
    return ",".join(parts)


def secrets_of(url: str) -> set[str]:
    """The passwords and tokens in ``url`` (several URLs may be comma-separated)."""
    found: set[str] = set()
    for one in url.split(","):
        split = _split_userinfo(one.strip())
        if split is None:
            continue
        user, sep, password = split[1].partition(":")
        secret = password if sep else user
        if secret:
            found.update({secret, unquote(secret)})
    return found


def remember(url: str) -> None:
    """Have :func:`scrub` remove the secrets of ``url`` from any text, from now on."""
    new = secrets_of(url)
    if new:
        with _lock:
            _known.update(new)


def remember_secret(secret: str) -> None:
    """Have :func:`scrub` remove ``secret`` (a token that is not part of a URL) from any text."""
    if secret:
        with _lock:
            _known.add(secret)


def scrub(text: str) -> str:
    """``text`` with the credentials of every URL in it masked, and every remembered secret."""
    text = _URL_CREDENTIALS.sub(
        lambda m: m.group("scheme") + _mask_userinfo(m.group("userinfo")) + "@", text
    )
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # longest first: one may contain another
    for secret in known:
        if len(secret) >= _MIN_LITERAL and secret in text:
            text = text.replace(secret, MASK)
    return text
