"""Every kind of bad input gets a precise reason; valid input round-trips."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.records import (
    SCHEMA_VERSION,
    DEAD_LETTER_RAW_BYTES,
    Click,
    DecodeReason,
    ItemVector,
    RecommendedItem,
    Recommendation,
    RecordDecodeError,
    RecordLimits,
    Trigger,
    check_key,
    dead_letter,
    decode_click,
    decode_control,
    decode_dead_letter,
    decode_item,
    decode_item_vector,
    decode_recommendation,
    encode_item_vector,
    encode_json,
)

NOW_S = 1_700_000_000.0


def reason_of(fn, raw: bytes, **kw) -> tuple[DecodeReason, str | None]:
    with pytest.raises(RecordDecodeError) as info:
        fn(raw, **kw)
    return info.value.reason, info.value.field


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"\xff\xfe", DecodeReason.NOT_UTF8, None),
        (b'{"user_id": "\xff"}', DecodeReason.NOT_UTF8, None),  # found by Hypothesis
        (b"not json", DecodeReason.NOT_JSON, None),
        (b"", DecodeReason.NOT_JSON, None),
        (b"[1, 2]", DecodeReason.NOT_OBJECT, None),
        (b'"u1"', DecodeReason.NOT_OBJECT, None),
        (b'{"item_id": "i", "ts": 1}', DecodeReason.MISSING_FIELD, "user_id"),
        (b'{"user_id": "u", "ts": 1}', DecodeReason.MISSING_FIELD, "item_id"),
        (b'{"user_id": "u", "item_id": "i"}', DecodeReason.MISSING_FIELD, "ts"),
        (b'{"user_id": "", "item_id": "i", "ts": 1}', DecodeReason.EMPTY_ID, "user_id"),
        (b'{"user_id": "u", "item_id": "  ", "ts": 1}', DecodeReason.EMPTY_ID, "item_id"),
        (b'{"user_id": 7, "item_id": "i", "ts": 1}', DecodeReason.WRONG_TYPE, "user_id"),
        (b'{"user_id": "u", "item_id": "i", "ts": "1"}', DecodeReason.WRONG_TYPE, "ts"),
        (b'{"user_id": "u", "item_id": "i", "ts": 1, "weight": "x"}', DecodeReason.WRONG_TYPE, "weight"),
        (b'{"user_id": "u", "item_id": "i", "ts": 1e999}', DecodeReason.NON_FINITE, "ts"),
        (b'{"user_id": "u", "item_id": "i", "ts": -5}', DecodeReason.BAD_TIMESTAMP, "ts"),
        (b'{"user_id": "u", "item_id": "i", "ts": 1700000000000}', DecodeReason.FUTURE_TIMESTAMP, "ts"),
        (b'{"user_id": "u", "item_id": "i", "ts": 1, "event": "zap"}', DecodeReason.UNKNOWN_EVENT, "event"),
    ],
)
def test_bad_clicks_get_precise_reasons(raw: bytes, reason: DecodeReason, field: str | None) -> None:
    assert reason_of(decode_click, raw, now_s=NOW_S) == (reason, field)


def test_oversize_ids_and_records() -> None:
    limits = RecordLimits(max_id_chars=8, max_record_bytes=200)
    raw = json.dumps({"user_id": "u" * 9, "item_id": "i", "ts": 1}).encode()
    assert reason_of(decode_click, raw, now_s=NOW_S, limits=limits) == (DecodeReason.OVERSIZE, "user_id")
    raw = json.dumps({"user_id": "u", "item_id": "i", "ts": 1, "pad": "x" * 300}).encode()
    assert reason_of(decode_click, raw, now_s=NOW_S, limits=limits)[0] is DecodeReason.OVERSIZE


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        ({"item_id": "i", "title": "t" * 11}, DecodeReason.OVERSIZE, "text"),
        ({"item_id": "i", "title": "t", "text": "x" * 10}, DecodeReason.OVERSIZE, "text"),
        ({"item_id": "i", "title": "t", "tags": ["a"] * 4}, DecodeReason.OVERSIZE, "tags"),
        ({"item_id": "i", "title": "t", "op": "merge"}, DecodeReason.UNKNOWN_OP, "op"),
        ({"item_id": "i", "title": 3}, DecodeReason.WRONG_TYPE, "title"),
        ({"item_id": "i", "title": "t", "tags": "a,b"}, DecodeReason.WRONG_TYPE, "tags"),
        ({"item_id": "i"}, DecodeReason.MISSING_FIELD, "title"),
        ({"title": "t"}, DecodeReason.MISSING_FIELD, "item_id"),
        ({"item_id": "i", "title": "t", "created_at": 9e12}, DecodeReason.FUTURE_TIMESTAMP, "created_at"),
    ],
)
def test_bad_items_get_precise_reasons(value: dict, reason: DecodeReason, field: str) -> None:
    limits = RecordLimits(max_text_chars=10, max_tags=3)
    raw = json.dumps(value).encode()
    assert reason_of(decode_item, raw, now_s=NOW_S, limits=limits) == (reason, field)


def test_item_delete_needs_no_title_and_text_is_built_for_the_encoder() -> None:
    assert decode_item(b'{"item_id": "i", "op": "delete"}', now_s=NOW_S).op == "delete"
    item = decode_item(
        b'{"item_id": "i", "title": "Heat (1995)", "tags": ["Action", "Crime"], "text": "LA."}', now_s=NOW_S
    )
    assert item.encoder_text() == "Heat (1995). Action, Crime. LA."


def test_control_records() -> None:
    assert decode_control(b'{"user_id": "u", "op": "forget"}').op == "forget"
    assert reason_of(decode_control, b'{"user_id": "u", "op": "erase"}') == (DecodeReason.UNKNOWN_OP, "op")


def test_key_must_match_the_id_it_routes() -> None:
    check_key(b"u1", "u1", "user_id")
    check_key(None, "u1", "user_id")
    with pytest.raises(RecordDecodeError) as info:
        check_key(b"u2", "u1", "user_id")
    assert info.value.reason is DecodeReason.KEY_MISMATCH


def test_item_vector_round_trip_and_checks() -> None:
    v = np.linspace(-1, 1, 8, dtype=np.float32)
    rec = ItemVector.from_array(item_id="i", model="m@1", vector=v, title="t", tags=["a"])
    back = decode_item_vector(encode_item_vector(rec), dim=8)
    assert back == rec and np.array_equal(back.array(), v)
    assert reason_of(decode_item_vector, encode_item_vector(rec), dim=4) == (DecodeReason.WRONG_DIM, "vector")
    bad = ItemVector.from_array(item_id="i", model="m", vector=np.array([np.nan, 1], np.float32))
    assert reason_of(decode_item_vector, encode_item_vector(bad))[0] is DecodeReason.NON_FINITE
    assert reason_of(decode_item_vector, b"\x01garbage")[0] is DecodeReason.WRONG_TYPE


def test_recommendation_wire_names_follow_the_contract() -> None:
    rec = Recommendation(
        user_id="u1",
        items=[RecommendedItem(item_id="i9", score=0.83, because=["i1"], source="interest")],
        trigger=Trigger(topic="clicks", partition=3, offset=12, ts_s=1.5),
        model="m@abc",
        generated_at_s=2.5,
    )
    wire = json.loads(encode_json(rec))
    assert wire["trigger"]["ts"] == 1.5 and wire["generated_at"] == 2.5
    # the contract's fields, and the additions (every model version, the contract's version)
    assert set(wire) == {"user_id", "items", "trigger", "model", "generated_at", "models", "redelivered",
                         "schema_version"}
    assert wire["schema_version"] == SCHEMA_VERSION
    assert decode_recommendation(encode_json(rec)) == rec


def test_dead_letter_carries_source_reason_and_raw() -> None:
    try:
        decode_click(b'{"item_id": "i"}', now_s=NOW_S)
    except RecordDecodeError as exc:
        letter = dead_letter(topic="clicks", partition=2, offset=9, raw=b'{"item_id": "i"}', error=exc)
    wire = json.loads(encode_json(letter))
    assert wire["source"] == {"topic": "clicks", "partition": 2, "offset": 9}
    assert wire["reason"] == "missing_field" and wire["raw"] == '{"item_id": "i"}'
    assert decode_dead_letter(encode_json(letter)) == letter
    # undecodable bytes survive as escapes, never crash the dead-letter path
    letter = dead_letter(topic="t", partition=0, offset=0, raw=b"\xff", error=ValueError("x"))
    assert letter.raw == "\\xff" and letter.reason == "ValueError"


POISON = {
    "null_value": None,
    "too_deep": b"[" * 100_000 + b"]" * 100_000,
    "oversize": b'{"user_id": "' + b"x" * 2_000_000 + b'"}',
    "non_finite": None,  # per topic, below
}
NON_FINITE = {"items": b'{"item_id": "i", "title": "t", "created_at": 1e999}',
              "clicks": b'{"user_id": "u", "item_id": "i", "ts": 1e999}'}


@pytest.mark.parametrize("kind", POISON)
@pytest.mark.parametrize("topic", ["items", "clicks", "user-control"])
def test_poison_records_get_a_precise_reason_on_every_topic(kind: str, topic: str) -> None:
    decode = {"items": lambda r: decode_item(r, now_s=NOW_S), "clicks": lambda r: decode_click(r, now_s=NOW_S),
              "user-control": lambda r: decode_control(r)}[topic]
    raw = POISON[kind] if kind != "non_finite" else NON_FINITE.get(topic)
    if kind == "non_finite" and raw is None:
        return  # user-control has no number in it
    with pytest.raises(RecordDecodeError) as err:
        decode(raw)
    assert err.value.reason.value == kind
    if kind == "non_finite":
        assert err.value.field in ("ts", "created_at")


def test_a_dead_letter_of_a_huge_record_carries_a_bounded_prefix_and_the_size() -> None:
    raw = POISON["oversize"]
    letter = dead_letter(topic="clicks", partition=0, offset=1, raw=raw, error=RecordDecodeError(
        DecodeReason.OVERSIZE, "big"))
    assert letter.size == len(raw) and letter.truncated
    assert len(encode_json(letter)) < 2 * DEAD_LETTER_RAW_BYTES and raw.startswith(letter.raw.encode())
    assert dead_letter(topic="t", partition=0, offset=0, raw=None, error=ValueError("x")).size is None


ids = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())


@given(user_id=ids, item_id=ids, ts=st.floats(0, NOW_S), event=st.sampled_from(["click", "view", "like"]))
def test_valid_clicks_round_trip(user_id: str, item_id: str, ts: float, event: str) -> None:
    click = Click(user_id=user_id, item_id=item_id, ts_s=ts, event=event)  # type: ignore[arg-type]
    assert decode_click(encode_json(click), now_s=NOW_S) == click


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.from_regex(rb'\{"user_id": ?.{0,20}\}', fullmatch=True))
def test_decoder_never_raises_anything_but_record_decode_error(raw: bytes) -> None:
    try:
        decode_click(raw, now_s=NOW_S)
    except RecordDecodeError as exc:
        assert isinstance(exc.reason, DecodeReason)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["user_id", "item_id", "ts", "event", "weight", "x"]), json_values))
def test_arbitrary_objects_are_accepted_or_rejected_with_a_reason(value: dict) -> None:
    raw = msgspec.json.encode(value)
    try:
        click = decode_click(raw, now_s=NOW_S)
    except RecordDecodeError as exc:
        assert exc.reason is not DecodeReason.NOT_JSON
    else:
        assert click.user_id.strip() and click.item_id.strip()


def test_a_required_key_refuses_unkeyed_messages() -> None:
    check_key(b"u1", "u1", "user_id", required=True)
    with pytest.raises(RecordDecodeError) as info:
        check_key(None, "u1", "user_id", required=True)
    assert info.value.reason is DecodeReason.KEY_MISMATCH
