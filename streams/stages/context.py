"""What the stages of one worker process share: settings, metrics, the dead-letter topic,
and the handles one stage gives another (the index replica to the recommend stage)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust

from streams.metrics import Metrics
from streams.stages.endpoints import Health
from streams.records import RecordDecodeError, RecordLimits, dead_letter, encode_json, reason_of
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.recommend import Recommender
    from streams.stages.crowd import CrowdShare
    from streams.stages.index_replica import IndexReplica
    from streams.stages.pull import PullApi
    from streams.stages.recommend import RecommendStage

log = logging.getLogger(__name__)

#: How a stage hands a record to Kafka: ``send(topic, key, value, partition)`` returns the future
#: of its acknowledgement (faust's producer, or a batch's transaction: streams.stages.transactions).
Send = Callable[[str, bytes | None, bytes, int | None], Awaitable[asyncio.Future[Any]]]


class RecstreamApp(faust.App):
    """A faust app that carries recstream's settings (read by :mod:`streams.transport`)."""

    recstream_settings: Settings
    recstream_context: WorkerContext
    recstream_lock: Any = None  # the worker directory's lock (streams.stages.app.lock_worker_dir)
    #: Awaited before partitions are revoked (see :mod:`streams.transport`): the stages finish
    #: what they hold, and name per partition the lowest offset they hand back unanswered.
    #: ``None`` when no stage holds events across awaits.
    recstream_before_revoke: Callable[[], Awaitable[Mapping[Any, int]]] | None = None
    #: Per partition, the lowest offset a stage took and has not acknowledged yet: no commit
    #: passes it (see :mod:`streams.transport`).
    recstream_unanswered: Callable[[], Mapping[Any, int]] | None = None
    #: Topics whose offsets a stage commits in its own Kafka transactions (exactly_once):
    #: faust's commits leave them alone.
    recstream_transactional_topics: frozenset[str] = frozenset()


def limits_of(settings: Settings) -> RecordLimits:
    lim = settings.limits
    return RecordLimits(max_text_chars=lim.max_text_chars, max_id_chars=lim.max_id_chars,
                        max_tags=lim.max_tags, max_future_s=lim.max_future_s,
                        max_record_bytes=lim.max_record_bytes)


#: What a dead-letter reason usually means, for its first log line. Record contents are never
#: logged (they may hold personal data): the dead letter has them.
_HINTS = {
    "future_timestamp": " - timestamps are float seconds since the epoch: is this one in milliseconds?",
    "key_mismatch": " - clicks and user-control must be keyed by their user_id",
    "unknown_item": " - the click's item was not indexed in time: produce items before their clicks",
    "not_json": " - records are JSON objects, UTF-8",
    "null_value": " - a record with no value; items are deleted with {\"op\": \"delete\"}",
    "missing_field": "",
    "oversize": " - see RECSTREAM_LIMITS__*",
}


@dataclass
class WorkerContext:
    """What the agents share inside one worker process."""

    settings: Settings
    app: RecstreamApp
    metrics: Metrics
    limits: RecordLimits
    replica: IndexReplica | None = None
    recommender: Recommender | None = None  # the recommend stage's, once it has one
    recommend_stage: RecommendStage | None = None
    crowd: CrowdShare | None = None  # the recommend stage's link to the crowd topic
    index_ready: asyncio.Event = field(default_factory=asyncio.Event)
    dead_letters: Any = None
    health: Health = field(default_factory=Health)  # what /healthz and /readyz answer
    stages: tuple[str, ...] = ()
    worker_name: str = "w0"
    encoder_version: str = ""  # the encode stage's model, when this worker runs it
    endpoints: str | None = None  # where /metrics, /healthz and /readyz are served, when they are
    pull: PullApi | None = None  # the pull API, on workers with the recommend stage
    _reasons_seen: set[str] = field(default_factory=set)

    def mark_index_ready(self) -> None:
        """The replica has caught up: the recommend stage may serve, the worker may be ready."""
        self.index_ready.set()
        self.health.index_caught_up = True

    def letter(self, message: Any, error: Exception) -> bytes:
        """The dead letter for ``message`` as bytes (count it with :meth:`count_letter` once
        the broker has it)."""
        letter = dead_letter(topic=message.topic, partition=message.partition,
                             offset=message.offset, raw=message.value, error=error)
        log.debug("dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
        return encode_json(letter)

    def count_letter(self, topic: str, error: Exception) -> None:
        """Count a dead letter the broker has; the first of each reason is also logged, with
        what it means (later ones are counted in the periodic summary: no log flood)."""
        reason = reason_of(error)
        self.metrics.dead_letters.labels(topic=topic, reason=reason).inc()
        if reason not in self._reasons_seen:
            self._reasons_seen.add(reason)
            field_name = getattr(error, "field", None)
            log.warning("a record on %s was dead-lettered: %s%s%s (the first %s; the summary counts the "
                        "rest; `recstream tail %s` shows them)", topic, reason,
                        f" at {field_name}" if field_name else "", _HINTS.get(reason, ""), reason,
                        self.settings.topics.dead_letters)

    async def reject(self, message: Any, error: Exception) -> None:
        """A record that could not be read: its dead letter. An error no decode rule names is
        logged with its traceback too (a bug or a record no one foresaw), never re-raised."""
        if not isinstance(error, RecordDecodeError):
            log.error("record %s[%d]@%d could not be read", message.topic, message.partition, message.offset,
                      exc_info=error)
        await self.send_dead_letter(message, error)

    async def send_dead_letter(self, message: Any, error: Exception) -> None:
        """Send the dead letter (it is counted when the broker acknowledges it)."""
        sent = await self.dead_letters.send(key=message.key, value=self.letter(message, error))

        def count(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.count_letter(message.topic, error)

        sent.add_done_callback(count)

    @contextlib.asynccontextmanager
    async def direct_dead_letters(self) -> AsyncIterator[Callable[[Any, Exception], Awaitable[None]]]:
        """A dead-letter sender for work done before the faust app runs (the catch-ups), on a
        producer of its own."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.settings.kafka.producer_kwargs())
        await producer.start()

        async def send(message: Any, error: Exception) -> None:
            await producer.send_and_wait(self.settings.topics.dead_letters, self.letter(message, error),
                                         key=message.key)
            self.count_letter(message.topic, error)

        try:
            yield send
        finally:
            await producer.stop()
