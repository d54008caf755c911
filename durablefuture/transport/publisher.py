"""Publishing to JetStream: pipelined (many in flight), each with a timeout, errors translated.

``Nats-Expected-Last-Subject-Sequence`` conflicts become :class:`WrongLastSequence`; every other
NATS failure becomes a :class:`~durablefuture.core.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import PubAck

from durablefuture.core.errors import TransportError

__all__ = [
    "EXPECTED_LAST_SUBJECT_SEQ",
    "EXPECTED_LAST_SUBJECT_SEQ_SUBJECT",
    "MSG_ID",
    "SCHEDULE",
    "SCHEDULE_TARGET",
    "Publisher",
    "WrongLastSequence",
]

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"

_WRONG_SEQ = re.compile(r"wrong last sequence:\s*(\d+)")


class WrongLastSequence(TransportError):
    """Another writer appended first (optimistic concurrency conflict)."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"{subject}: expected last sequence {expected}, the stream has {actual}; "
            "reload and decide again"
        )
        self.subject = subject
        self.expected = expected
        self.actual = actual


class Publisher:
    """Publishes with PubAcks, many in flight at once."""

    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout, publish_async_max_pending=4000)
        self.timeout = timeout

    async def publish(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> PubAck:
        """Store ``data`` on ``subject``; returns the PubAck (``duplicate`` set on a dedup hit)."""
        try:
            fut = await self.js.publish_async(
                subject, data, headers=dict(headers) if headers else None
            )
            ack: PubAck = await asyncio.wait_for(fut, timeout or self.timeout)
            return ack
        except nats.js.errors.NoStreamResponseError as exc:
            raise TransportError(
                f"no JetStream stream stores {subject}; has df-server created the namespace "
                "(start df-server, or `df dev`)?"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                m = _WRONG_SEQ.search(exc.description or "")
                expected = int((headers or {}).get(EXPECTED_LAST_SUBJECT_SEQ, "0"))
                raise WrongLastSequence(subject, expected, int(m.group(1)) if m else None) from None
            raise TransportError(
                f"JetStream rejected a message on {subject}: {exc.description} "
                f"(err_code {exc.err_code})"
            ) from exc
        except TimeoutError as exc:
            raise TransportError(f"no PubAck for {subject} within {self.timeout:g}s") from exc
        except nats.errors.Error as exc:
            raise TransportError(f"publishing to {subject} failed: {exc}") from exc
