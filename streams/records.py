"""Typed records for every topic (docs/architecture.md), with one decode path each.

Wire format is JSON (UTF-8, one record per message) except ``item-vectors``, which is
msgpack with the vector as raw float32 bytes. On the wire, times are float seconds
(``ts``, ``created_at``); in code the fields carry their unit (``ts_s``, ``created_at_s``).

Decoding is two-speed: a typed msgspec decoder handles the valid record in one pass (the
hot path), and only when it fails does :func:`_diagnose` walk the raw value to name the
precise :class:`DecodeReason` and field. Every failure raises :class:`RecordDecodeError`,
which the workers turn into a dead letter.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np

from streams.errors import RecstreamError

ItemOp = Literal["upsert", "delete"]
ClickEvent = Literal["click", "view", "like", "purchase", "dislike"]
ControlOp = Literal["forget"]


class DecodeReason(str, enum.Enum):
    """Why a record was rejected. The value is the stable code put in dead letters."""

    NOT_UTF8 = "not_utf8"
    NULL_VALUE = "null_value"
    NOT_JSON = "not_json"
    NOT_MSGPACK = "not_msgpack"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    EMPTY_ID = "empty_id"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    OVERSIZE = "oversize"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_EVENT = "unknown_event"
    KEY_MISMATCH = "key_mismatch"
    WRONG_DIM = "wrong_dim"
    UNKNOWN_ITEM = "unknown_item"


class RecordDecodeError(RecstreamError, ValueError):
    """A record that cannot be accepted, with a machine-readable reason and field."""

    def __init__(self, reason: DecodeReason, detail: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        where = f" at {field}" if field else ""
        super().__init__(f"{reason.value}{where}: {detail}")


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """Input limits (from ``Settings.limits``); pure data so decoding stays pure."""

    max_text_chars: int = 10_000
    max_id_chars: int = 256
    max_tags: int = 64
    max_future_s: float = 86_400.0
    max_record_bytes: int = 1_000_000


# --------------------------------------------------------------------------- records


#: The version of the record contracts (``docs/schemas``); output records carry it as
#: ``schema_version``. Adding an optional field keeps it; changing or removing one bumps it.
SCHEMA_VERSION = 1


def _doc(text: str) -> msgspec.Meta:
    """A field's description, which the JSON Schemas in ``docs/schemas`` carry."""
    return msgspec.Meta(description=text)


class ItemEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """An item was described (upsert) or withdrawn (delete). Topic ``items``, keyed by item_id
    (or unkeyed). Unknown fields are ignored."""

    item_id: Annotated[str, _doc("The item's id: non-empty, at most 256 characters.")]
    title: Annotated[str, _doc("Short text the encoder embeds first; an upsert needs a title or a text.")] = ""
    text: Annotated[str | None, _doc("Longer description; title + text at most 10,000 characters.")] = None
    tags: Annotated[list[str], _doc("Categories or keywords (at most 64), embedded with the title.")] = \
        msgspec.field(default_factory=list)
    created_at_s: Annotated[float | None, _doc("When the item appeared, float seconds since the epoch.")] = \
        msgspec.field(default=None, name="created_at")
    op: Annotated[ItemOp, _doc("upsert (the default) adds or replaces the item; delete withdraws it.")] = "upsert"

    def encoder_text(self) -> str:
        """The text the encoder embeds: title, then tags, then body."""
        parts = [self.title]
        if self.tags:
            parts.append(", ".join(self.tags))
        if self.text:
            parts.append(self.text)
        return ". ".join(p for p in parts if p)


class Click(msgspec.Struct, frozen=True, kw_only=True):
    """One user interaction with an item. Topic ``clicks``, keyed by user_id (required: the
    key picks the partition that holds the user's state)."""

    user_id: Annotated[str, _doc("The user's id: non-empty, at most 256 characters; equal to the message key.")]
    item_id: Annotated[str, _doc("The item's id; an item not indexed yet is held for a while, then dead-lettered.")]
    ts_s: Annotated[float, _doc("When it happened: float SECONDS since the epoch (not milliseconds), at most a day "
                                "ahead of the worker's clock.")] = msgspec.field(name="ts")
    event: Annotated[ClickEvent, _doc("What the user did: dislike pushes the item's neighbours away, the others "
                                      "pull them closer with growing weight.")] = "click"
    weight: Annotated[float | None, _doc("Overrides the event's default weight (finite).")] = None


