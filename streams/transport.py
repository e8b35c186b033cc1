"""A faust transport tuned for milliseconds, plugged in through faust's extension point.

faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500`` for worker consumers: on a
quiet partition every fetch then waits up to 1.5 s, which is the latency floor of the
whole pipeline. This transport is registered under the ``faust.transports`` entry point
as ``recstream://`` (see pyproject.toml); its consumer thread applies
``Settings.kafka.fetch_max_wait_ms`` and its producer merges ``Settings.kafka.producer_extra``.
Its consumer also delivers fetched records without faust's per-record task pair (so natural
batches can form, see ``Consumer._drain_messages``), never delivers a record fetched before
its partition's last seek, commits what the stages served before a rebalance takes partitions
away (``Consumer.on_partitions_revoked``) and never commits past a click a stage still holds
(``Consumer._filter_committable_offsets``); with ``kafka.processing_guarantee=exactly_once``
it leaves the commits of the topics a stage commits in its own transactions to that stage.
No site-packages are edited.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Mapping

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.settings import ISOLATION_LEVEL, KafkaSettings

SCHEME = "recstream"


def _kafka_settings(app: Any) -> KafkaSettings:
    """The app built by :func:`streams.app.build_app` carries the recstream settings."""
    settings = getattr(app, "recstream_settings", None)
    return settings.kafka if settings is not None else KafkaSettings()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        kafka = _kafka_settings(self.app)
        # aiokafka reads this when the consumer starts (it builds its Fetcher in start()),
        # so setting it before start() is equivalent to passing it to the constructor,
        # which faust does not let us do.
        consumer._fetch_max_wait_ms = kafka.fetch_max_wait_ms
        # The same consumer recovers the tables from their changelogs: the state records of an
        # aborted transaction (an exactly_once batch, a failed rebuild) must not be read back.
        consumer._isolation_level = ISOLATION_LEVEL
        return consumer

    def _create_client_consumer(self, transport: Any) -> Any:
        consumer = super()._create_client_consumer(transport)
        consumer._fetch_max_wait_ms = _kafka_settings(self.app).fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Seeks so far; per partition, the number of its last seek and the offset it went to
        #: (``None``: the beginning); the seeks done when the last fetch came back (see
        #: :meth:`_drain_messages`).
        self._seeks = 0
        self._sought_at: dict[TP, int] = {}
        self._sought_to: dict[TP, int | None] = {}
        self._seeks_at_fetch = 0
        #: During a revoke, per partition the lowest offset the stages handed back unanswered.
        self._handed_back: dict[TP, int] = {}
        #: Partitions not fetched while a queue their records go to drains (see _drain_messages).
        self._backlogged: dict[TP, list[Any]] = {}

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _mark_sought(self, targets: Mapping[TP, int | None]) -> None:
        self._seeks += 1
        for tp, offset in targets.items():
            self._sought_at[tp] = self._seeks
            self._sought_to[tp] = offset

    async def _wait_next_records(self, timeout: float) -> Any:
        # Runs on the event loop when the consumer thread's fetch is back; a seek is marked
        # there when the thread's seek is back, in the same order (see _drain_messages).
        records = await super()._wait_next_records(timeout)
        self._seeks_at_fetch = self._seeks
        return records

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust's fetcher task
        """faust's fetch loop, without a task pair per record while nothing is in flux.

        faust's own loop (``faust.transport.consumer.Consumer._drain_messages``) hands every
        record to the conductor through ``wait_first(callback(message), suspend_flow.wait())``:
        two tasks and a trip through the event loop per record. That trip lets an agent run
        after every single record, so a consumer of a busy topic never sees more than one
        event waiting: no natural batch can form, and the two tasks cost more than relaying
        the record. Here a record is handed over directly (the callback then only waits for a
        full queue or faust's producer buffer), so a fetched batch reaches the queues in one go.
        While a rebalance or recovery is under way, or the flow is held, each record goes
        faust's own way instead: those are the moments when faust suspends, clears and seeks,
        and its per-record race against the suspension is what keeps records from being lost
        then, except that a record the suspension kept back is fetched again here
        (:meth:`_read_again`) instead of being counted as read. Gaps, read offsets and
        ``broker_commit_every`` are kept as faust keeps them.

        A record whose agent's queue is full is not waited for either: faust's loop blocks on
        it, and every record of every other partition fetched behind it waits too (a burst of
        new items held clicks up for seconds). Its partition is not fetched until the queue is
        down to 40% (faust's own mark for a queue under pressure), then read again from that
        record. faust pauses a partition only when that partition's own record pushed its queue
        past 80%, and resumes it only from a reader's ``get`` on an empty queue; a partition
        that meets a queue another one filled would never be resumed that way, so the
        partitions kept back here are paused and resumed here.

        A seek (faust's to the committed offsets when recovery ends, or :meth:`_read_again`)
        can land while a batch fetched before it is still being handed over. faust's loop
        delivers the rest of that batch: after its seek to the committed offset ``c`` it hands
        over ``c+1..`` and moves the read offset past ``c``, while the flow control's resume
        clears the queue that held ``c``; ``c`` is then never served and never read again (the
        click a joining worker lost, issue #16). Here a record whose partition was sought after
        its fetch came back is not delivered, and the partition is sought again to where that
        seek went once the batch is done (:meth:`_seek_each`): a seek and a fetch both complete
        in the consumer thread and are seen here in that order, so "sought after the fetch" is
        exact, and a fetch that raced a seek of several partitions is read again, never skipped.
        """
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        flowing = app.flow_control.is_active
        suspended = self.suspend_flow.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if self._backlogged:
                    self._resume_drained()
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = self.getmany(timeout=1.0)
                await self.sleep(0)  # as faust: getmany may not yield when records are waiting
                if self.should_stop:
                    continue
                undelivered: dict[TP, int] = {}  # per partition, the first record a suspension kept back
                backlogged: dict[TP, int] = {}  # per partition, the first record its full queue kept back
                stale: set[TP] = set()  # partitions sought after this batch was fetched
                queues: dict[str, list[Any]] = {}  # per topic, the queues its records go to
                sought_at = self._sought_at
                async for tp, message in ait:
                    if sought_at.get(tp, 0) > self._seeks_at_fetch:
                        stale.add(tp)
                        continue
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already delivered (fetched again after a seek)
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp in undelivered or tp in backlogged:
                        continue  # read again from the first record kept back
                    if app.rebalancing or suspended() or not flowing():
                        delivery = callback(message)
                        waited = await self.wait_first(delivery, self.suspend_flow.wait())
                        if delivery not in waited.done:
                            undelivered[tp] = offset
                            continue
                    else:
                        if self._queue_full(tp.topic, queues):
                            backlogged[tp] = offset
                            continue
                        await callback(message)
                    if sought_at.get(tp, 0) > self._seeks_at_fetch:
                        stale.add(tp)  # sought while it was handed over: the seek's read offset stands
                        continue
                    set_read_offset(tp, offset)
                if undelivered:
                    await self._read_again(undelivered)
                if backlogged:
                    await self._read_later(backlogged, queues)
                if stale:  # again to where the last seek went: this batch may have held records read after it
                    await self._seek_each({tp: self._sought_to.get(tp) for tp in stale})
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets, then to the beginning where the group has
        committed nothing (what ``auto_offset_reset="earliest"`` promises).

        After a rebalance faust seeks every partition to its committed offset, so the records
        fetched while the flow was stopped (during table recovery, say) are read again. A
        partition without a committed offset is not sought at all: its position stays where
        that fetching left it, and the records before it are never handed to a stage. A
        worker killed before its first commit (a click held for its item keeps commits back)
        left exactly that: its successor skipped every click the dead worker had not answered.
        Every partition sought is marked as such for :meth:`_drain_messages`.
        """
        await super().perform_seek()
        assigned = self.assignment()
        # aiokafka seeks only where something was committed; elsewhere the position stays
        self._mark_sought({tp: self._committed_offset.get(tp) for tp in assigned
                           if self._committed_offset.get(tp) is not None})
        acks_enabled_for = self.app.topics.acks_enabled_for
        uncommitted = [tp for tp in assigned
                       if acks_enabled_for(tp.topic) and self._committed_offset.get(tp) is None]
        if uncommitted:
            await self._thread.seek_to_beginning(*(TopicPartition(tp.topic, tp.partition) for tp in uncommitted))
            for tp in uncommitted:
                self._read_offset[tp] = None
            self._mark_sought(dict.fromkeys(uncommitted))

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._mark_sought({partition: offset})

    async def _seek(self, partition: TP, offset: int) -> None:
        # faust seeks from this thread, between the consumer thread's fetches; in the consumer
        # thread the seek is ordered with them (see _drain_messages).
        await self._thread.call_thread(self._seek_in_thread, TopicPartition(partition.topic, partition.partition),
                                       offset)

    async def _seek_in_thread(self, partition: TopicPartition, offset: int) -> None:
        self._thread._ensure_consumer().seek(partition, offset)

    def _queue_full(self, topic: str, queues: dict[str, list[Any]]) -> bool:
        """Whether a queue of an agent that reads ``topic`` is full (``queues`` caches them)."""
        found = queues.get(topic)
        if found is None:
            channels = self.app.topics._topic_name_index.get(topic, ())  # faust's Conductor: topic -> channels
            found = queues[topic] = [channel.queue for channel in channels]
        return any(queue.full() for queue in found)

    async def _seek_each(self, targets: Mapping[TP, int | None]) -> list[TP]:
        """Seek each partition still assigned to its offset (``None``: its beginning); return
        those sought, as faust's TP. A partition revoked meanwhile is left to its next owner,
        who reads it from the commit."""
        assigned = self.assignment()
        sought = []
        for fetched, offset in targets.items():
            tp = TP(fetched.topic, fetched.partition)  # faust's type (fetched records carry aiokafka's)
            if tp not in assigned:
                continue
            try:
                if offset is None:
                    await self._thread.seek_to_beginning(TopicPartition(tp.topic, tp.partition))
                    self._read_offset[tp] = None
                    self._mark_sought({tp: None})
                else:
                    await self.seek(tp, offset)
            except Exception as exc:  # noqa: BLE001 - revoked meanwhile
                self.log.debug("not reading %s again from %r: %r", tp, offset, exc)
                continue
            sought.append(tp)
        return sought

    async def _read_later(self, backlogged: Mapping[TP, int], queues: Mapping[str, list[Any]]) -> None:
        """Seek each partition back to the first record its full queue kept back, and stop
        fetching it until that queue drains (:meth:`_resume_drained`)."""
        for tp in await self._seek_each(backlogged):
            self._backlogged[tp] = queues[tp.topic]
            self.on_buffer_full(tp)

    def _resume_drained(self) -> None:
        """Fetch again the partitions whose queues are down to faust's pressure-drop mark."""
        assigned = self.assignment()
        for tp, queues in list(self._backlogged.items()):
            if tp not in assigned:
                del self._backlogged[tp]
            elif all(queue.qsize() <= queue.pressure_drop_size for queue in queues):
                del self._backlogged[tp]
                self.on_buffer_drop(tp)

    async def _read_again(self, undelivered: Mapping[TP, int]) -> None:
        """Fetch again the records a flow suspension kept from the stages.

        faust races each record's hand-over against the suspension of a rebalance; when the
        suspension wins, faust still counts the record as read, and only its seek to the
        committed offsets brings it back. A partition without a committed offset (a new
        group's, say at a cold start) is not sought, so its record was lost. Each partition
        here goes back to its first record kept back, or to its committed offset where
        that is earlier (a seek already done must not be undone).
        """
        targets = {}
        for tp, offset in undelivered.items():
            committed = self._committed_offset.get(tp)
            targets[tp] = offset if committed is None else min(offset, committed)
        await self._seek_each(targets)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Hand revoked partitions over with every served click committed.

        faust forgets the acknowledgements of revoked partitions before anything else ("will
        be eventually processed again"), and its wait for in-flight events is skipped because
        aiokafka already reports no assignment while it revokes. So a click served here just
        before a rebalance would be served again by the partition's next owner. Here, first:
        stop handing events to the stages (faust's flow control, as its own revoke path does),
        let the app finish what it holds (``recstream_before_revoke``: the recommend stage's
        in-flight batches), flush the producer (recommendations, state changelog), and commit
        the acknowledged offsets of the revoked partitions through aiokafka, whose
        generation is still valid until the group is re-joined. faust resumes the flow when
        the new assignment arrives. Only then does faust's own handling run.
        """
        before = getattr(self.app, "recstream_before_revoke", None)
        if before is not None and revoked:
            self.stop_flow()
            self.app.flow_control.suspend()
            self.app.flow_control.clear()
            self._handed_back = dict(await before())
            try:
                offsets = self._filter_committable_offsets(revoked)
            finally:
                self._handed_back = {}
            if offsets:
                await self.app.producer.flush()
                await self._thread.call_thread(self._commit_revoked, offsets)
        await super().on_partitions_revoked(revoked)

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        """faust's, except that no commit passes a click a stage took and has not answered.

        faust commits the first run of consecutive acknowledged offsets, which may start one
        past the committed offset (or anywhere before the first commit): a click acknowledged
        out of order (held for its item, or in a batch whose acks came back after the next
        batch's) would be committed unanswered. The recommend stage names, per partition, the
        lowest offset it still holds (``recstream_unanswered``; during a revoke, also what it
        hands back), and the acknowledgements from there on wait for a later commit.
        """
        unanswered = getattr(self.app, "recstream_unanswered", None)
        floors = dict(unanswered()) if unanswered is not None else {}
        for tp, offset in self._handed_back.items():
            floors[tp] = min(offset, floors.get(tp, offset))
        transactional = getattr(self.app, "recstream_transactional_topics", frozenset())
        committable = {}
        for tp in tps:
            offset = self._new_offset_below(tp, floors.get(tp))
            if offset is None or not self._should_commit(tp, offset):
                continue
            if tp.topic in transactional:
                # Committed already, in the transaction of the batch that answered it
                # (acknowledged only after that commit): a commit here could only move the
                # offset back. faust's bookkeeping still moves on, or its list of
                # acknowledged offsets would grow for good.
                self._committed_offset[tp] = offset
                self._thread.tp_last_committed_at[tp] = time.monotonic()  # for faust's stall warnings
                continue
            committable[tp] = offset
        return committable

    def _new_offset_below(self, tp: TP, floor: int | None) -> int | None:
        """faust's ``_new_offset`` over the acknowledged offsets below ``floor``; the others
        stay acknowledged for the next commit."""
        acked = self._acked[tp]
        later = [offset for offset in acked if floor is not None and offset >= floor]
        if not later:
            return self._new_offset(tp)
        acked[:] = [offset for offset in acked if offset < floor]
        try:
            return self._new_offset(tp) if acked else None
        finally:
            acked.extend(later)

    async def _commit_revoked(self, offsets: Mapping[TP, int]) -> None:
        consumer = self._thread._ensure_consumer()
        try:
            await consumer.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "")
                                   for tp, offset in offsets.items()})
        except KafkaError as exc:  # the next owner re-serves these clicks: at-least-once still holds
            self.log.warning("could not commit revoked partitions %r before the rebalance: %r", offsets, exc)


class Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        kafka = _kafka_settings(self.app)
        return {**super()._settings_extra(), "linger_ms": kafka.linger_ms, **kafka.producer_extra}


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = Consumer
    Producer: ClassVar[type] = Producer
