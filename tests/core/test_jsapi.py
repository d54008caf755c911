"""JetStream API bodies are encoded and decoded in the codec layer, not by the transport."""

from __future__ import annotations

import pytest

from durablefuture.codec.jsapi import api_reply, api_request


def test_a_request_round_trips_as_plain_json() -> None:
    body = api_request({"seq": 5, "next_by_subj": "df.x.>", "batch": 10})
    assert body == b'{"seq":5,"next_by_subj":"df.x.>","batch":10}'
    assert api_reply(body) == {"seq": 5, "next_by_subj": "df.x.>", "batch": 10}


def test_a_reply_that_is_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        api_reply(b"+OK not json")