class UserControl(msgspec.Struct, frozen=True, kw_only=True):
    """A privacy command. Topic ``user-control``, keyed by user_id (required)."""

    user_id: Annotated[str, _doc("The user's id; equal to the message key.")]
    op: Annotated[ControlOp, _doc("forget: delete the user's state (and its changelog record).")]


class SourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


#: A dead letter carries at most this much of its record (a dead letter that carried a
#: whole oversize record would itself be over the producer's limit).
DEAD_LETTER_RAW_BYTES = 4_096


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record that was not accepted, with why. Topic ``dead-letters``, keyed by the
    record's key. ``raw`` is the record's value as text, cut at 4,096 bytes."""

    source: Annotated[SourceRef, _doc("Where the rejected record was read.")]
    error: Annotated[str, _doc("What is wrong, for people.")]
    raw: Annotated[str, _doc("The record's value as text (invalid UTF-8 backslash-escaped), cut at 4,096 bytes.")]
    reason: Annotated[str | None, _doc("Stable code to count by: not_json, missing_field, future_timestamp, "
                                       "key_mismatch, unknown_item, ... (the README lists them).")] = None
    field: Annotated[str | None, _doc("The offending field, when one is to blame.")] = None
    size: Annotated[int | None, _doc("The whole value's length in bytes (null for a null value).")] = None
    truncated: Annotated[bool, _doc("raw was cut.")] = False
    schema_version: Annotated[int, _doc("Version of this record contract.")] = SCHEMA_VERSION


class RecommendedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One recommended item and why."""

    item_id: str
    score: Annotated[float, _doc("Relevance in [0, 1], one scale for every list: monotone in the ranker's "
                                 "fused score s (max(s, 0) / (1 + max(s, 0))); not a calibrated probability.")]
    because: Annotated[list[str], _doc("The user's own past items this one is closest to (empty for trending).")]
    source: Annotated[str, _doc("Which candidate source put it forward: interest (the user's interest "
                                "vectors), session (the last clicks), covisit (clicked next by others), colike "
                                "(liked by the same people), sequence (the next-item model), trending (popular now).")]


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    """The click that caused a recommendation: its identity makes outputs idempotent."""

    topic: str
    partition: int
    offset: int
    ts_s: Annotated[float, _doc("The click's own ts.")] = msgspec.field(name="ts")


class Recommendation(msgspec.Struct, frozen=True, kw_only=True):
    """A user's list after a click. Topic ``recommendations``, keyed by user_id. The same
    trigger seen twice (after a crash or rebalance) is a duplicate: keep either."""

    user_id: str
    items: Annotated[list[RecommendedItem], _doc("Best first.")]
    trigger: Annotated[Trigger, _doc("The click it answers (topic, partition, offset, ts).")]
    model: Annotated[str, _doc("The text encoder's version (name@digest) whose vectors ranked it.")]
    models: Annotated[dict[str, str], _doc("Every model version the list depends on, by role: encoder, ranker, and sequence once a sequence model ranks.")] = \
        msgspec.field(default_factory=dict)
    generated_at_s: Annotated[float, _doc("When it was made, float seconds since the epoch.")] = \
        msgspec.field(name="generated_at")
    redelivered: Annotated[bool, _doc("The click was answered before (its state change was already applied: "
                                      "a crash or rebalance re-read it); this list is ranked on the state "
                                      "as it is now, which may include later clicks.")] = False
    schema_version: Annotated[int, _doc("Version of this record contract.")] = SCHEMA_VERSION


