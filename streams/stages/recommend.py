"""Recommend stage: ``clicks`` (keyed by user_id) in natural batches -> user states ->
:class:`~streams.recommend.Recommender` -> ``recommendations``; ``user-control`` forget.

Natural batching. The stage takes whatever clicks are waiting in its queue (up to
``recommend.max_batch``) and serves them as one batch; it never waits for more, so a lone
click on an idle stream goes straight through and a burst is served in a few large batches.
faust delivers a partition's messages to the queue in offset order, and a batch is applied
in queue order, so a user's clicks (one partition: clicks are keyed by user_id) are applied
in the order they were produced.

A batch, in order:
1. decode every click; a bad one gets its dead letter and the rest go on; a click on an
   item not indexed yet is held until its item arrives (items and clicks travel on different
   topics, so a click can overtake its item), for ``recommend.unknown_item_wait_s`` at most,
   then dead-lettered as ``unknown_item``;
2. load each user's state once (:class:`~streams.stages.user_states.UserStates`), apply
   the user's clicks in order (``Recommender.observe``: a replayed click is a no-op);
   steps 2 and 3 are :mod:`streams.clickbatch`, which the deterministic rebuild runs too;
3. rank every user of the batch in one ``Recommender.recommend_batch`` (one index call for
   all their vector queries); a user's clicks in the batch share the list ranked on the state
   after their last click (each click still gets its own record, with its own ``trigger``);
4. produce every recommendation and dead letter (they leave as one produce per partition),
   and let them go (:data:`ANSWERS_LEAVE_TURNS`) before the rest of the batch's work;
5. learn what the batch taught the crowd (:func:`~streams.clickbatch.learn_batch`) and
   publish it to the other workers;
6. write each changed state back once (one RocksDB write batch, one changelog record per user);
7. acknowledge the batch's clicks once their recommendations are acknowledged by the broker.

At-least-once follows: faust commits only acknowledged offsets, and flushes its producer
(the changelog) before it commits. A crash re-processes the clicks since the last commit;
their state updates are no-ops and they are answered again (duplicates downstream are
recognisable by ``trigger``).

Exactly-once (``kafka.processing_guarantee=exactly_once``): the records of steps 4-6 become
one Kafka transaction per batch (:mod:`streams.stages.transactions`) holding the records, the
crowd's lessons, the changed states' changelog records and the input offsets; the states are
put locally and the crowd learns the batch after it commits, and a click whose state change
the state already holds is not answered again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.clickbatch import BatchUser, Versions, apply_clicks, learn_batch, rank_users, read_click, recommendations
from streams.interest import UserState, forgotten
from streams.learned import LinearRanker, fit_ranker
from streams.ranking import RankedItem
from streams.recommend import CrowdEvent, Recommender, RecommenderParams
from streams.records import Click, DecodeReason, RecordDecodeError, check_key, decode_control, encode_json
from streams.sequence import SequenceWatch
from streams.stages.context import Send, WorkerContext
from streams.stages.crowd import CrowdShare
from streams.stages.transactions import BatchTransactions
from streams.stages.user_states import STATE_TABLE, UserStates
from streams.topics import state_changelog_configs

log = logging.getLogger(__name__)

#: Event-loop turns the stage yields after handing a batch's answers to the producer, before
#: it learns from the batch and writes its states: aiokafka's sender task needs a few turns
#: to wake, drain its accumulator and write the produce request, so that the answers leave
#: then rather than after that work, and in a request of their own (at 50 clicks/s their
#: way from the stage to the reader shrank by ~0.3 ms: docs/architecture.md).
ANSWERS_LEAVE_TURNS = 4


class RecommendStage:
    """Serves batches of click events; owns the :class:`Recommender`."""

    def __init__(self, ctx: WorkerContext, states: UserStates) -> None:
        self.ctx = ctx
        self.states = states
        settings = ctx.settings
        self.max_batch = settings.recommend.max_batch
        self.recommendations_topic = settings.topics.recommendations
        self.dead_letters_topic = settings.topics.dead_letters
        self.params = RecommenderParams.from_settings(settings)
        self.unknown_item_wait_s = settings.recommend.unknown_item_wait_s
        self.recommender: Recommender | None = None
        #: Served batches waiting for their produce acks, with their click events.
        self._pending: dict[asyncio.Future[None], Sequence[Any]] = {}
        self._serving: Sequence[Any] = ()  # the click events of the batch being served
        self._refit: asyncio.Future[LinearRanker | None] | None = None  # the learned ranker's refit, while it runs
        self._busy = False  # a batch is being served
        self._one_batch = asyncio.Lock()  # one batch at a time: a user's state is loaded, moved, written back
        #: Clicks on items not indexed yet: (monotonic deadline, faust event, item id), oldest first.
        self._held: list[tuple[float, Any, str]] = []
        self._wake_held = asyncio.Event()  # a click was held, or an item some held click waits for arrived
        #: (topic, partition) -> the last offset served since partitions were last assigned
        self._served: dict[tuple[str, int], int] = {}
        self._sequence_watch = SequenceWatch(settings.sequence_dir)
        self._queue: asyncio.Queue[Any] | None = None  # the clicks faust queued for the agent
        #: exactly_once: the transactions batches are served in, and per (topic, partition)
        #: the input offset the last one committed (since partitions were last assigned).
        self.transactions: BatchTransactions | None = None
        self._committed: dict[tuple[str, int], int] = {}
        self._failed = False  # a transaction failed: the worker is stopping, nothing more is served
        #: Batches taken and waiting for their turn (the queue's, or held clicks released).
        self._waiting: dict[int, Sequence[Any]] = {}

    # ------------------------------------------------------------------ recommender

    def ensure_recommender(self) -> Recommender | None:
        """The stage's recommender over the replica's catalogue and index, made once the index
        exists (its first vector gives the dimension); ``None`` before that."""
        if self.recommender is None:
            replica = self.ctx.replica
            if replica is None or replica.index is None:
                return None
            recommender = Recommender(index=replica.index, catalog=replica.catalog, params=self.params)
            if self.ctx.crowd is not None:
                self.ctx.crowd.restore(recommender)
            replica.on_delete.append(recommender.forget_items)
            replica.on_upsert.append(self._items_arrived)
            self.recommender = self.ctx.recommender = recommender
        return self.recommender

    async def watch_sequence_model(self) -> None:
        """Rank with the newest sequence model ``recstream train`` published, from the next
        batch on (it is loaded off the event loop; a batch always sees one model)."""
        recommender = self.ensure_recommender()
        if recommender is None:
            return
        model = await asyncio.get_running_loop().run_in_executor(None, self._sequence_watch.poll)
        if model is not None:
            recommender.use_sequence(model)

    # ------------------------------------------------------------------ batches

    async def run(self, stream: Any) -> None:
        """The agent body: natural batches from the stream's queue until cancelled.

        faust's per-event stream machinery (an iterator step, an ack and a context switch per
        event) is bypassed: the agent reads the events faust's conductor queued for it, and
        acknowledges them itself, after their batch is served.
        """
        # Subscribe first: clicks fetched while the index is not ready wait in the queue
        # (whose bound holds the fetching back) instead of finding no reader.
        queue = self._queue = aiter(stream.channel).queue  # iterating the channel subscribes its topic
        # faust clears its queues whenever it resumes the flow, and it resumes it after its
        # seek to the committed offsets, when the fetch loop may already have handed over
        # records read from there: they would be neither served nor read again (issue #16).
        # This queue is cleared when partitions are revoked (drain) instead; what arrives
        # after the assignment is served, and what the seek reads again is dropped by _fresh.
        self.ctx.app.flow_control._queues.discard(queue)  # mode's FlowControlEvent.manage_queue, undone
        await self.ctx.index_ready.wait()
        self.ensure_recommender()
        release = asyncio.ensure_future(self._release_held())
        try:
            while True:
                try:
                    batch = [await queue.get()]  # idle: wait for the next click, then serve it at once
                except StopAsyncIteration:  # faust ends a channel's readers this way when it stops
                    return
                while len(batch) < self.max_batch:
                    try:
                        batch.append(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                await self._serve_one_at_a_time(self._fresh(batch), hold=True)
        finally:
            release.cancel()
            if self.transactions is not None:
                await self.transactions.stop()

    async def _serve_one_at_a_time(self, events: Sequence[Any], *, hold: bool) -> None:
        # Taken from the queue (or released) but not served yet: no commit may pass them.
        self._waiting[id(events)] = events
        try:
            async with self._one_batch:
                del self._waiting[id(events)]
                self._busy = True
                self._serving = events
                try:
                    await self.serve(events, hold=hold)
                finally:
                    self._busy = False
                    self._serving = ()
        finally:
            self._waiting.pop(id(events), None)

    async def forget(self, key: bytes, partition: int, user_id: str, at_s: float) -> None:
        """Replace the user's state with :func:`~streams.interest.forgotten` (locally and in
        the changelog, where it supersedes every earlier state once compacted). Between batches:
        a batch that loaded the user's state must not write it back over the forget."""
        async with self._one_batch:
            changed = {key: (partition, forgotten(user_id, at_s))}
            if self.transactions is not None:
                # in a transaction too, so that it lands in the changelog in order with the
                # batches' records (faust's producer would send it beside them, in any order)
                await self._commit_in_transaction([], [], [], [], changed)
            else:
                self.states.write(changed)

    # ------------------------------------------------------------------ clicks that overtook their item

    def _hold(self, events: list[tuple[Any, str]]) -> None:
        """Keep clicks whose item is not indexed yet for ``unknown_item_wait_s``. They stay
        unacknowledged, so their offsets are not committed while they wait: a crash re-reads them."""
        deadline = time.monotonic() + self.unknown_item_wait_s
        self._held.extend((deadline, event, item_id) for event, item_id in events)
        self.ctx.metrics.clicks_held.set(len(self._held))
        self._wake_held.set()
        for event, item_id in events:
            log.debug("click %s[%d]@%d on item %r not indexed yet: held up to %g s", event.message.topic,
                      event.message.partition, event.message.offset, item_id, self.unknown_item_wait_s)

    def _items_arrived(self, item_ids: Sequence[str]) -> None:
        if self._held and not self._wake_held.is_set() and {item for *_, item in self._held}.intersection(item_ids):
            self._wake_held.set()

    async def _release_held(self) -> None:
        """Serve each held click once its item is indexed; dead-letter it when its time runs out."""
        while True:
            timeout = max(0.0, self._held[0][0] - time.monotonic()) if self._held else None
            try:
                await asyncio.wait_for(self._wake_held.wait(), timeout)
            except TimeoutError:
                pass
            self._wake_held.clear()
            recommender = self.recommender
            now = time.monotonic()
            due = [(deadline, event, item) for deadline, event, item in self._held
                   if deadline <= now or (recommender is not None and item in recommender.catalog)]
            if not due:
                continue
            released = {id(event) for _, event, _ in due}
            self._held = [h for h in self._held if id(h[1]) not in released]
            self.ctx.metrics.clicks_held.set(len(self._held))
            await self._serve_one_at_a_time([event for _, event, _ in due], hold=False)

    def unanswered(self) -> dict[Any, int]:
        """Per partition, the lowest offset of a click taken from the queue and not acknowledged
        yet: held for its item, being served, or waiting for its recommendations' acks.

        faust commits the first run of acknowledged offsets and lets the run start one past
        its committed offset, or anywhere when nothing was committed yet; a click still held
        (or a batch acknowledged after the next one) would then be committed unanswered, and
        lost to a crash or a rebalance. :mod:`streams.transport` commits below these offsets.
        """
        return self._lowest_unanswered(serving=True)

    def _lowest_unanswered(self, *, serving: bool) -> dict[Any, int]:
        """:meth:`unanswered`, with or without the batch being served."""
        floors: dict[Any, int] = {}
        events = [event for _, event, _ in self._held]
        if serving:
            events.extend(self._serving)
        for waiting in self._waiting.values():
            events.extend(waiting)
        for batch in self._pending.values():
            events.extend(batch)
        for event in events:
            message = event.message
            if not message.acked and message.offset < floors.get(message.tp, message.offset + 1):
                floors[message.tp] = message.offset
        return floors

    async def drain(self) -> dict[Any, int]:
        """Return once no batch is being served and every served batch is acknowledged
        (before a rebalance hands this worker's partitions over: :mod:`streams.transport`),
        with the lowest offset per partition of the clicks handed back unanswered."""
        while self._busy or self._pending:
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)
            else:
                await asyncio.sleep(0.001)
        handed_back = self.unanswered()
        if self._queue is not None:
            self._queue.clear()  # fetched, never taken: the partitions' next owner reads them from the commit
        if self._held:
            # Handed back unanswered and uncommitted: whoever gets the partition reads them
            # again from the committed offset (marked acknowledged only so faust does not wait).
            for _, event, _ in self._held:
                event.message.acked = True
            log.info("%d held click(s) on items not indexed yet left to the partitions' next owner", len(self._held))
            self._held.clear()
            self.ctx.metrics.clicks_held.set(0)
        self._served.clear()  # every partition is revoked; what comes next is read from the commits
        self._committed.clear()
        return handed_back

    def _fresh(self, events: Sequence[Any]) -> list[Any]:
        """The events of this worker's partitions not served before in this assignment.

        After a rebalance faust seeks to the committed offsets, and records delivered before
        that seek (while the new assignment's state was recovered) come again. Such a click
        was answered already: it is dropped here, and marked acknowledged so that faust does
        not wait for it, without acknowledging its offset (the first delivery does that once
        its recommendation is on the broker). A click of a partition no longer assigned here
        is dropped the same way: its next owner reads it from the commit."""
        served = self._served
        assigned = self.ctx.app.consumer.assignment()
        fresh = []
        for event in events:
            message = event.message
            tp = (message.topic, message.partition)
            if message.offset <= served.get(tp, -1) or message.tp not in assigned:
                message.acked = True
                log.debug("click %s[%d]@%d delivered again or not assigned here: dropped", *tp, message.offset)
                continue
            served[tp] = message.offset
            fresh.append(event)
        return fresh

    async def serve(self, events: Sequence[Any], *, hold: bool = True) -> None:
        """Serve one batch of click events; never raises for a bad click. With ``hold``, a click
        on an item not indexed yet is held for it (:meth:`_hold`) instead of dead-lettered."""
        if not events or self._failed:
            return
        received_s = time.time()  # epoch seconds: a click's wait is read against its Kafka timestamp
        started = time.perf_counter()  # the steps' durations: immune to the wall clock being stepped
        ctx = self.ctx
        metrics = ctx.metrics
        metrics.click_batch_size.observe(len(events))
        letters: list[tuple[Any, Exception]] = []
        recommender = self.ensure_recommender()
        clicks: list[tuple[Any, Click]] = []
        held: list[tuple[Any, str]] = []
        wait_s = self.unknown_item_wait_s
        for event in events:
            message = event.message
            try:
                click = read_click(message, now_s=received_s, limits=ctx.limits)
                if recommender is None or click.item_id not in recommender.catalog:
                    if hold and wait_s > 0:
                        held.append((event, click.item_id))
                        continue
                    raise RecordDecodeError(
                        DecodeReason.UNKNOWN_ITEM, f"item {click.item_id!r} is not in the catalogue"
                        + (f" (the click waited {wait_s:g} s for it)" if wait_s > 0 else ""), field="item_id")
            except RecordDecodeError as exc:
                letters.append((event, exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a record no rule foresaw: its dead letter, not a crash
                log.exception("click at %s[%d]@%d could not be read", message.topic, message.partition,
                              message.offset)
                letters.append((event, exc))
                continue
            clicks.append((event, click))
        if held:
            self._hold(held)
            waiting = {id(event) for event, _ in held}
            events = [event for event in events if id(event) not in waiting]
        for event in events:  # a held click is counted when it is released, its wait with it
            if (stamp := event.message.timestamp) is not None:
                metrics.click_wait_seconds.observe(max(0.0, received_s - stamp))
        learned: list[CrowdEvent] = []
        users = apply_clicks(recommender, clicks, self.states.load, letters, learned) if clicks else []
        read_done = time.perf_counter()
        ranked = rank_users(recommender, users, letters) if users else []
        rank_done = time.perf_counter()
        changed = {u.key: (u.partition, u.state) for u, _ in ranked if u.changed and u.state is not None}
        if self.transactions is not None:
            if not await self._commit_in_transaction(events, ranked, letters, learned, changed):
                return  # the worker is stopping; the batch is read again by whoever serves on
            if learned and recommender is not None:
                learn_batch(recommender, learned)
        else:
            acks = await self._produce(ranked, letters, self._send)
            for _ in range(ANSWERS_LEAVE_TURNS):
                await asyncio.sleep(0)
            if learned and recommender is not None:
                learn_batch(recommender, learned)
            if ctx.crowd is not None:
                acks += await ctx.crowd.publish(self._send, learned)
            self.states.write(changed)
            # The next batch need not wait for the broker's acknowledgements: the clicks are
            # acknowledged to faust (made committable) when they come back.
            task = asyncio.ensure_future(self._acknowledge(events, acks, letters))
            self._pending[task] = events
            task.add_done_callback(self._pending.pop)
        clicks_out = sum(len(u.clicks) for u, _ in ranked)
        metrics.clicks.inc(clicks_out)
        sent_done = time.perf_counter()
        step = metrics.click_step_seconds
        step.labels("read").observe(read_done - started)
        step.labels("rank").observe(rank_done - read_done)
        step.labels("send").observe(sent_done - rank_done)
        for _ in range(clicks_out):
            metrics.click_seconds.observe(sent_done - started)
        if recommender is not None and recommender.refit_due and self._refit is None:
            self._refit_ranker(recommender)

    async def _send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
                    ) -> asyncio.Future[Any]:
        return await self.ctx.app.producer.send(topic, key, value, partition, None, None)

    async def _commit_in_transaction(self, events: Sequence[Any], ranked: list[tuple[BatchUser, list[RankedItem]]],
                                     letters: list[tuple[Any, Exception]], learned: list[CrowdEvent],
                                     changed: dict[bytes, tuple[int, UserState]]) -> bool:
        """exactly_once: the batch's records, its changed states' changelog records and the input
        offsets it answered, in one transaction; then the states locally and the acks to faust.
        A click answered in an earlier committed transaction (read again after a crash: its
        state change is in the state) is not answered again. On failure the worker stops
        (its successor serves the batch again) and False is returned."""
        txn = self.transactions
        assert txn is not None
        encoded = self.states.encode(changed)
        offsets = self._committable()
        try:
            if ranked or letters or encoded or offsets:
                await txn.begin()
                await self._produce(ranked, letters, txn.send, answered_before_skipped=True)
                if self.ctx.crowd is not None:
                    await self.ctx.crowd.publish(txn.send, learned)
                changelog = self.states.changelog_topic
                logged = [(partition, await txn.send(changelog, key, raw, partition))
                          for key, (partition, raw) in encoded.items()]
                self.ctx.metrics.transaction_seconds.observe(await txn.commit(offsets))
            else:
                logged = []
        except Exception as exc:  # noqa: BLE001 - nothing of the batch is visible; its successor serves it
            log.error("the transaction of a batch of %d clicks failed, stopping: %r", len(events), exc)
            self._failed = True  # no later batch may commit past these clicks
            await txn.abort()
            await self.ctx.app.crash(exc)
            return False
        self._committed.update(offsets)
        self.states.put_local(encoded)
        persisted: dict[int, int] = {}
        for partition, sent in logged:
            persisted[partition] = max(persisted.get(partition, -1), sent.result().offset)
        self.states.persisted(persisted)
        for event, error in letters:
            self.ctx.count_letter(event.message.topic, error)
        for event in events:
            event.ack()
        return True

    def _committable(self) -> dict[tuple[str, int], int]:
        """Per partition served since the last commit, the next offset to read: one past the
        last click taken, or the oldest click still held for its item or taken in a batch
        that waits for its turn (the batch being committed answers all of its own)."""
        held = self._lowest_unanswered(serving=False)  # keyed by faust's TP, a (topic, partition) tuple
        offsets = {}
        for tp, last in self._served.items():
            offset = min(last + 1, held.get(tp, last + 1))
            if offset > self._committed.get(tp, -1):
                offsets[tp] = offset
        return offsets

    def _refit_ranker(self, recommender: Recommender) -> None:
        """Refit the learned ranker in a thread: a fit takes up to a second, and batches go on
        meanwhile (with the ranker they had); the new one ranks from the batch after it is done."""
        future = asyncio.get_running_loop().run_in_executor(None, fit_ranker, recommender.ranker_answers())
        self._refit = future

        def done(fitted: asyncio.Future[LinearRanker | None]) -> None:
            self._refit = None
            if fitted.cancelled():  # the worker is stopping
                return
            try:
                ranker = fitted.result()
            except Exception:  # noqa: BLE001 - a failed fit keeps the ranker there was
                log.exception("refitting the learned ranker failed; ranking on with %s",
                              recommender.model_versions()["ranker"])
                return
            recommender.use_ranker(ranker)
            if ranker is not None:
                log.info("ranker refit from the stream: %s %s", ranker.version, ranker.weights())

        future.add_done_callback(done)

    async def _produce(self, ranked: list[tuple[BatchUser, list[RankedItem]]],
                       letters: list[tuple[Any, Exception]], send: Send, *,
                       answered_before_skipped: bool = False) -> list[asyncio.Future[Any]]:
        """Hand every recommendation and dead letter of the batch to ``send``, in order; return
        the futures of their acknowledgements. Nothing is sent until the batch yields to the
        event loop, so they leave together: one produce request per broker. With
        ``answered_before_skipped``, a click whose state change was applied before gets no
        recommendation (exactly_once: it was committed with that state change)."""
        sends = []
        versions = Versions.of(self.recommender)
        for user, items in ranked:
            for event, rec in recommendations(versions, user, items,
                                              answered_before_skipped=answered_before_skipped):
                sends.append(await send(self.recommendations_topic, event.message.key, encode_json(rec), None))
            if answered_before_skipped and user.redelivered:
                self.ctx.metrics.clicks_answered_before.inc(len(user.redelivered))
        for event, error in letters:  # errors other than bad records were logged where they arose
            message = event.message
            sends.append(await send(self.dead_letters_topic, message.key, self.ctx.letter(message, error), None))
        return sends

    async def _acknowledge(self, events: Sequence[Any], acks: list[asyncio.Future[Any]],
                           letters: list[tuple[Any, Exception]]) -> None:
        results = await asyncio.gather(*acks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # Unacknowledged clicks would hold their partitions' commits back for good; the
            # worker stops instead and its successor re-reads them (at-least-once).
            log.error("%d of %d records of a batch were not produced: %r", len(failed), len(results), failed[0])
            await self.ctx.app.crash(failed[0])
            return
        for event, error in letters:
            self.ctx.count_letter(event.message.topic, error)
        for event in events:
            event.ack()


def register(ctx: WorkerContext, *, crowd_path: Path, worker_name: str) -> None:
    settings = ctx.settings
    app = ctx.app
    topics = settings.topics
    clicks = app.topic(topics.clicks, key_type=bytes, value_type=bytes)
    control = app.topic(topics.user_control, key_type=bytes, value_type=bytes)
    table = app.Table(STATE_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=topics.partitions,
                      extra_topic_configs=state_changelog_configs(settings))
    stage = ctx.recommend_stage = RecommendStage(ctx, UserStates(table))
    crowd = ctx.crowd = CrowdShare(ctx, crowd_path, worker_name=worker_name)
    app.recstream_before_revoke = stage.drain
    app.recstream_unanswered = stage.unanswered
    if settings.kafka.exactly_once:
        # faust's consumer group is its app id; host and worker name are stable across restarts
        stage.transactions = BatchTransactions(
            settings.kafka, transactional_id=f"{app.conf.id}-recommend-{socket.gethostname()}-{worker_name}",
            group_id=app.conf.id)
        app.recstream_transactional_topics = frozenset({topics.clicks})

    @app.task
    async def crowd_follow() -> None:
        await crowd.follow()

    @app.timer(settings.recommend.sequence_poll_s)
    async def sequence_follow() -> None:
        await stage.watch_sequence_model()

    @app.agent(clicks, name="recommend")
    async def recommend(stream: Any) -> None:
        await stage.run(stream)

    @app.agent(control, name="user-control")
    async def user_control(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                command = decode_control(message.value, limits=ctx.limits)
                check_key(message.key, command.user_id, "user_id", required=True)
            except Exception as exc:  # noqa: BLE001 - a bad record is a dead letter, never a crash
                await ctx.reject(message, exc)
                continue
            if command.op == "forget":
                # The record's own time (Kafka's), not the worker's: the same on a replay.
                at_s = message.timestamp if message.timestamp is not None else time.time()
                await stage.forget(message.key, message.partition, command.user_id, at_s)
                ctx.metrics.forgotten.inc()
                log.debug("forgot a user (partition %d)", message.partition)  # never the id: it is personal data
