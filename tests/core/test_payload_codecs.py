"""Payload codecs: AES-GCM (key ids, rotation, tampering), zlib, chains, and the wire codec
encoding every payload of engine messages while leaving the engine fields in the clear."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import durablefuture as df
from durablefuture.codec.envelope import ENVELOPE_KEY, CodecChain, Payload, is_envelope
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.codecs import AesGcm, Zlib, from_env, generate_key
from durablefuture.core import inputs as inp
from durablefuture.core.errors import InvalidArgumentError, PayloadError

K1, K2 = generate_key(), generate_key()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _chain() -> CodecChain:
    return CodecChain(Zlib(), AesGcm("k1", K1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_each_codec_and_a_chain_round_trip(datas: list[bytes]) -> None:
    payloads = [Payload(d, {"encoding": "json"}) for d in datas]
    for codec in (AesGcm("k1", K1), Zlib(), _chain()):
        encoded = codec.encode(payloads)
        assert codec.decode(encoded) == payloads


@settings(max_examples=60, deadline=None)
@given(json_values, st.lists(json_values, max_size=3))
def test_a_start_request_round_trips_through_the_wire_with_a_codec(
    result: object, args: list[object]
) -> None:
    sealed = default_codec().with_payload_codec(_chain())
    message = inp.CompleteActivityTask("r1", 3, 1, result)  # type: ignore[arg-type]
    data = sealed.encode_input(InputEnvelope("w1", input=message))
    assert sealed.decode_input(data).input == message
    start = inp.StartWorkflowRequest("w1", "order", "q", "req", args=tuple(args))
    data = sealed.encode_input(InputEnvelope("w1", start=start))
    assert sealed.decode_input(data).start == start


def test_the_server_side_codec_keeps_envelopes_and_engine_fields_are_clear() -> None:
    sealed = default_codec().with_payload_codec(AesGcm("k1", K1))
    start = inp.StartWorkflowRequest(
        "w1", "order", "q", "req", args=("card 4111",), signal_name="go", signal_args=(7,)
    )
    data = sealed.encode_input(InputEnvelope("w1", start=start))
    assert b"4111" not in data and b'"order"' in data
    plain = default_codec().decode_input(data).start  # the df-server: no codec
    assert plain is not None and plain.workflow_type == "order"
    assert is_envelope(plain.args[0]) and is_envelope(plain.signal_args[0])
    with pytest.raises(PayloadError, match=r"encrypted \(key k1\).*codec"):
        default_codec().payloads.from_payload(plain.args[0], str)


def test_rotation_reads_old_keys_and_writes_the_new_one() -> None:
    old = AesGcm("k1", K1)
    written = old.encode([Payload(b'"secret"', {"encoding": "json"})])
    rotated = AesGcm("k2", K2, old_keys={"k1": K1})
    assert rotated.decode(written)[0].data == b'"secret"'
    fresh = rotated.encode([Payload(b"1", {"encoding": "json"})])
    assert fresh[0].metadata["key"] == "k2"
    with pytest.raises(PayloadError, match="key 'k2', which this codec does not have"):
        old.decode(fresh)


def test_tampering_is_detected() -> None:
    codec = AesGcm("k1", K1)
    [p] = codec.encode([Payload(b'{"amount": 100}', {"encoding": "json"})])
    flipped = bytearray(p.data)
    flipped[-1] ^= 1
    with pytest.raises(PayloadError, match="fails authentication"):
        codec.decode([Payload(bytes(flipped), p.metadata)])
    # another key under the same id, or the ciphertext moved under another id: refused too
    with pytest.raises(PayloadError, match="fails authentication"):
        AesGcm("k1", K2).decode([p])
    moved = Payload(p.data, {**p.metadata, "key": "k2"})
    with pytest.raises(PayloadError, match="fails authentication"):
        AesGcm("k2", K1).decode([moved])


def _moved(envelope: object, key_id: str) -> object:
    """``envelope`` (either form) claiming to be under ``key_id``."""
    inner = envelope[ENVELOPE_KEY]  # type: ignore[index]
    if isinstance(inner, str):
        meta, _, data = inner.partition(";")
        return {ENVELOPE_KEY: meta.replace("k=k1", f"k={key_id}") + ";" + data}
    return {ENVELOPE_KEY: {**inner, "m": {**inner["m"], "key": key_id}}}


def _altered(envelope: object) -> object:
    """``envelope`` (either form) with the last base64 characters changed."""
    inner = envelope[ENVELOPE_KEY]  # type: ignore[index]
    d = inner if isinstance(inner, str) else inner["d"]
    d = d[:-4] + ("AAAA" if d[-4:] != "AAAA" else "BBBB")
    return {ENVELOPE_KEY: d if isinstance(inner, str) else {**inner, "d": d}}


@pytest.mark.parametrize("compact", [True, False])
def test_decoded_payloads_are_reused_but_never_for_an_altered_envelope(compact: bool) -> None:
    from durablefuture.codec.envelope import DecodedCache, decode_values, encode_values

    cache = DecodedCache()
    [sealed] = encode_values(AesGcm("k1", K1, compact=compact), [{"items": [1, 2]}])
    assert isinstance(sealed[ENVELOPE_KEY], str) == compact  # type: ignore[index,call-overload]
    first = decode_values(AesGcm("k1", K1), [sealed], cache)[0]
    first["items"].append(3)  # type: ignore[index,union-attr]
    # a hit even for a codec without the key: the same envelope decoded already
    assert decode_values(AesGcm("k9", K2), [sealed], cache) == [{"items": [1, 2]}]
    with pytest.raises(PayloadError, match="fails authentication"):
        decode_values(AesGcm("k2", K1), [_moved(sealed, "k2")], cache)  # type: ignore[list-item]
    with pytest.raises(PayloadError):
        decode_values(AesGcm("k1", K1), [_altered(sealed)], cache)  # type: ignore[list-item]


def test_a_decoded_payload_is_reused_only_in_the_form_it_was_written() -> None:
    from durablefuture.codec.envelope import DecodedCache, decode_values, encode_values

    cache = DecodedCache()
    [sealed] = encode_values(AesGcm("k1", K1), ["secret"], cache)
    text = sealed[ENVELOPE_KEY]  # type: ignore[index,call-overload]
    assert decode_values(AesGcm("k1", K1), [sealed], cache) == ["secret"]
    # the compact envelope's text as the data of a long envelope without metadata: not the
    # envelope that was written, so not a hit (and not a payload the codec can read)
    relabelled: object = {ENVELOPE_KEY: {"m": {}, "d": text}}
    with pytest.raises(PayloadError, match="malformed"):
        decode_values(AesGcm("k1", K1), [relabelled], cache)  # type: ignore[list-item]


class _Counting(AesGcm):
    decoded = 0

    def decode(self, payloads):  # type: ignore[no-untyped-def]
        type(self).decoded += len(payloads)
        return super().decode(payloads)


def test_what_a_process_encoded_it_reads_back_without_decoding() -> None:
    codec = default_codec().with_payload_codec(_Counting("k1", K1))
    report = inp.CompleteActivityTask("r1", 1, 1, {"receipt": "R-1"})
    data = codec.encode_input(InputEnvelope("w1", input=report))
    assert b"R-1" not in data
    back = codec.decode_input(data).input
    assert isinstance(back, inp.CompleteActivityTask) and back.result == {"receipt": "R-1"}
    assert _Counting.decoded == 0
    # another process (its own cache) decodes it; an altered envelope is never a hit
    other = default_codec().with_payload_codec(_Counting("k1", K1))
    assert other.decode_input(data).input == back
    assert _Counting.decoded == 1
    body = orjson.loads(data)
    sealed = body["in"]["result"][ENVELOPE_KEY]
    sealed["d"] = sealed["d"][:-4] + ("AAAA" if sealed["d"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(PayloadError, match="fails authentication"):
        codec.decode_input(orjson.dumps(body))


def test_each_payload_of_a_batch_has_a_nonce_of_its_own() -> None:
    codec = AesGcm("k1", K1)
    _, sealed = codec.seal_json([b'"same"'] * 200)
    assert len({blob[:12] for blob in sealed}) == 200
    assert [codec.open_json(codec._json_meta["k1"], blob) for blob in sealed] == [b'"same"'] * 200


def test_a_history_message_is_decoded_as_far_as_asked() -> None:
    from durablefuture.core import events as ev

    writer = default_codec().with_payload_codec(AesGcm("k1", K1))
    done = ev.ActivityCompleted(event_id=3, at=1.0, seq=1, attempt=1, result="shipped")
    end = ev.WorkflowCompleted(event_id=4, at=1.0, based_on=3, result="charged/shipped")
    data = writer.encode_batch("in-1", [done, end])
    assert b"shipped" not in data
    _Counting.decoded = 0
    reader = default_codec().with_payload_codec(_Counting("k1", K1))
    _, [first, last] = reader.decode_batch(data, payloads="last")
    assert last == end and _Counting.decoded == 1
    assert is_envelope(first.result)  # type: ignore[attr-defined]
    _, events = reader.decode_batch(data, payloads="none")
    assert [is_envelope(e.result) for e in events] == [True, True]  # type: ignore[attr-defined]
    _, events = reader.decode_batch(data)
    assert events == [done, end] and _Counting.decoded == 2


def test_unencoded_payloads_pass_through_a_codec() -> None:
    sealed = default_codec().with_payload_codec(AesGcm("k1", K1))
    data = default_codec().encode_input(
        InputEnvelope("w1", input=inp.CompleteActivityTask("r1", 1, 1, {"plain": True}))
    )
    decoded = sealed.decode_input(data).input
    assert isinstance(decoded, inp.CompleteActivityTask) and decoded.result == {"plain": True}


def test_bad_keys_and_env_are_refused_clearly() -> None:
    with pytest.raises(InvalidArgumentError, match="32 bytes"):
        AesGcm("k1", b"short")
    with pytest.raises(InvalidArgumentError, match="DF_CODEC_KEYS is not set"):
        from_env({})
    keys = f"k2:{base64.b64encode(K2).decode()},k1:{base64.b64encode(K1).decode()}"
    codec = from_env({"DF_CODEC_KEYS": keys})
    [p] = codec.encode([Payload(b'"x" ' * 500, {"encoding": "json"})])
    assert p.metadata["key"] == "k2" and p.metadata["compression"] == "zlib"
    assert AesGcm("k1", K1, old_keys={"k2": K2}).decode([p])[0].metadata["compression"] == "zlib"


def test_public_names() -> None:
    assert df.codecs.AesGcm is AesGcm
    assert isinstance(AesGcm("k1", K1), df.PayloadCodec)
    envelope = orjson.loads(
        default_codec()
        .with_payload_codec(Zlib())
        .encode_input(InputEnvelope("w1", input=inp.CompleteActivityTask("r", 1, 1, "a" * 1000)))
    )["in"]["result"]
    assert envelope[ENVELOPE_KEY]["m"] == {"encoding": "json", "compression": "zlib"}


@settings(max_examples=60, deadline=None)
@given(st.lists(json_values | st.text(min_size=200, max_size=400), min_size=1, max_size=4))
def test_the_short_cut_writes_and_reads_what_the_codecs_own_methods_do(
    values: list[object],
) -> None:
    from durablefuture.codec.envelope import decode_values, encode_values, split_envelope

    for codec in (AesGcm("k1", K1), _chain(), CodecChain(AesGcm("k1", K1))):
        assert codec.json_cipher() is not None
        # written by the short cut, read by the codec's own decode
        sealed = encode_values(codec, values)  # type: ignore[arg-type]
        decoded = codec.decode([split_envelope(e) for e in sealed])  # type: ignore[arg-type]
        assert [orjson.loads(p.data) for p in decoded] == values
        assert all(p.metadata == {"encoding": "json"} for p in decoded)
        # written by the codec's own encode (as before the short cut), read by the short cut
        own = codec.encode([Payload(orjson.dumps(v), {"encoding": "json"}) for v in values])
        envelopes = [
            {ENVELOPE_KEY: {"m": p.metadata, "d": base64.b64encode(p.data).decode()}} for p in own
        ]
        assert decode_values(codec, envelopes) == values  # type: ignore[arg-type]
        # the short cut refuses what the codec refuses
        with pytest.raises(PayloadError):
            decode_values(codec, [_altered(sealed[0])])  # type: ignore[list-item]
        cut = {ENVELOPE_KEY: "e=aes256gcm,k=k1;AAAA"}
        with pytest.raises(PayloadError, match="shorter than a nonce and a tag"):
            decode_values(codec, [cut])  # type: ignore[list-item]


def test_subclasses_and_other_chains_take_the_codecs_own_methods() -> None:
    assert _Counting("k1", K1).json_cipher() is None
    assert CodecChain(_Counting("k1", K1)).json_cipher() is None
    assert CodecChain(AesGcm("k1", K1), Zlib()).json_cipher() is not None
    # zlib after AES-GCM: the short cut applies only where zlib would leave the bytes alone
    from durablefuture.codec.envelope import decode_values, encode_values

    codec = CodecChain(AesGcm("k1", K1), Zlib(min_size=16))
    sealed = encode_values(codec, ["x" * 100])
    assert decode_values(codec, sealed) == ["x" * 100]


def test_the_decoded_cache_keeps_small_payloads_in_little_memory() -> None:
    import tracemalloc

    from durablefuture.codec.envelope import DecodedCache, decode_values, encode_values

    codec = AesGcm("k1", K1)
    cache = DecodedCache()
    tracemalloc.start()
    try:
        sealed = [encode_values(codec, [f"order-{i}"], cache)[0] for i in range(5_000)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(cache) == 5_000
    # the envelopes themselves take ~4 MB; each cached plaintext must not hold a 4 KiB buffer
    # (what orjson.dumps returns), which made this 26 MB
    assert held < 8_000_000, held
    assert decode_values(AesGcm("k9", K2), sealed[-3:], cache) == [
        f"order-{i}" for i in range(4_997, 5_000)
    ]


def test_the_decoded_cache_stays_within_its_budget() -> None:
    from durablefuture.codec.envelope import DecodedCache, encode_values

    cache = DecodedCache(budget=100_000)
    for i in range(5_000):
        encode_values(AesGcm("k1", K1), [f"order-{i}"], cache)
    # + the envelope's text and the plaintext (of the newest entries, which it keeps)
    text = encode_values(AesGcm("k1", K1), ["order-4999"])[0][ENVELOPE_KEY]  # type: ignore[index,call-overload]
    per_entry = DecodedCache.ENTRY_OVERHEAD + len(text) + len(b'"order-4999"')
    assert 100_000 // (per_entry + 40) <= len(cache) <= 100_000 // per_entry


def test_compact_envelopes_are_smaller_and_old_envelopes_stay_readable() -> None:
    from durablefuture.codec.envelope import _to_envelope, decode_values, encode_values

    compact = encode_values(AesGcm("k1", K1), ["o-12345"])[0]
    long = encode_values(AesGcm("k1", K1, compact=False), ["o-12345"])[0]
    assert compact[ENVELOPE_KEY].startswith("*g,k=k1;")  # type: ignore[index,call-overload,union-attr]
    assert len(orjson.dumps(compact)) <= len(orjson.dumps(long)) - 54
    # the first compact envelopes spelled the algorithm out: still read
    spelled = {ENVELOPE_KEY: "e=aes256gcm" + compact[ENVELOPE_KEY][2:]}  # type: ignore[index,call-overload]
    assert decode_values(AesGcm("k1", K1), [spelled]) == ["o-12345"]
    assert decode_values(AesGcm("k1", K1, compact=False), [spelled]) == ["o-12345"]
    # what DurableFuture 0.1 wrote (the codec's own encode, the long form), read by a codec
    # that writes compact envelopes, and the other way round
    [old] = AesGcm("k1", K1).encode([Payload(b'{"a":[1,"x"]}', {"encoding": "json"})])
    assert decode_values(AesGcm("k2", K2, old_keys={"k1": K1}), [_to_envelope(old)]) == [
        {"a": [1, "x"]}
    ]
    assert decode_values(AesGcm("k1", K1, compact=False), [compact]) == ["o-12345"]
    # through the wire codec, with the processes' caches
    writer = default_codec().with_payload_codec(AesGcm("k1", K1))
    data = writer.encode_input(
        InputEnvelope("w1", input=inp.CompleteActivityTask("r1", 1, 1, {"receipt": "R-1"}))
    )
    assert b"R-1" not in data and b'"$dfp":"*g,k=k1;' in data
    reader = default_codec().with_payload_codec(AesGcm("k1", K1, compact=False))
    back = reader.decode_input(data).input
    assert isinstance(back, inp.CompleteActivityTask) and back.result == {"receipt": "R-1"}
    # a reader without the codec names what it cannot read (the UI and `df workflow history`
    # show that text in place of the payload)
    from durablefuture.codec.envelope import show_envelopes

    assert show_envelopes({"args": [compact, long]}) == {
        "args": ["encrypted (key k1)", "encrypted (key k1)"]
    }
    plain = default_codec().decode_input(data).input
    with pytest.raises(PayloadError, match=r"encrypted \(key k1\)"):
        default_codec().payloads.from_payload(plain.result)  # type: ignore[union-attr]


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["encryption", "key", "compression"]) | st.text(min_size=2, max_size=12),
        st.text(max_size=12),
        max_size=4,
    ),
    st.sampled_from(["json", "binary/x", ""]),
)
def test_compact_metadata_round_trips(meta: dict[str, str], encoding: str) -> None:
    from durablefuture.codec.envelope import meta_text, parse_meta

    full = {**meta, "encoding": encoding}
    text = meta_text(full)
    assert text is not None and ";" not in text
    assert parse_meta(text) == full
    assert meta_text({"key": "k1"}) is None  # no encoding: the long form
    # a known pair is one short part; spelled out it reads the same
    aes = {"encoding": "json", "encryption": "aes256gcm", "key": "k1"}
    assert meta_text(aes) == "*g,k=k1"
    assert parse_meta("*g,k=k1") == parse_meta("e=aes256gcm,k=k1") == aes
    assert parse_meta(meta_text({"encoding": "json", "encryption": "*g"}) or "") == {
        "encoding": "json",
        "encryption": "*g",
    }
    assert meta_text({"encoding": "json", "x": "1"}) is None  # a one-letter name of its own


@pytest.mark.parametrize(
    ("inner", "problem"),
    [
        ("e=aes256gcm,k=k1", "no ';'"),
        ("q=1;AAAA", "unknown name 'q'"),
        ("e;AAAA", "malformed at 'e'"),
        ("k=%ff;AAAA", "not UTF-8"),
        ("e=aes256gcm,k=k1;!!!!", "malformed"),
        ("*g,k=k1;!!!!", "malformed"),
        ("*x,k=k1;AAAA", "unknown part '\\*x'"),
        ("*,k=k1;AAAA", "unknown part"),
        ("x" * 2000 + ";AAAA", "over 1024 characters"),
    ],
)
def test_a_malformed_compact_envelope_is_refused_clearly(inner: str, problem: str) -> None:
    from durablefuture.codec.envelope import decode_values

    for codec in (AesGcm("k1", K1), _chain(), Zlib()):
        with pytest.raises(PayloadError, match=problem):
            decode_values(codec, [{ENVELOPE_KEY: inner}])


@pytest.mark.parametrize("inner", ["no-semicolon", 7, [1], None, {"m": 1}])
def test_a_message_with_a_junk_envelope_is_refused_not_crashed_on(inner: object) -> None:
    sealed = default_codec().with_payload_codec(AesGcm("k1", K1))
    body = {
        "v": 1,
        "wid": "w1",
        "in": {"run_id": "r1", "seq": 1, "attempt": 1, "result": {ENVELOPE_KEY: inner}},
    }
    body["in"]["t"] = "CompleteActivityTask"  # type: ignore[index]
    with pytest.raises(PayloadError):
        sealed.decode_input(orjson.dumps(body))