class ItemVector(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """``item-vectors`` topic (compacted): the encoder's output, msgpack.

    ``vector`` holds float32 little-endian bytes; ``vector is None`` marks a delete
    (the message value itself is a tombstone for compaction; this form is for replay).
    """

    item_id: str
    model: str
    vector: bytes | None
    title: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    created_at_s: float | None = None

    @classmethod
    def from_array(cls, *, item_id: str, model: str, vector: np.ndarray, title: str = "",
                   tags: list[str] | None = None, created_at_s: float | None = None) -> ItemVector:
        return cls(item_id=item_id, model=model,
                   vector=np.ascontiguousarray(vector, dtype="<f4").tobytes(),
                   title=title, tags=list(tags or []), created_at_s=created_at_s)

    def array(self) -> np.ndarray:
        """The vector as float32 [dim] (a read-only view on the message bytes)."""
        if self.vector is None:
            raise RecordDecodeError(DecodeReason.MISSING_FIELD, "delete marker has no vector", field="vector")
        return np.frombuffer(self.vector, dtype="<f4")


# --------------------------------------------------------------------------- decoding

R = TypeVar("R", ItemEvent, Click, UserControl, Recommendation, DeadLetter)

_json_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_any_json = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_vector_decoder = msgspec.msgpack.Decoder(ItemVector)

# msgspec's error texts name the JSON path, e.g. "Expected `str`, got `int` - at `$.user_id`".
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _decoder(record_type: type[R]) -> msgspec.json.Decoder[R]:
    decoder = _json_decoders.get(record_type)
    if decoder is None:
        decoder = _json_decoders[record_type] = msgspec.json.Decoder(record_type)
    return decoder


def _diagnose(raw: bytes, exc: msgspec.DecodeError) -> RecordDecodeError:
    """Turn a typed-decode failure into a precise reason by looking at the raw value."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordDecodeError(DecodeReason.NOT_UTF8, f"invalid UTF-8 at byte {e.start}")
    try:
        value = _any_json.decode(raw)
    except RecursionError:
        return _too_deep()
    except msgspec.DecodeError as e:
        if "Number out of range" in str(e):  # 1e999: valid JSON grammar, not a finite float
            path = _PATH.search(str(exc))  # the typed decoder names the field; the untyped one cannot
            return RecordDecodeError(DecodeReason.NON_FINITE, str(exc), field=path.group(1) if path else None)
        return RecordDecodeError(DecodeReason.NOT_JSON, str(e))
    if not isinstance(value, dict):
        return RecordDecodeError(DecodeReason.NOT_OBJECT, f"expected a JSON object, got {type(value).__name__}")
    message = str(exc)
    missing = _MISSING.search(message)
    if missing:
        return RecordDecodeError(DecodeReason.MISSING_FIELD, message, field=missing.group(1))
    path = _PATH.search(message)
    field = path.group(1) if path else None
    if "Invalid enum value" in message:
        reason = DecodeReason.UNKNOWN_EVENT if field == "event" else DecodeReason.UNKNOWN_OP
        return RecordDecodeError(reason, message, field=field)
    return RecordDecodeError(DecodeReason.WRONG_TYPE, message, field=field)


def _too_deep() -> RecordDecodeError:
    return RecordDecodeError(DecodeReason.TOO_DEEP, "JSON nested deeper than the decoder's recursion limit")


def _decode(raw: bytes | None, record_type: type[R], limits: RecordLimits) -> R:
    if raw is None:
        raise RecordDecodeError(DecodeReason.NULL_VALUE, "the record has no value (null); "
                                "items are deleted with {\"op\": \"delete\"}")
    if len(raw) > limits.max_record_bytes:
        raise RecordDecodeError(
            DecodeReason.OVERSIZE, f"{len(raw)} bytes > limit {limits.max_record_bytes}"
        )
    try:
        return _decoder(record_type).decode(raw)
    except RecursionError:  # msgspec refuses nesting past Python's recursion limit this way
        raise _too_deep() from None
    except UnicodeDecodeError as exc:  # msgspec raises it for bad UTF-8 inside a string
        raise RecordDecodeError(DecodeReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    except msgspec.ValidationError as exc:
        raise _diagnose(raw, exc) from None
    except msgspec.DecodeError as exc:
        raise _diagnose(raw, exc) from None


def _check_id(value: str, field: str, limits: RecordLimits) -> None:
    if not value.strip():
        raise RecordDecodeError(DecodeReason.EMPTY_ID, "empty id", field=field)
    if len(value) > limits.max_id_chars:
        raise RecordDecodeError(
            DecodeReason.OVERSIZE, f"{len(value)} chars > limit {limits.max_id_chars}", field=field
        )


def _check_ts(ts_s: float, field: str, now_s: float, limits: RecordLimits) -> None:
    if not math.isfinite(ts_s):
        raise RecordDecodeError(DecodeReason.NON_FINITE, f"{ts_s!r} is not finite", field=field)
    if ts_s < 0:
        raise RecordDecodeError(DecodeReason.BAD_TIMESTAMP, f"{ts_s!r} is before 1970", field=field)
    if ts_s > now_s + limits.max_future_s:
        raise RecordDecodeError(
            DecodeReason.FUTURE_TIMESTAMP,
            f"{ts_s!r} is more than {limits.max_future_s:g} s after now ({now_s:.0f}); "
            "is it in milliseconds? timestamps are float seconds",
            field=field,
        )


def decode_item(raw: bytes, *, now_s: float, limits: RecordLimits = RecordLimits()) -> ItemEvent:
    """Decode an ``items`` record or raise :class:`RecordDecodeError`."""
    item = _decode(raw, ItemEvent, limits)
    _check_id(item.item_id, "item_id", limits)
    text_chars = len(item.title) + len(item.text or "")
    if text_chars > limits.max_text_chars:
        raise RecordDecodeError(
            DecodeReason.OVERSIZE, f"title+text {text_chars} chars > limit {limits.max_text_chars}",
            field="text",
        )
    if len(item.tags) > limits.max_tags:
        raise RecordDecodeError(
            DecodeReason.OVERSIZE, f"{len(item.tags)} tags > limit {limits.max_tags}", field="tags"
        )
    if item.op == "upsert" and not (item.title.strip() or (item.text or "").strip()):
        raise RecordDecodeError(DecodeReason.MISSING_FIELD, "an upsert needs a title or text", field="title")
    if item.created_at_s is not None:
        _check_ts(item.created_at_s, "created_at", now_s, limits)
    return item


def decode_click(raw: bytes, *, now_s: float, limits: RecordLimits = RecordLimits()) -> Click:
    """Decode a ``clicks`` record or raise :class:`RecordDecodeError`."""
    click = _decode(raw, Click, limits)
    _check_id(click.user_id, "user_id", limits)
    _check_id(click.item_id, "item_id", limits)
    _check_ts(click.ts_s, "ts", now_s, limits)
    if click.weight is not None and not math.isfinite(click.weight):
        raise RecordDecodeError(DecodeReason.NON_FINITE, f"{click.weight!r} is not finite", field="weight")
    return click


def decode_control(raw: bytes, *, limits: RecordLimits = RecordLimits()) -> UserControl:
    """Decode a ``user-control`` record or raise :class:`RecordDecodeError`."""
    control = _decode(raw, UserControl, limits)
    _check_id(control.user_id, "user_id", limits)
    return control


def decode_recommendation(raw: bytes) -> Recommendation:
    """Decode a ``recommendations`` record (for subscribers, tests and benchmarks)."""
    return _decode(raw, Recommendation, RecordLimits(max_record_bytes=1 << 30))


def decode_dead_letter(raw: bytes) -> DeadLetter:
    return _decode(raw, DeadLetter, RecordLimits(max_record_bytes=1 << 30))


def decode_item_vector(raw: bytes, *, dim: int | None = None) -> ItemVector:
    """Decode an ``item-vectors`` record, checking its dimension and finiteness."""
    try:
        record = _vector_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise RecordDecodeError(DecodeReason.WRONG_TYPE, str(exc)) from None
    if record.vector is not None:
        if len(record.vector) % 4:
            raise RecordDecodeError(DecodeReason.WRONG_DIM, "vector bytes not a multiple of 4", field="vector")
        got = len(record.vector) // 4
        if dim is not None and got != dim:
            raise RecordDecodeError(DecodeReason.WRONG_DIM, f"dim {got} != index dim {dim}", field="vector")
        if not np.isfinite(record.array()).all():
            raise RecordDecodeError(DecodeReason.NON_FINITE, "vector has NaN or inf", field="vector")
    return record


def check_key(key: bytes | None, record_id: str, field: str, *, required: bool = False) -> None:
    """Keys route records to partitions (per-user state): a wrong key breaks that.

    ``required``: an unkeyed message is refused too (clicks and user-control, whose state
    lives on the partition the key picks); items may come unkeyed.
    """
    if (key is not None or required) and key != record_id.encode():
        raise RecordDecodeError(
            DecodeReason.KEY_MISMATCH, f"message key {key!r} must equal {field} {record_id!r}", field=field
        )


def encode_json(record: msgspec.Struct) -> bytes:
    return _json_encoder.encode(record)


def encode_item_vector(record: ItemVector) -> bytes:
    return _msgpack_encoder.encode(record)


def reason_of(error: Exception) -> str:
    """A dead letter's reason code: the decode reason, else the error's class."""
    return error.reason.value if isinstance(error, RecordDecodeError) else type(error).__name__


def dead_letter(*, topic: str, partition: int, offset: int, raw: bytes | None,
                error: Exception) -> DeadLetter:
    """Build the dead letter for a record that failed with ``error``."""
    reason = reason_of(error)
    field = error.field if isinstance(error, RecordDecodeError) else None
    value = raw or b""
    return DeadLetter(
        source=SourceRef(topic=topic, partition=partition, offset=offset),
        error=str(error)[:DEAD_LETTER_RAW_BYTES],
        raw=value[:DEAD_LETTER_RAW_BYTES].decode("utf-8", errors="backslashreplace"),
        reason=reason,
        field=field,
        size=None if raw is None else len(raw),
        truncated=len(value) > DEAD_LETTER_RAW_BYTES,
    )
