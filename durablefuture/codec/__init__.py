"""Adapters between core types and bytes: the one cattrs converter, orjson, the wire schema."""

from durablefuture.codec.converter import make_converter
from durablefuture.codec.payloads import MAX_PAYLOAD_BYTES, JsonPayloads
from durablefuture.codec.wire import (
    SCHEMA_VERSION,
    Codec,
    InputEnvelope,
    Reply,
    WorkflowTaskMessage,
    default_codec,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "Codec",
    "InputEnvelope",
    "JsonPayloads",
    "Reply",
    "WorkflowTaskMessage",
    "default_codec",
    "make_converter",
]
