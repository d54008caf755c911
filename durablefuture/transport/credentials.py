"""Reading NATS credentials files: user JWT creds files, or nkey seed files (``df auth init``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nkeys
from attrs import frozen

from durablefuture.core.errors import InvalidArgumentError

__all__ = ["Credentials", "inbox_prefix", "public_key_of", "read_credentials"]

_SEED_BLOCK = re.compile(
    r"-----BEGIN USER NKEY SEED-----\s*\n\s*(SU[A-Z2-7]+)\s*\n\s*------END USER NKEY SEED------"
)
_JWT_MARK = "-----BEGIN NATS USER JWT-----"


@frozen
class Credentials:
    """What a credentials file holds: a user JWT creds file (``jwt`` set) or an nkey seed."""

    seed: str
    jwt: str = ""

    @property
    def public_key(self) -> str:
        return public_key_of(self.seed)


def inbox_prefix(public_key: str) -> str:
    """The inbox prefix of a user: replies to it travel on ``_INBOX.<public key>.*`` only."""
    return f"_INBOX.{public_key}"


def public_key_of(seed: str) -> str:
    try:
        kp = nkeys.from_seed(bytearray(seed.encode()))
    except Exception as exc:  # nkeys raises its own error types for bad seeds
        raise InvalidArgumentError(f"not a valid nkey user seed: {type(exc).__name__}") from exc
    key: bytes = kp.public_key
    return key.decode()


def read_credentials(path: str | os.PathLike[str]) -> Credentials:
    """Read a credentials file: a NATS user JWT creds file, or an nkey seed file written by
    :func:`write` (or holding just a ``SU...`` seed line).

    Raises:
        InvalidArgumentError: the file cannot be read or holds neither.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the credentials file {path}: {exc}") from exc
    if _JWT_MARK in text:
        return Credentials(seed="", jwt=text)
    match = _SEED_BLOCK.search(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    seed = match.group(1) if match else (lines[0] if len(lines) == 1 else "")
    if not seed.startswith("SU"):
        raise InvalidArgumentError(
            f"{path} is not a NATS credentials file: no user JWT and no user nkey seed "
            "(write one with `df auth init`)"
        )
    public_key_of(seed)  # raises on a damaged seed
    return Credentials(seed=seed)
