"""The load side of the benchmarks: catalogue, click (or new item) sender and bare relay.

Each piece runs in its own process (``multiprocessing`` with the *spawn* start method), so
that the sender's schedule and the subscriber's receive times are not delayed by each
other's Python work. All processes stamp times with ``time.time()``: on one machine it is
the same clock in every process, so ``arrival - send`` is a latency.

- :func:`synthetic_vectors`: clustered unit vectors (a Gaussian mixture on the sphere),
  a stand-in for encoder output; the encoder is not under test.
- :func:`click_sender_main`: a long-lived process that, per :class:`SendPlan`, sends clicks
  at a fixed rate with absolute scheduling (click ``i`` is due at ``t0 + i / rate``; a click
  sent more than :data:`LATE_S` after its due time is counted as late, never hidden) and
  returns, per click, the ``(partition, offset)`` the broker gave it and its send time.
  The same process sends new item records for ``bench freshness`` (``kind="items"``).
- :func:`relay_main`: consume -> produce, nothing else: the floor any consume-process-
  produce pipeline on this broker and client pays.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

#: Fixed seeds (STYLE.md 13): the same catalogue and click sequence on every run.
ITEM_SEED = 20240501
CLICK_SEED = 20240502

#: Catalogue shape: 384 is all-MiniLM-L6-v2's dimension, the default encoder.
DEFAULT_DIM = 384
DEFAULT_CLUSTERS = 200
#: Per-dimension noise around a cluster centre; at 384-d this gives a member-to-centre
#: cosine of about 0.6, so clusters overlap the way topical text embeddings do.
CLUSTER_NOISE = 0.065

#: A click sent later than this after its due time counts as late. asyncio sleeps with a
#: 1 ms resolution (epoll), so up to ~1 ms late is the scheduler, beyond 2 ms a backlog.
LATE_S = 0.002

#: Users and items are drawn Zipf-like (p(rank k) ~ 1 / k^s): a few heavy users and hits.
USER_ZIPF_S = 0.9
ITEM_ZIPF_S = 0.8


def item_key(k: int) -> str:
    """The benchmark's item id for catalogue row ``k``."""
    return f"bi{k}"


def user_key(k: int) -> str:
    return f"bu{k}"


