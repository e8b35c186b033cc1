"""``recstream bench latency``: click -> recommendation latency beside a bare relay.

What is measured. A sender process stamps each click with ``time.time()`` just before it
hands it to its Kafka producer and learns the click's ``(partition, offset)`` from the
broker's reply. A subscriber (this process) stamps each output message when its fetch
returns and finds the click it answers: a recommendation names it in ``trigger``, a relayed
message in a header, a dead letter in ``source``. Latency = arrival - send, on one clock.

The floor. A *bare relay* (consume -> produce, no work; the same aiokafka consumer and
producer settings as the worker, and batched as the worker is: whatever is waiting, one
produce for the batch) is timed in the same run, by the same sender and
subscriber, at the same rate and duration, before the worker starts (never concurrently:
there are only a few cores). ``ratio_p99`` = pipeline p99 / relay p99 says what the
worker adds over the unavoidable broker round trips.

Order of a run: broker -> topics (fresh names) -> N synthetic item vectors on the
item-vectors topic -> relay (burn-in, timed) -> one worker subprocess (``recstream worker
--stages index,recommend``) -> warm-up clicks until it answers -> burn-in -> timed run ->
optionally 60 s of silence and one click (``idle``) -> optionally a saturation search.

Modes: ``rate`` (relay + pipeline at ``rate``), ``idle`` (burn-in, silence, one click),
``saturation`` (highest rate with p99 under :data:`SATURATION_P99_MS`, for the relay first
and then the pipeline: the relay's figure is the throughput floor, what the broker and a bare
Python client hold on this machine), ``all``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from streams.bench.load import (
    CLICK_SEED,
    RELAY_SOURCE_HEADER,
    SendPlan,
    SendResult,
    click_sender_main,
    item_key,
    relay_main,
    synthetic_vectors,
)
from streams.bench.stats import bucket_quantiles_ms, histogram_means_ms, percentiles_ms
from streams.errors import RecstreamError
from streams.metrics import fetch, histogram_buckets, histogram_sum_count, sample, scrape
from streams.settings import Settings, TopicSettings

log = logging.getLogger(__name__)

Mode = Literal["rate", "saturation", "idle", "all"]
BrokerChoice = Literal["auto", "kafka", "tansu"]

#: The worker's own click time (decode -> recommendation produced), read from its metrics.
CLICK_HISTOGRAM = "recstream_click_seconds"
#: The worker's own account of where a click's time goes (streams/metrics.py): how long a click
#: waited before its batch was served, and each step of a batch.
WORKER_STEPS = {
    "click_wait": ("recstream_click_wait_seconds", ""),
    "batch_read": ("recstream_click_step_seconds", 'step="read"'),
    "batch_rank": ("recstream_click_step_seconds", 'step="rank"'),
    "batch_send": ("recstream_click_step_seconds", 'step="send"'),
}
BATCH_HISTOGRAM = "recstream_click_batch_size"
#: docs/architecture.md "Targets": sustained clicks/s per worker is defined at p99 <= 50 ms.
SATURATION_P99_MS = 50.0
#: A saturation step is void when the sender's p99 lag behind its schedule exceeds this:
#: it could not hold the rate (on 2 cores it competes with the worker), so the step did not
#: measure that rate. A few ms of lag is the OS scheduler, not a backlog.
SATURATION_MAX_SEND_LAG_MS = 10.0
#: Seconds the worker must stay silent before the idle probe (brief for issue 5).
IDLE_S = 60.0
#: Users in the synthetic population (Zipf-like activity, see streams.bench.load).
DEFAULT_USERS = 10_000
#: Above this many items the worker builds HNSW before serving (~60 s at 100k, 2 cores).
READY_TIMEOUT_S = 900.0


class BenchError(RecstreamError):
    """The benchmark could not run (worker died, broker unreachable, nothing answered)."""


# --------------------------------------------------------------------------- results


@dataclass
class Phase:
    """One timed stretch: what was sent, what came back, and what the machine did meanwhile."""

    name: str
    rate: float
    seconds: float
    sent: int
    latencies_ms: np.ndarray
    missing: int
    dead_letters: int
    late_sends: int
    send_failures: int
    throughput_clicks_s: float
    to_generated_ms: np.ndarray | None = None  # send -> worker produced (pipeline only)
    from_generated_ms: np.ndarray | None = None  # worker produced -> subscriber
    cpu_util: dict[str, float] = field(default_factory=dict)
    worker_click_ms: dict[str, float] | None = None
    worker_steps: dict[str, float | None] | None = None  # see worker_steps()
    send_lag_ms_max: float = 0.0
    send_lag_ms_p99: float = 0.0
    first_sent_s: float = 0.0  # time.time() of the first send
    cpu_ms_per_click: float | None = None  # the worker's (or relay's) CPU, send start -> last answer
    cpu_ms_per_click_by_thread: dict[str, float] = field(default_factory=dict)  # the worker's, by thread role
    sent_at_s: np.ndarray | None = None  # time.time() each answered click was sent, as latencies_ms


    def summary(self) -> dict[str, Any]:
        return percentiles_ms(self.latencies_ms)


# --------------------------------------------------------------------------- helpers


class _RecHead(msgspec.Struct):
    """The two fields of a recommendation the subscriber needs (decoding the rest is waste)."""

    class _Trigger(msgspec.Struct):
        partition: int
        offset: int

    trigger: _Trigger
    generated_at: float


class _DeadHead(msgspec.Struct):
    class _Source(msgspec.Struct):
        topic: str
        partition: int
        offset: int

    source: _Source


_decode_rec = msgspec.json.Decoder(_RecHead).decode
_decode_dead = msgspec.json.Decoder(_DeadHead).decode
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds in a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after the name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))
    except OSError:
        return None


def thread_cpu_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds so far of a process's threads, by role (Linux /proc; {} elsewhere): the
    main thread (``main``: the event loop that serves clicks), and the others by name with
    their number dropped (``edge-search``: Qdrant Edge's pool; ``python``: threads Python
    started without a native name, as faust's consumer thread). Why: one worker is one
    process whose work shares the GIL; which thread spends its CPU says what to make cheaper."""
    if pid is None:
        return {}
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            comm = (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        role = "main" if task.name == str(pid) else comm.rstrip("0123456789").rstrip("-_") or comm
        out[role] = out.get(role, 0.0) + seconds
    return out


def cpu_ms_per_click_by_thread(before: dict[str, float], after: dict[str, float], clicks: int) -> dict[str, float]:
    """:func:`thread_cpu_seconds` readings turned into CPU ms per click, by role (roles that
    spent nothing left out)."""
    if not clicks:
        return {}
    spent = {role: (after[role] - before.get(role, 0.0)) * 1000.0 / clicks for role in after}
    return {role: round(ms, 3) for role, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms > 0}


def cpu_times(pids: dict[str, int | None]) -> dict[str, float | None]:
    """CPU seconds so far of each named process (None: not running)."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def _cpu_ms_per_click(before: dict[str, float | None], after: dict[str, float | None], name: str,
                      clicks: int) -> float | None:
    if not clicks or before.get(name) is None or after.get(name) is None:
        return None
    return round((after[name] - before[name]) * 1000.0 / clicks, 3)


def cpu_util(before: dict[str, float | None], after: dict[str, float | None], wall_s: float) -> dict[str, float]:
    """Cores each process used between two :func:`cpu_times` readings ``wall_s`` apart."""
    return {name: round((after[name] - before[name]) / wall_s, 2) for name in before
            if before[name] is not None and after.get(name) is not None}


class Display:
    """Progress on stderr with rich (or log lines when ``enabled`` is false)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._status: Any = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True)

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        if not self.enabled:
            log.info("%s", text)
            yield
            return
        with self.console.status(text, refresh_per_second=4) as status:
            self._status = status
            try:
                yield
            finally:
                self._status = None

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)

    def done(self, text: str) -> None:
        if self.enabled:
            self.console.log(text)
        else:
            log.info("%s", text)


