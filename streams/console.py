"""``recstream send`` and ``recstream tail``: put test records on a topic, read any topic.

Neither is on the serving path: they are what a service team reaches for while wiring its
producers and consumers to recstream. ``send`` checks each record against the same decoder
the workers use and keys it the way the workers expect (``item_id`` for items, ``user_id``
for clicks and user-control), so a record it accepts is one the workers accept; ``--raw``
sends the line as it is, to see a dead letter happen. ``tail`` reads every partition of a
topic outside any consumer group (it moves no one's offsets) and decodes what it knows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from streams.errors import ConfigError
from streams.records import (
    RecordDecodeError,
    decode_click,
    decode_control,
    decode_item,
    decode_item_vector,
)
from streams.settings import Settings

#: Topic kinds ``send`` produces to: the settings' topic attribute and the key field.
SENDABLE = {"items": ("items", "item_id"), "clicks": ("clicks", "user_id"),
            "user-control": ("user_control", "user_id")}


def topic_name(settings: Settings, kind_or_name: str) -> str:
    """A topic kind (``clicks``, ``dead-letters``: the configured name) or a topic's own name."""
    named = getattr(settings.topics, kind_or_name.replace("-", "_"), None)
    return named if isinstance(named, str) else kind_or_name


def prepare(kind: str, line: str, *, now_s: float, raw: bool = False) -> tuple[bytes | None, bytes]:
    """One JSON line -> (key, value) as the workers expect them. A click without ``ts`` gets
    the current time (a convenience of this tool, not of the topic contract).

    Raises:
        RecordDecodeError: the record would be dead-lettered (unless ``raw``).
    """
    value = line.strip().encode()
    if raw:
        try:
            key = json.loads(value).get(SENDABLE[kind][1]) if kind in SENDABLE else None
        except (ValueError, AttributeError):
            key = None
        return (str(key).encode() if key is not None else None), value
    if kind == "clicks":
        try:
            record = json.loads(value)
        except ValueError:
            record = None
        if isinstance(record, dict) and "ts" not in record:
            record["ts"] = now_s
            value = json.dumps(record).encode()
    decoded: Any
    if kind == "items":
        decoded = decode_item(value, now_s=now_s)
    elif kind == "clicks":
        decoded = decode_click(value, now_s=now_s)
    else:
        decoded = decode_control(value)
    return getattr(decoded, SENDABLE[kind][1]).encode(), value


async def send(settings: Settings, kind: str, lines: Iterable[str], *, raw: bool = False,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Produce every non-empty line to the kind's topic (waiting for the broker's acks).
    A line that would be dead-lettered is not sent: it is reported with its reason."""
    from aiokafka import AIOKafkaProducer

    if kind not in SENDABLE:
        raise ConfigError(f"send produces to {', '.join(SENDABLE)}, not {kind!r}")
    topic = topic_name(settings, kind)
    refused: list[dict[str, Any]] = []
    producer = AIOKafkaProducer(**settings.kafka.producer_kwargs(), acks="all")
    await producer.start()
    sent = 0
    try:
        pending = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                key, value = prepare(kind, line, now_s=time.time(), raw=raw)
            except RecordDecodeError as exc:
                refused.append({"line": number, "reason": exc.reason.value, "field": exc.field, "error": str(exc)})
                continue
            pending.append(await producer.send(topic, value, key=key))
        for future in pending:
            await future
            sent += 1
    finally:
        await producer.stop()
    if progress is not None:
        progress(f"sent {sent} record(s) to {topic}" + (f"; refused {len(refused)}" if refused else ""))
    return {"topic": topic, "sent": sent, "refused": refused}


def _readable(topic_kind: str, value: bytes | None) -> Any:
    """The record as JSON-able data: JSON topics as their object, ``item-vectors`` with the
    vector's dimension instead of its bytes, anything else as text."""
    if value is None:
        return None
    if topic_kind == "item_vectors":
        try:
            record = decode_item_vector(value)
        except RecordDecodeError:
            return value.decode("utf-8", errors="backslashreplace")
        data = msgspec.to_builtins(record)
        data["vector"] = None if record.vector is None else f"<{len(record.vector) // 4} floats>"
        return data
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", errors="backslashreplace")


async def tail(settings: Settings, kind_or_name: str, *, from_beginning: bool, limit: int | None,
               timeout_s: float | None, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the topic's records as they come (or from the start), in no consumer group;
    ``emit`` each as ``{"topic", "partition", "offset", "key", "timestamp", "value"}``. Stops
    after ``limit`` records or ``timeout_s`` seconds without one."""
    from streams.topics import whole_topic_reader

    topic = topic_name(settings, kind_or_name)
    kind = next((name for name in type(settings.topics).model_fields
                 if getattr(settings.topics, name) == topic), "")
    consumer, partitions = await whole_topic_reader(settings.kafka, topic)
    count = 0
    try:
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        while limit is None or count < limit:
            batch = await consumer.getmany(timeout_ms=int((timeout_s or 3600) * 1000),
                                           max_records=None if limit is None else limit - count)
            if not batch:
                if timeout_s is not None:
                    break
                continue
            for records in batch.values():
                for record in records:
                    emit({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                          "key": None if record.key is None else record.key.decode("utf-8", "backslashreplace"),
                          "timestamp": record.timestamp / 1000.0, "value": _readable(kind, record.value)})
                    count += 1
    finally:
        await consumer.stop()
    return {"topic": topic, "records": count}


def run_send(settings: Settings, kind: str, lines: Iterable[str], *, raw: bool = False) -> dict[str, Any]:
    return asyncio.run(send(settings, kind, lines, raw=raw))


def run_tail(settings: Settings, kind_or_name: str, *, from_beginning: bool, limit: int | None,
             timeout_s: float | None, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    return asyncio.run(tail(settings, kind_or_name, from_beginning=from_beginning, limit=limit,
                            timeout_s=timeout_s, emit=emit))
