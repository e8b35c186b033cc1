"""Table recovery from a changelog with transactions in it: written by exactly_once workers
(``kafka.processing_guarantee``) or by a state rebuild (:mod:`streams.rebuild`).

faust recovers a partition's table by reading its changelog until it has seen the record
at the partition's end offset minus one. With transactions that offset is a commit or abort
marker, which no consumer ever receives (nor the records of an aborted transaction, read
committed), so recovery would wait for good. faust handles this only in its own
exactly-once mode, and only after two idle 5 s polls. Here the target is the offset of the
last *data* record before the end a consumer of this isolation level receives, found by
reading the partition's tail once per recovery (a few records: each transaction adds one
marker per partition). On a changelog without transactions that is faust's own target.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.settings import KafkaSettings
from streams.topics import read_ranges

#: Records read back from the end per step while looking for the last data record.
TAIL = 64
READ_TIMEOUT_S = 30.0


async def last_data_offsets(kafka: KafkaSettings, tps: list[TP]) -> dict[TP, int]:
    """Per partition, the offset of its last record a consumer receives (-1: none), reading
    back from the end in growing steps."""
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
        consumer.assign(list(parts))
        begin = await consumer.beginning_offsets(list(parts))
        upto = await consumer.end_offsets(list(parts))  # read committed: the last stable offsets
        found = dict.fromkeys(tps, -1)
        step = TAIL
        while todo := {part: (max(begin[part], upto[part] - step), upto[part]) for part, tp in parts.items()
                       if found[tp] < 0 and upto[part] > begin[part]}:
            for message in await read_ranges(consumer, todo, idle_timeout_s=READ_TIMEOUT_S):
                tp = parts[TopicPartition(message.topic, message.partition)]
                found[tp] = max(found[tp], message.offset)
            upto.update({part: start for part, (start, _) in todo.items()})
            step *= 4
        return found
    finally:
        await consumer.stop()


class MarkerAwareRecovery(Recovery):
    async def _build_highwaters(self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        if tps:
            last = await last_data_offsets(self.app.recstream_settings.kafka, sorted(tps))
            for tp in tps:
                destination[tp] = min(destination[tp], last[tp])
            self.log.info("%s changelog partitions: last data records at %s", title,
                          {f"{tp.topic}[{tp.partition}]": last[tp] for tp in sorted(tps)})


class MarkerAwareTableManager(TableManager):
    """faust's table manager with :class:`MarkerAwareRecovery` (the app's ``TableManager``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = MarkerAwareRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