def synthetic_vectors(n: int, *, dim: int = DEFAULT_DIM, clusters: int = DEFAULT_CLUSTERS,
                      seed: int = ITEM_SEED) -> np.ndarray:
    """``n`` unit vectors (float32 [n, dim]) drawn around ``clusters`` random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    vectors = centres[labels] + CLUSTER_NOISE * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def zipf_draw(rng: np.random.Generator, population: int, size: int, s: float) -> np.ndarray:
    """``size`` draws from ``range(population)`` with p(rank k) ~ 1/k^s over a shuffled ranking."""
    weights = 1.0 / np.arange(1, population + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(size), side="right")
    return rng.permutation(population)[np.minimum(ranks, population - 1)]


# --------------------------------------------------------------------------- click sender


@dataclass(frozen=True)
class SendPlan:
    """What the sender does for one phase: ``round(rate * seconds)`` records (at least one):
    clicks on the catalogue, or (``kind="items"``) new item records for the encoder."""

    topic: str
    rate: float
    seconds: float
    items: int
    users: int
    seed: int
    start_delay_s: float = 0.2
    kind: Literal["clicks", "items"] = "clicks"

    @property
    def count(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass
class SendResult:
    """Per click, in send order. ``partition == -1`` marks a send the broker did not accept."""

    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    sent_s: np.ndarray  # float64, time.time() just before the send
    due_s: np.ndarray  # float64, the absolute schedule
    errors: list[str]

    @property
    def late(self) -> int:
        return int(np.count_nonzero(self.sent_s - self.due_s > LATE_S))

    @property
    def failed(self) -> int:
        return int(np.count_nonzero(self.partitions < 0))


class _Click(msgspec.Struct):
    user_id: str
    item_id: str
    ts: float


class _Item(msgspec.Struct):
    item_id: str
    title: str
    text: str
    created_at: float


def new_item_key(seed: int, k: int) -> str:
    """The id of the ``k``-th new item a ``kind="items"`` plan with ``seed`` sends."""
    return f"new-{seed}-{k}"


#: Words for new items' texts: ~25 tokens each, the length of the encoder figures in docs/architecture.md.
_WORDS = ("river city night story music garden winter space ocean history family robot desert "
          "kitchen island mystery comedy travel science forest mountain train letter war dream "
          "friend summer detective painter village storm engine library").split()


def records_of(plan: SendPlan) -> tuple[list[bytes], Callable[[int, float], bytes]]:
    """The keys of ``plan``'s records, and how to make record ``i``'s value at send time."""
    encode = msgspec.json.Encoder().encode
    rng = np.random.default_rng(plan.seed)
    n = plan.count
    if plan.kind == "items":
        ids = [new_item_key(plan.seed, k) for k in range(n)]
        texts = [" ".join(rng.choice(_WORDS, size=18)) for _ in range(n)]
        return ([i.encode() for i in ids],
                lambda i, sent: encode(_Item(item_id=ids[i], title=f"new item {i}", text=texts[i], created_at=sent)))
    user_ids = [user_key(int(u)) for u in zipf_draw(rng, plan.users, n, USER_ZIPF_S)]
    item_ids = [item_key(int(i)) for i in zipf_draw(rng, plan.items, n, ITEM_ZIPF_S)]
    return ([u.encode() for u in user_ids],
            lambda i, sent: encode(_Click(user_id=user_ids[i], item_id=item_ids[i], ts=sent)))


async def _send_schedule(producer: Any, plan: SendPlan) -> SendResult:
    n = plan.count
    keys, make_value = records_of(plan)
    partitions = np.full(n, -1, dtype=np.int32)
    offsets = np.full(n, -1, dtype=np.int64)
    sent_s = np.zeros(n, dtype=np.float64)
    errors: list[str] = []
    interval_s = 1.0 / plan.rate
    await producer.partitions_for(plan.topic)  # metadata before the clock starts
    t0 = time.time() + plan.start_delay_s
    due_s = t0 + np.arange(n, dtype=np.float64) * interval_s

    def on_done(i: int, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            errors.append(repr(future.exception()) if not future.cancelled() else "cancelled")
            return
        meta = future.result()
        partitions[i] = meta.partition
        offsets[i] = meta.offset

    pending = []
    i = 0
    while i < n:
        now = time.time()
        if now < due_s[i]:
            await asyncio.sleep(due_s[i] - now)
            continue
        # Everything due by now goes out now; lateness is recorded per click, not hidden.
        while i < n and due_s[i] <= now:
            sent = sent_s[i] = time.time()
            future = await producer.send(plan.topic, make_value(i, sent), key=keys[i])
            future.add_done_callback(functools.partial(on_done, i))
            pending.append(future)
            i += 1
    await producer.flush()
    await asyncio.gather(*pending, return_exceptions=True)
    return SendResult(partitions=partitions, offsets=offsets, sent_s=sent_s, due_s=due_s, errors=errors[:5])


async def _sender_loop(conn: Any, producer_kwargs: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_kwargs)
    await producer.start()
    try:
        conn.send("ready")
        while True:
            plan = await asyncio.to_thread(conn.recv)
            if plan is None:
                return
            conn.send(await _send_schedule(producer, plan))
    finally:
        await producer.stop()


def click_sender_main(conn: Any, producer_kwargs: dict[str, Any]) -> None:
    """Process entry point: answer each :class:`SendPlan` on ``conn`` with a :class:`SendResult`."""
    asyncio.run(_sender_loop(conn, producer_kwargs))


# --------------------------------------------------------------------------- relay

#: The relay tags each forwarded message with its source position, so the subscriber can
#: match it to the send (the recommendation's ``trigger`` does this for the pipeline).
RELAY_SOURCE_HEADER = "src"
#: The relay's batch cap, as the recommend stage's default ``recommend.max_batch``.
MAX_BATCH = 256


async def _relay(consumer_kwargs: dict[str, Any], producer_kwargs: dict[str, Any], source: str,
                 sink: str, partitions: int, ready: Any) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    consumer = AIOKafkaConsumer(**consumer_kwargs, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest")
    producer = AIOKafkaProducer(**producer_kwargs)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        await producer.partitions_for(sink)
        ready.set()
        # Batched as the worker is: whatever is waiting (never a wait when idle), one produce
        # for all of it, acknowledgements not awaited before the next batch.
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_BATCH)
            for messages in batches.values():
                for message in messages:
                    await producer.send(sink, message.value, key=message.key,
                                        headers=[(RELAY_SOURCE_HEADER, b"%d:%d" % (message.partition, message.offset))])
    finally:
        await producer.stop()
        await consumer.stop()


def relay_main(consumer_kwargs: dict[str, Any], producer_kwargs: dict[str, Any], source: str, sink: str,
               partitions: int, ready: Any) -> None:
    """Process entry point: forward every new message of ``source`` (``partitions`` of them)
    to ``sink`` until killed."""
    asyncio.run(_relay(consumer_kwargs, producer_kwargs, source, sink, partitions, ready))