# --------------------------------------------------------------------------- the run


class BenchRun:
    """Everything one benchmark run owns; :meth:`close` releases it in reverse order."""

    def __init__(self, settings: Settings, *, partitions: int, users: int, items: int, display: Display,
                 work_dir: Path) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.items = items
        self.users = users
        self.display = display
        self.work_dir = work_dir
        suffix = uuid.uuid4().hex[:8]
        self.suffix = suffix
        self.topics = TopicSettings.named(f"bench-{suffix}-{{name}}", partitions=partitions,
                                          replication_factor=settings.topics.replication_factor)
        self.relay_in = f"bench-{suffix}-relay-in"
        self.relay_out = f"bench-{suffix}-relay-out"
        self.app_id = f"recstream-bench-{suffix}"
        self._mp = multiprocessing.get_context("spawn")
        self.sender: Any = None
        self._sender_conn: Any = None
        self.relay: Any = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log = work_dir / "worker.log"
        self.metrics_port: int | None = None
        self.broker = ""  # what it is, for the report
        self.broker_pid: int | None = None
        self._consumer: Any = None
        self._subscriber: asyncio.Task[None] | None = None
        self.received: list[tuple[float, Any]] = []
        self.last_arrival_mono = 0.0
        self._seed = CLICK_SEED

    # ----------------------------------------------------------------- setup

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        from streams.topics import ensure_topics, wait_for_leaders

        await ensure_topics(self.kafka, self.topics)
        admin = AIOKafkaAdminClient(**self.kafka.client_kwargs())
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(name=name, num_partitions=self.topics.partitions,
                         replication_factor=self.topics.replication_factor)
                for name in (self.relay_in, self.relay_out)
            ])
        finally:
            await admin.close()
        await wait_for_leaders(self.kafka, [*self.topics.all_names(), self.relay_in, self.relay_out],
                               self.topics.partitions)

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """The synthetic catalogue's vectors (drawn once: the index and a sequence model share them)."""
        return synthetic_vectors(self.items)

    async def load_items(self) -> None:
        """Produce the synthetic catalogue to item-vectors."""
        from streams.records import ItemVector, encode_item_vector

        vectors = self.vectors
        records = ((item_key(k).encode(), encode_item_vector(ItemVector.from_array(
                       item_id=item_key(k), model="synthetic@bench", vector=vectors[k], title=f"synthetic item {k}")))
                   for k in range(self.items))
        await self.produce_bulk(self.topics.item_vectors, records, total=self.items, what="item vectors")

    def publish_sequence_model(self) -> str:
        """Publish an untrained sequence model over the catalogue where the worker looks for
        one (its data dir's default); return its version."""
        from export.sequence_export import export_untrained

        vectors = self.vectors
        model = export_untrained({item_key(k): vectors[k] for k in range(self.items)},
                                 self.work_dir / "data" / "models" / "sequence")
        return model.version

    async def produce_bulk(self, topic: str, records: Iterable[tuple[bytes, bytes]], *, total: int,
                           what: str) -> int:
        """Produce ``(key, value)`` records, batched for throughput, not latency; return the
        bytes of the values."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**{**self.kafka.producer_kwargs(), "linger_ms": 20,
                                       "max_batch_size": 1024 * 1024, "max_request_size": 8 * 1024 * 1024})
        await producer.start()
        written = 0
        try:
            pending = []
            for done, (key, value) in enumerate(records, 1):
                written += len(value)
                pending.append(await producer.send(topic, value, key=key))
                if len(pending) >= 2_000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    self.display.update(f"writing {what}: {done:,}/{total:,} ({written / 1e6:,.0f} MB)")
            await producer.flush()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return written

    def start_sender(self) -> None:
        parent, child = self._mp.Pipe()
        self.sender = self._mp.Process(target=click_sender_main, args=(child, self.kafka.producer_kwargs()),
                                       name="bench-click-sender", daemon=True)
        self.sender.start()
        self._sender_conn = parent
        if not parent.poll(60) or parent.recv() != "ready":
            raise BenchError("the click sender process did not start within 60 s")

    async def start_subscriber(self, topics: tuple[str, ...] | None = None) -> None:
        """Record every new message (arrival time, message) on ``topics`` (default: the
        recommendations, dead letters and the relay's output) in :attr:`received`."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**self.kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest")
        await consumer.start()
        topics = topics or (self.topics.recommendations, self.topics.dead_letters, self.relay_out)
        tps = [TopicPartition(topic, p)  # create_topics made every bench topic with this many
               for topic in topics for p in range(self.topics.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self._consumer = consumer
        self._subscriber = asyncio.create_task(self._subscribe())

    async def _subscribe(self) -> None:
        consumer, received = self._consumer, self.received
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            now = time.time()
            for messages in batches.values():
                received.extend((now, m) for m in messages)
            if batches:
                self.last_arrival_mono = time.monotonic()

    async def quiesce(self, *, quiet_s: float = 2.0, cap_s: float = 300.0) -> float:
        """Wait until no output has arrived for ``quiet_s`` (a backlog drained); return the wait."""
        started = time.monotonic()
        while time.monotonic() - self.last_arrival_mono < quiet_s and time.monotonic() - started < cap_s:
            self.check_worker()
            self.display.update(f"waiting for the pipeline to drain ({time.monotonic() - started:.0f} s)")
            await asyncio.sleep(0.25)
        return time.monotonic() - started

    def start_relay(self) -> None:
        ready = self._mp.Event()
        producer_kwargs = {**self.kafka.producer_kwargs(), "acks": "all"}  # as the worker (acks=-1)
        self.relay = self._mp.Process(target=relay_main, name="bench-relay", daemon=True,
                                      args=(self.kafka.consumer_kwargs(), producer_kwargs, self.relay_in,
                                            self.relay_out, self.topics.partitions, ready))
        self.relay.start()
        if not ready.wait(60):
            raise BenchError("the relay process did not start within 60 s")

    def stop_relay(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            self.relay.join(10)
            self.relay = None

    def worker_env(self) -> dict[str, str]:
        """The worker's whole configuration, as environment (inherited RECSTREAM_* dropped)."""
        from streams.brokers import free_port

        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
        kafka = self.kafka.model_dump(mode="json")
        if self.kafka.sasl_password is not None:
            kafka["sasl_password"] = self.kafka.sasl_password.get_secret_value()
        topics = self.topics.model_dump(mode="json")
        env.update({
            "RECSTREAM_DATA_DIR": str(self.work_dir / "data"),
            "RECSTREAM_APP_ID": self.app_id,
            "RECSTREAM_KAFKA": msgspec.json.encode(kafka).decode(),
            "RECSTREAM_STATE": self.settings.state.model_dump_json(),
            "RECSTREAM_RECOMMEND": self.settings.recommend.model_dump_json(),
            "RECSTREAM_LIMITS": self.settings.limits.model_dump_json(),
            # the bench's whole index section (kind, quantization, optimize threshold, URL), in the
            # worker's own data dir
            "RECSTREAM_INDEX": self.settings.index.model_dump_json(exclude={"path", "api_key"}),
            # the encode stage's (when it runs), device and shape buckets included: a GPU worker
            # is benched with RECSTREAM_MODEL__DEVICE=cuda
            "RECSTREAM_MODEL": self.settings.model.model_copy(update={"dir": self.settings.model_dir}).model_dump_json(),
            **{f"RECSTREAM_TOPICS__{name.upper()}": str(value) for name, value in topics.items()},
        })
        return env

    def start_worker(self, stages: str = "index,recommend") -> None:
        env = self.worker_env()
        argv = [sys.executable, "-m", "streams.cli", "worker", "--stages", stages,
                "--name", "bench", "--metrics-port", str(self.metrics_port)]
        log.info("starting worker: %s (log %s)", " ".join(argv), self.worker_log)
        with open(self.worker_log, "ab") as out:
            self.worker = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def _worker_tail(self) -> str:
        try:
            return self.worker_log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            raise BenchError(f"the worker exited with code {self.worker.returncode}:\n{self._worker_tail()}")

    async def wait_serving(self, timeout_s: float) -> float:
        """Send a warm-up click every second until one is answered; return seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.check_worker()
            indexed = int(sample(await asyncio.to_thread(scrape, self.metrics_port), "recstream_items_indexed_total"))
            self.display.update(f"waiting for the worker to serve ({indexed:,}/{self.items:,} items indexed, "
                                f"{time.monotonic() - started:.0f} s)")
            phase = await self.measure("warm-up", self.topics.clicks, rate=1.0, seconds=1.0,
                                       drain_idle_s=1.0, drain_cap_s=1.0, quiet=True)
            if phase.latencies_ms.size or phase.dead_letters:
                if phase.dead_letters and not phase.latencies_ms.size:
                    raise BenchError("the worker answered a warm-up click with a dead letter; see "
                                     f"{self.worker_log}:\n{self._worker_tail()}")
                return time.monotonic() - started
        raise BenchError(f"the worker did not answer a click within {timeout_s:.0f} s:\n{self._worker_tail()}")

    async def wait_for_model(self, kind: str, version: str, timeout_s: float) -> None:
        """Return once the worker's ``GET /models`` names ``version`` for ``kind``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.check_worker()
            served = (await asyncio.to_thread(models_of, self.metrics_port)).get(kind)
            if served == version:
                return
            self.display.update(f"waiting for the worker to serve {kind} model {version} (now: {served})")
            await asyncio.sleep(0.5)
        raise BenchError(f"the worker did not serve {kind} model {version} within {timeout_s:.0f} s")

    # ----------------------------------------------------------------- one timed stretch

    async def send(self, plan: SendPlan) -> SendResult:
        self._sender_conn.send(plan)
        while not await asyncio.to_thread(self._sender_conn.poll, 1.0):
            if not self.sender.is_alive():
                raise BenchError(f"the click sender died (exit code {self.sender.exitcode})")
        return self._sender_conn.recv()

    def pids(self) -> dict[str, int | None]:
        return {
            "worker": self.worker.pid if self.worker is not None and self.worker.poll() is None else None,
            "relay": self.relay.pid if self.relay is not None else None,
            "broker": self.broker_pid,
            "sender": self.sender.pid if self.sender is not None else None,
            "subscriber": os.getpid(),
        }

    async def measure(self, name: str, topic: str, *, rate: float, seconds: float, drain_idle_s: float = 5.0,
                      drain_cap_s: float = 120.0, quiet: bool = False) -> Phase:
        """Send at ``rate`` for ``seconds`` to ``topic``; match outputs until all are in or it stalls."""
        pipeline = topic == self.topics.clicks
        self._seed += 1
        plan = SendPlan(topic=topic, rate=rate, seconds=seconds, items=self.items, users=self.users,
                        seed=self._seed)
        start = len(self.received)
        pids = self.pids()
        cpu_before = cpu_times(pids)
        threads_before = thread_cpu_seconds(pids.get("worker")) if pipeline else {}
        metrics_before = await asyncio.to_thread(scrape, self.metrics_port) if pipeline else ""
        if not quiet:
            self.display.update(f"{name}: {rate:,.0f} clicks/s for {seconds:g} s")
        result = await self.send(plan)
        wall_s = max(1e-9, float(result.sent_s[-1] - result.sent_s[0]))
        cpu_after = cpu_times(pids)
        metrics_after = await asyncio.to_thread(scrape, self.metrics_port) if pipeline else ""

        index = {(int(p), int(o)): i for i, (p, o) in enumerate(zip(result.partitions, result.offsets, strict=True))
                 if p >= 0}
        arrival = np.full(len(result.sent_s), np.nan)
        generated = np.full(len(result.sent_s), np.nan)
        dead = 0
        cursor = start
        last_progress = time.monotonic()
        deadline = last_progress + drain_cap_s
        answered = 0
        while True:
            new = self.received[cursor:]
            cursor += len(new)
            for arrived_s, message in new:
                key, gen = self._source_of(message, pipeline)
                i = index.get(key) if key is not None else None
                if i is None or not np.isnan(arrival[i]):
                    continue
                if gen is None and pipeline:  # a dead letter answers the click too
                    dead += 1
                arrival[i] = arrived_s
                generated[i] = np.nan if gen is None else gen
                answered += 1
            if new:
                last_progress = time.monotonic()
            now = time.monotonic()
            if answered >= len(index) or now - last_progress > drain_idle_s or now > deadline:
                break
            if not quiet:
                self.display.update(f"{name}: draining, {answered:,}/{len(index):,} answered")
            await asyncio.sleep(0.05)

        cpu_drained = cpu_times(pids)  # every answer is in: the CPU that serving these clicks took
        threads_drained = thread_cpu_seconds(pids.get("worker")) if pipeline else {}
        ok = ~np.isnan(arrival) & ~np.isnan(generated) if pipeline else ~np.isnan(arrival)
        latencies_ms = (arrival[ok] - result.sent_s[ok]) * 1000.0
        span_s = float(np.nanmax(arrival) - result.sent_s[0]) if answered else 0.0
        phase = Phase(
            name=name, rate=rate, seconds=seconds, sent=len(result.sent_s), latencies_ms=latencies_ms,
            missing=len(result.sent_s) - answered, dead_letters=dead, late_sends=result.late,
            send_failures=result.failed, throughput_clicks_s=round(answered / span_s, 1) if span_s else 0.0,
            send_lag_ms_max=round(float((result.sent_s - result.due_s).max()) * 1000.0, 2),
            send_lag_ms_p99=round(float(np.percentile(result.sent_s - result.due_s, 99)) * 1000.0, 2),
            first_sent_s=float(result.sent_s[0]),
            cpu_util=cpu_util(cpu_before, cpu_after, wall_s),
            cpu_ms_per_click=_cpu_ms_per_click(cpu_before, cpu_drained, "worker" if pipeline else "relay", answered),
            sent_at_s=result.sent_s[ok],
            cpu_ms_per_click_by_thread=cpu_ms_per_click_by_thread(threads_before, threads_drained, answered),
        )
        if pipeline:
            phase.to_generated_ms = (generated[ok] - result.sent_s[ok]) * 1000.0
            phase.from_generated_ms = (arrival[ok] - generated[ok]) * 1000.0
            phase.worker_click_ms = bucket_quantiles_ms(histogram_buckets(metrics_before, CLICK_HISTOGRAM),
                                                        histogram_buckets(metrics_after, CLICK_HISTOGRAM))
            phase.worker_steps = worker_steps(metrics_before, metrics_after)
        if result.errors:
            log.warning("%s: %d sends failed, e.g. %s", name, result.failed, result.errors[0])
        return phase

    def _source_of(self, message: Any, pipeline: bool) -> tuple[tuple[int, int] | None, float | None]:
        """The (partition, offset) of the click a message answers, and when the worker made it."""
        topic = message.topic
        try:
            if pipeline and topic == self.topics.recommendations:
                head = _decode_rec(message.value)
                return (head.trigger.partition, head.trigger.offset), head.generated_at
            if pipeline and topic == self.topics.dead_letters:
                source = _decode_dead(message.value).source
                if source.topic == self.topics.clicks:
                    return (source.partition, source.offset), None
            if not pipeline and topic == self.relay_out:
                for key, value in message.headers:
                    if key == RELAY_SOURCE_HEADER:
                        partition, offset = value.split(b":")
                        return (int(partition), int(offset)), None
        except (msgspec.DecodeError, ValueError):
            log.warning("unreadable message on %s[%d]@%d", topic, message.partition, message.offset)
        return None, None

    # ----------------------------------------------------------------- teardown

    async def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._subscriber
        if self._consumer is not None:
            await self._consumer.stop()
        self.stop_relay()
        if self.sender is not None:
            with contextlib.suppress(OSError):
                self._sender_conn.send(None)
            self.sender.join(10)
            if self.sender.is_alive():
                self.sender.terminate()
        self.stop_worker(30.0)

    def kill_worker(self) -> None:
        """SIGKILL the worker: a crash, no clean shutdown (no leaving the group, no snapshots)."""
        worker, self.worker = self.worker, None
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()

    def stop_worker(self, timeout_s: float) -> bool:
        """SIGTERM the worker (a clean shutdown) and wait; kill it after ``timeout_s``.
        Returns whether it stopped by itself (or was not running)."""
        worker, self.worker = self.worker, None
        if worker is None or worker.poll() is not None:
            return True
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop within %.0f s; killing it", worker.pid, timeout_s)
            worker.kill()
            worker.wait()
            return False


# --------------------------------------------------------------------------- report


def _phase_report(phase: Phase) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sent": phase.sent, "latency_ms": phase.summary(), "missing": phase.missing,
        "dead_letters": phase.dead_letters, "late_sends": phase.late_sends,
        "send_lag_ms_p99": phase.send_lag_ms_p99, "send_lag_ms_max": phase.send_lag_ms_max, "throughput_clicks_s": phase.throughput_clicks_s,
        "cpu_util": phase.cpu_util, "cpu_ms_per_click": phase.cpu_ms_per_click,
    }
    if phase.cpu_ms_per_click_by_thread:
        out["worker_cpu_ms_per_click_by_thread"] = phase.cpu_ms_per_click_by_thread
    if phase.to_generated_ms is not None and phase.to_generated_ms.size:
        out["send_to_generated_ms"] = percentiles_ms(phase.to_generated_ms)
        out["generated_to_arrival_ms"] = percentiles_ms(phase.from_generated_ms)
    if phase.worker_click_ms is not None:
        out["worker_click_ms_buckets"] = phase.worker_click_ms
    if phase.worker_steps is not None:
        out["worker_steps_ms"] = phase.worker_steps
    return out


def worker_steps(before: str, after: str) -> dict[str, float | None] | None:
    """Where a click's time went inside the worker between two scrapes of its metrics: the mean
    ms a click waited for its batch to be served (``click_wait``: from its Kafka timestamp:
    the broker, the fetch and the queue), the mean ms of each step of a batch (``batch_read``:
    decode, load states, apply; ``batch_rank``; ``batch_send``: produce, learn, write back), and
    the mean clicks a batch (``clicks_per_batch``). A lone click's latency is its wait plus
    its batch's steps plus the way back to the reader; under load, the wait is where queueing
    shows. None when the worker served nothing in between."""
    means = histogram_means_ms(before, after, WORKER_STEPS)
    if means["click_wait"] is None:
        return None
    (clicks1, batches1), (clicks0, batches0) = (histogram_sum_count(text, BATCH_HISTOGRAM) for text in (after, before))
    clicks, batches = clicks1 - clicks0, batches1 - batches0
    return {**means, "clicks_per_batch": round(clicks / batches, 2) if batches > 0 else None}


def plot_latencies(path: Path, phases: dict[str, Phase], *, title: str) -> None:
    """Write a PNG of the latency CDFs (log x) of the given phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, phase in phases.items():
        values = np.sort(phase.latencies_ms)
        if values.size == 0:
            continue
        cdf = np.arange(1, values.size + 1) / values.size
        p99 = float(np.percentile(values, 99))
        line, = ax.plot(values, cdf, label=f"{label}: p50 {np.percentile(values, 50):.2f} ms, p99 {p99:.2f} ms")
        ax.axvline(p99, color=line.get_color(), linestyle=":", linewidth=1)
    save_cdf_plot(fig, ax, path, xlabel="click -> output latency (ms, log scale)", ylabel="fraction of clicks",
                  title=title)


def save_cdf_plot(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str) -> None:
    """The benches' CDF look (log x, grid, legend bottom right), saved to ``path``."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.001)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry point


def run_latency_bench(
    settings: Settings,
    *,
    rate: float = 1000.0,
    seconds: float = 30.0,
    items: int = 100_000,
    broker: BrokerChoice = "auto",
    bootstrap_servers: str | None = None,
    mode: Mode = "rate",
    plot_path: Path | None = None,
    progress: bool = True,
    users: int = DEFAULT_USERS,
    partitions: int | None = None,
    burn_in_s: float = 5.0,
    idle_s: float = IDLE_S,
    saturation_step_s: float = 10.0,
    saturation_budget_s: float = 180.0,
    saturation_start_rate: float = 500.0,
    ready_timeout_s: float = READY_TIMEOUT_S,
    keep_dir: Path | None = None,
    sequence: bool = False,
) -> dict[str, Any]:
    """Measure click -> recommendation latency through a real broker beside a bare relay.

    Args:
        settings: Kafka client settings, index kind, state store and recommend settings are
            taken from here and given to the worker; topics, app id and data dir are fresh.
        rate: Clicks per second in the timed runs (``rate`` and ``all`` modes).
        seconds: Length of each timed run.
        items: Synthetic catalogue size (clustered unit vectors, 384-d).
        broker: Local broker to start: Apache Kafka (``kafka``), Tansu, or ``auto`` (Kafka
            when Java is there). Ignored when ``bootstrap_servers`` is given.
        bootstrap_servers: Use this running broker instead of starting one.
        mode: ``rate`` (relay + pipeline), ``idle``, ``saturation`` or ``all``.
        plot_path: Write a PNG of the latency CDFs here (``rate``/``all``).
        progress: Show progress on stderr with rich.
        users: Size of the synthetic user population.
        partitions: Partitions of the bench topics (default ``settings.topics.partitions``).
        burn_in_s: Untimed run at ``rate`` before each timed one.
        idle_s: Silence before the idle probe.
        saturation_step_s, saturation_budget_s, saturation_start_rate: The saturation
            search: steps of this length, doubling from the start rate, then bisection,
            until the budget (seconds, draining included) is spent.
        ready_timeout_s: Longest wait for the worker to answer its first click.
        keep_dir: Put the worker's data dir and log here and keep them (default: a temp
            dir, removed afterwards).
        sequence: Publish a sequence model over the catalogue (untrained: it costs what a
            trained one of that size costs) where the worker looks for one, and wait until it
            serves with it (needs the export extra: torch).

    Returns:
        The report: ``rate, items, seconds, broker, mode`` and, by mode, ``pipeline_ms``,
        ``relay_ms`` (p50/p90/p99/p999/max), ``ratio_p99``, ``throughput``, ``missing``,
        ``late_sends``, ``idle_click_ms``, ``saturation_clicks_s`` + ``steps`` (pipeline),
        ``relay_saturation_clicks_s`` + ``relay_steps``, ``saturation_ratio``, and
        ``diagnostics`` (per-phase CPU use, where the pipeline's time goes); ``sequence``:
        the served sequence model's version, or None.

    Raises:
        BenchError: the worker died or never served, or a helper process did not start.
        BrokerError: the local broker could not start.
    """
    if rate <= 0 or seconds <= 0 or items <= 0:
        raise BenchError("rate, seconds and items must be positive")
    if mode not in ("rate", "saturation", "idle", "all"):
        raise BenchError(f"unknown mode {mode!r}: choose rate, saturation, idle or all")
    with bench_run(settings, broker=broker, bootstrap_servers=bootstrap_servers, keep_dir=keep_dir,
                   display=Display(progress), partitions=partitions, users=users, items=items) as bench:
        report = asyncio.run(_run(bench, rate=rate, seconds=seconds, mode=mode, burn_in_s=burn_in_s,
                                  idle_s=idle_s, step_s=saturation_step_s, budget_s=saturation_budget_s,
                                  start_rate=saturation_start_rate, ready_timeout_s=ready_timeout_s,
                                  plot_path=plot_path, sequence=sequence))
        return {"rate": rate, "items": items, "seconds": seconds, "broker": bench.broker, "mode": mode, **report}


@contextlib.contextmanager
def bench_run(settings: Settings, *, broker: BrokerChoice, bootstrap_servers: str | None, keep_dir: Path | None,
              display: Display, partitions: int | None, users: int, items: int) -> Iterator[BenchRun]:
    """A :class:`BenchRun` on a broker (a local one started here unless ``bootstrap_servers``
    is given) with a work dir (a temp dir removed afterwards, unless ``keep_dir``); the broker
    and the dir are released on exit."""
    work_dir = keep_dir or Path(tempfile.mkdtemp(prefix="recstream-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    local = None
    try:
        if bootstrap_servers is None:
            from streams.brokers import start_local_broker

            with display.stage(f"starting a local broker ({broker})"):
                local = start_local_broker(broker, cache_dir=settings.data_dir)
            bootstrap_servers = local.bootstrap_servers
            display.done(f"broker: {local.description} on {bootstrap_servers}")
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        bench = BenchRun(settings.model_copy(update={"kafka": kafka}),
                         partitions=partitions or settings.topics.partitions, users=users, items=items,
                         display=display, work_dir=work_dir)
        bench.broker = local.description if local is not None else f"external {bootstrap_servers}"
        bench.broker_pid = getattr(getattr(local, "_process", None), "pid", None)
        yield bench
    finally:
        if local is not None:
            local.stop()
        if keep_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


async def _run(bench: BenchRun, *, rate: float, seconds: float, mode: Mode, burn_in_s: float, idle_s: float,
               step_s: float, budget_s: float, start_rate: float, ready_timeout_s: float,
               plot_path: Path | None, sequence: bool = False) -> dict[str, Any]:
    display = bench.display
    report: dict[str, Any] = {}
    # Other processes on the machine skew every figure: say how busy it was (1-min load).
    diagnostics: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    try:
        with display.stage("creating topics"):
            await bench.create_topics()
        with display.stage(f"loading {bench.items:,} item vectors"):
            t0 = time.monotonic()
            await bench.load_items()
        display.done(f"loaded {bench.items:,} item vectors in {time.monotonic() - t0:.1f} s")
        with display.stage("starting the click sender and the subscriber"):
            await bench.start_subscriber()
            await asyncio.to_thread(bench.start_sender)

        relay = pipeline = None
        timed = mode in ("rate", "all")
        saturate = mode in ("saturation", "all")
        if timed or saturate:
            with display.stage("relay"):
                await asyncio.to_thread(bench.start_relay)
                if burn_in_s > 0:
                    await bench.measure("relay burn-in", bench.relay_in, rate=rate if timed else start_rate,
                                        seconds=burn_in_s)
                if timed:
                    relay = await bench.measure("relay", bench.relay_in, rate=rate, seconds=seconds)
                    display.done(f"relay: {_fmt(relay)}")
                if saturate:  # the throughput floor: what the broker and a bare Python client hold
                    relay_good, relay_steps = await _saturation(bench, bench.relay_in, "relay", step_s=step_s,
                                                                budget_s=budget_s, start_rate=start_rate)
                    report.update({"relay_saturation_clicks_s": relay_good, "relay_steps": relay_steps})
                    display.done(f"relay saturation: {relay_good} clicks/s at p99 < {SATURATION_P99_MS:g} ms")
                bench.stop_relay()

        report["sequence"] = None
        if sequence:
            with display.stage(f"exporting a sequence model over {bench.items:,} items"):
                report["sequence"] = await asyncio.to_thread(bench.publish_sequence_model)
        with display.stage("starting the worker"):
            bench.start_worker()
            waited_s = await bench.wait_serving(ready_timeout_s)
            if sequence:
                await bench.wait_for_model("sequence", report["sequence"], ready_timeout_s)
        diagnostics["worker_ready_s"] = round(waited_s, 1)
        display.done(f"worker serving after {waited_s:.1f} s")
        with display.stage("pipeline"):
            if burn_in_s > 0:  # saturation alone warms up at its first step's rate, not at --rate
                burn_rate = start_rate if mode == "saturation" else rate
                burn = await bench.measure("pipeline burn-in", bench.topics.clicks, rate=burn_rate,
                                           seconds=burn_in_s)
                diagnostics["pipeline_burn_in"] = _phase_report(burn)
            if mode in ("rate", "all"):
                pipeline = await bench.measure("pipeline", bench.topics.clicks, rate=rate, seconds=seconds)
        if pipeline is not None:
            display.done(f"pipeline: {_fmt(pipeline)}")
            if (steps := pipeline.worker_steps) is not None:
                display.done(f"  in the worker: a click waited {steps['click_wait']} ms for its batch "
                             f"({steps['clicks_per_batch']} clicks); a batch read {steps['batch_read']} ms, "
                             f"ranked {steps['batch_rank']} ms, sent {steps['batch_send']} ms (means)")

        if pipeline is not None:
            with display.stage("pull: a user's list over HTTP, beside the push path"):
                await bench.quiesce()
                pulls = await asyncio.to_thread(measure_pulls, bench.metrics_port, bench.users, PULLS)
            report["pull_ms"] = pulls
            display.done(f"pull: p50 {pulls['p50']} ms, p99 {pulls['p99']} ms over {pulls['n']} requests "
                         f"(push p50 {pipeline.summary()['p50']} ms, p99 {pipeline.summary()['p99']} ms)")

        if relay is not None and pipeline is not None:
            p_p99, r_p99 = pipeline.summary()["p99"], relay.summary()["p99"]
            report.update({
                "pipeline_ms": pipeline.summary(),
                "relay_ms": relay.summary(),
                "ratio_p99": round(p_p99 / r_p99, 2) if p_p99 is not None and r_p99 else None,
                "throughput": {"pipeline_clicks_s": pipeline.throughput_clicks_s,
                               "relay_clicks_s": relay.throughput_clicks_s},
                "missing": {"pipeline": pipeline.missing, "relay": relay.missing,
                            "pipeline_dead_letters": pipeline.dead_letters,
                            "send_failures": pipeline.send_failures + relay.send_failures},
                "late_sends": {"pipeline": pipeline.late_sends, "relay": relay.late_sends},
                "cpu_ms_per_click": {"worker": pipeline.cpu_ms_per_click, "relay": relay.cpu_ms_per_click},
                "worker_cpu_ms_per_click_by_thread": pipeline.cpu_ms_per_click_by_thread,
            })
            diagnostics["pipeline"] = _phase_report(pipeline)
            diagnostics["relay"] = _phase_report(relay)
            if plot_path is not None:
                plot_latencies(plot_path, {"pipeline": pipeline, "bare relay": relay},
                               title=f"{rate:,.0f} clicks/s, {bench.items:,} items, {seconds:g} s each")
                report["plot"] = str(plot_path)

        if mode in ("idle", "all"):
            with display.stage(f"idle: {idle_s:g} s of silence"):
                diagnostics["drain_before_idle_s"] = round(await bench.quiesce(), 1)
                for left in range(int(idle_s), 0, -1):
                    display.update(f"idle: silence, {left} s left")
                    await asyncio.sleep(1.0)
                await asyncio.sleep(idle_s - int(idle_s))
                probe = await bench.measure("idle probe", bench.topics.clicks, rate=1.0, seconds=3.0)
            values = [round(float(v), 2) for v in (probe.latencies_ms if probe.missing == 0 else [])]
            report["idle_click_ms"] = values[0] if values else None
            diagnostics["after_idle_ms"] = values
            display.done(f"idle probe: first click after {idle_s:g} s silence {report['idle_click_ms']} ms, "
                         f"then {values[1:]}")

        if saturate:
            with display.stage("saturation"):
                good, steps = await _saturation(bench, bench.topics.clicks, "pipeline", step_s=step_s,
                                                budget_s=budget_s, start_rate=start_rate)
            relay_good = report.get("relay_saturation_clicks_s")
            report.update({
                "saturation_clicks_s": good, "saturation_p99_ms": SATURATION_P99_MS, "steps": steps,
                "saturation_ratio": round(good / relay_good, 3) if good and relay_good else None,
            })
            display.done(f"saturation: {good} clicks/s at p99 < {SATURATION_P99_MS:g} ms "
                         f"(relay: {relay_good})")
    finally:
        await bench.close()
    diagnostics["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    report["diagnostics"] = diagnostics
    return report


#: Pulls timed after the pipeline phase (one after another, as a page load would).
PULLS = 500


def models_of(port: int | None) -> dict[str, str]:
    """A worker's model versions (``GET /models``); empty while it does not answer."""
    body = fetch(port, "/models")
    try:
        return dict(msgspec.json.decode(body)["models"]) if body is not None else {}
    except (msgspec.DecodeError, KeyError, TypeError):
        return {}


def measure_pulls(port: int | None, users: int, count: int) -> dict[str, Any]:
    """``count`` pulls of ``GET /users/{id}/recommendations`` for users of the synthetic
    population, one after another on one connection: latency percentiles (ms), and how many
    did not answer 200."""
    import http.client

    from streams.bench.load import user_key

    if port is None:
        raise BenchError("the worker serves no endpoints port")
    rng = np.random.default_rng(11)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, failed = [], 0
    try:
        for user in rng.integers(0, users, size=count):
            began = time.perf_counter()
            connection.request("GET", f"/users/{user_key(int(user))}/recommendations")
            response = connection.getresponse()
            response.read()
            latencies.append((time.perf_counter() - began) * 1000.0)
            failed += response.status != 200
    finally:
        connection.close()
    return {**percentiles_ms(latencies), "n": count, "failed": failed}


def _fmt(phase: Phase) -> str:
    s = phase.summary()
    return (f"p50 {s['p50']} ms, p99 {s['p99']} ms, max {s['max']} ms, {phase.throughput_clicks_s:,.0f} clicks/s, "
            f"missing {phase.missing}, late sends {phase.late_sends}")


async def _saturation(bench: BenchRun, topic: str, name: str, *, step_s: float, budget_s: float,
                      start_rate: float) -> tuple[float | None, list[dict[str, Any]]]:
    """Highest rate whose p99 through ``topic`` stays under :data:`SATURATION_P99_MS`, and the
    steps that found it: doubling, then bisection, within ``budget_s``."""
    started = time.monotonic()
    good: float | None = None
    bad: float | None = None
    steps: list[dict[str, Any]] = []
    rate = start_rate
    while time.monotonic() - started + step_s * 1.5 < budget_s:
        await bench.quiesce(cap_s=max(5.0, budget_s - (time.monotonic() - started)))
        phase = await bench.measure(f"{name} saturation step {rate:,.0f}/s", topic, rate=rate,
                                    seconds=step_s, drain_cap_s=max(30.0, budget_s - (time.monotonic() - started)))
        s = phase.summary()
        if phase.missing:
            verdict = "missing"
        elif s["p99"] is None or s["p99"] >= SATURATION_P99_MS:
            verdict = "p99"
        elif phase.send_lag_ms_p99 > SATURATION_MAX_SEND_LAG_MS:
            verdict = "sender_lag"
        else:
            verdict = "ok"
        ok = verdict == "ok"
        steps.append({"rate": rate, "ok": ok, "verdict": verdict, "p50": s["p50"], "p99": s["p99"],
                      "max": s["max"], "missing": phase.missing, "late_sends": phase.late_sends,
                      "send_lag_ms_p99": phase.send_lag_ms_p99,
                      "throughput_clicks_s": phase.throughput_clicks_s, "cpu_util": phase.cpu_util,
                      "cpu_ms_per_click": phase.cpu_ms_per_click})
        bench.display.done(f"  {name} step {rate:,.0f}/s: {verdict} ({_fmt(phase)})")
        if ok:
            good = rate if good is None else max(good, rate)
        else:
            bad = rate if bad is None else min(bad, rate)
        if bad is None:
            rate = rate * 2
        elif good is None:
            rate = rate / 2
            if rate < 10:
                break
        else:
            rate = float(round((good + bad) / 2))
            if bad / good < 1.1 or rate in (good, bad):
                break
    return good, steps


# --------------------------------------------------------------------------- module CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.bench.latency``: the same flags as ``recstream bench latency``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m streams.bench.latency")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--mode", choices=["rate", "saturation", "idle", "all"], default="rate")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--keep-dir", type=Path)
    parser.add_argument("--idle-s", type=float, default=IDLE_S)
    parser.add_argument("--burn-in-s", type=float, default=5.0)
    parser.add_argument("--saturation-start", type=float, default=500.0)
    parser.add_argument("--saturation-budget-s", type=float, default=180.0)
    parser.add_argument("--sequence", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run_latency_bench(Settings(), rate=args.rate, seconds=args.seconds, items=args.items,
                               broker=args.broker, bootstrap_servers=args.bootstrap_servers, mode=args.mode,
                               plot_path=args.plot, progress=True, keep_dir=args.keep_dir, idle_s=args.idle_s,
                               burn_in_s=args.burn_in_s, saturation_start_rate=args.saturation_start,
                               saturation_budget_s=args.saturation_budget_s, sequence=args.sequence)
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
