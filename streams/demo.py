"""``recstream demo``: the whole pipeline on one machine, from nothing.

Starts a local broker (Apache Kafka when Java is here, else Tansu), exports the default
encoder if no model exists yet, starts a real worker process (encode + index + recommend,
Qdrant Edge index, RocksDB state), streams MovieLens-100k's items and then its first N
clicks in time order at a steady rate, and reads back every recommendation and dead
letter. It shows a few users' recommendations with their reasons and the click ->
recommendation latency, and reports the contract's JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.bench.stats import percentiles_ms
from streams.brokers import BrokerKind, free_port, start_local_broker
from streams.datasets import Dataset, load_movielens_100k
from streams.errors import RecstreamError
from streams.metrics import sample, scrape
from streams.modelstore import ensure_model
from streams.records import Click, Recommendation, decode_recommendation, encode_json
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)
console = Console(stderr=True)


@dataclass
class Outcome:
    sent_s: dict[tuple[int, int], float] = field(default_factory=dict)  # (partition, offset) -> send time
    latencies_ms: list[float] = field(default_factory=list)
    recommendations: dict[str, Recommendation] = field(default_factory=dict)  # last per user
    n_recommendations: int = 0
    n_dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _worker_env(settings: Settings, bootstrap: str, data_dir: Path, model_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RECSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "RECSTREAM_DATA_DIR": str(data_dir),
        "RECSTREAM_MODEL__DIR": str(model_dir),
        "RECSTREAM_INDEX__KIND": settings.index.kind,
        "RECSTREAM_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "PYTHONUNBUFFERED": "1",
    }


async def _stream(settings: Settings, bootstrap: str, dataset: Dataset, clicks: list[Click], *, rate: float,
                  metrics_port: int, worker: subprocess.Popen[bytes]) -> Outcome:
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    topics = settings.topics
    outcome = Outcome()
    producer = AIOKafkaProducer(**kafka.producer_kwargs(), acks="all")
    consumer = AIOKafkaConsumer(topics.recommendations, topics.dead_letters, **kafka.consumer_kwargs(),
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        with _progress() as progress:
            task = progress.add_task("items -> encoder -> index", total=len(dataset.items))
            for item in dataset.items:
                await producer.send(topics.items, encode_json(item), key=item.item_id.encode())
            await producer.flush()
            while (done := sample(scrape(metrics_port), "recstream_items_indexed_total")) < len(dataset.items):
                if worker.poll() is not None:
                    raise RecstreamError(f"the worker exited with code {worker.returncode}; see its log")
                progress.update(task, completed=done)
                await asyncio.sleep(0.2)
            progress.update(task, completed=len(dataset.items))

            send_task = progress.add_task(f"clicks at {rate:.0f}/s", total=len(clicks))
            recv_task = progress.add_task("recommendations + dead letters", total=len(clicks))

            async def receive() -> None:
                while outcome.n_recommendations + outcome.n_dead_letters < len(clicks):
                    batches = await consumer.getmany(timeout_ms=200)
                    now_s = time.time()
                    for tp, messages in batches.items():
                        for message in messages:
                            if tp.topic == topics.dead_letters:
                                outcome.n_dead_letters += 1
                                reason = json.loads(message.value).get("reason", "?")
                                outcome.dead_letter_reasons[reason] = outcome.dead_letter_reasons.get(reason, 0) + 1
                                continue
                            rec = decode_recommendation(message.value)
                            outcome.n_recommendations += 1
                            outcome.recommendations[rec.user_id] = rec
                            sent = outcome.sent_s.get((rec.trigger.partition, rec.trigger.offset))
                            if sent is not None:
                                outcome.latencies_ms.append((now_s - sent) * 1000.0)
                    progress.update(recv_task, completed=outcome.n_recommendations + outcome.n_dead_letters)

            receiver = asyncio.create_task(receive())
            start = time.perf_counter()
            pending = []
            for n, click in enumerate(clicks):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_s = time.time()
                future = await producer.send(topics.clicks, encode_json(click), key=click.user_id.encode())
                pending.append((future, sent_s))
                if len(pending) >= 64:
                    await _record_sends(pending, outcome)
                progress.update(send_task, completed=n + 1)
            await _record_sends(pending, outcome)
            try:
                await asyncio.wait_for(receiver, timeout=60 + len(clicks) / 100)
            except asyncio.TimeoutError:
                log.warning("stopped waiting: %d of %d clicks accounted for",
                            outcome.n_recommendations + outcome.n_dead_letters, len(clicks))
    finally:
        await consumer.stop()
        await producer.stop()
    return outcome


async def _record_sends(pending: list[tuple[Any, float]], outcome: Outcome) -> None:
    for future, sent_s in pending:
        metadata = await future
        outcome.sent_s[(metadata.partition, metadata.offset)] = sent_s
    pending.clear()


def _show(dataset: Dataset, clicks: list[Click], outcome: Outcome, users: int = 4) -> None:
    titles = {item.item_id: item.title for item in dataset.items}
    counts: dict[str, int] = {}
    for click in clicks:
        counts[click.user_id] = counts.get(click.user_id, 0) + 1
    for user_id in sorted(outcome.recommendations, key=lambda u: -counts.get(u, 0))[:users]:
        rec = outcome.recommendations[user_id]
        history = [titles.get(c.item_id, c.item_id) for c in clicks if c.user_id == user_id][-3:]
        table = Table(title=f"user {user_id} ({counts.get(user_id, 0)} clicks; last: {'; '.join(history)})",
                      title_justify="left")
        for column in ("#", "recommended", "score", "source", "because (the user's own items)"):
            table.add_column(column)
        for rank, item in enumerate(rec.items[:5], 1):
            table.add_row(str(rank), titles.get(item.item_id, item.item_id), f"{item.score:.3f}", item.source,
                          "; ".join(titles.get(b, b) for b in item.because))
        console.print(table)


def run_demo(settings: Settings, *, events: int, broker_kind: BrokerKind = "auto", rate: float = 100.0) -> dict:
    """Run the demo end to end; return the contract's report."""
    work = Path(tempfile.mkdtemp(prefix="recstream-demo-"))
    console.rule("recstream demo")
    model_dir = ensure_model(settings, progress=lambda message: console.log(message))
    dataset = load_movielens_100k(settings.data_dir)
    clicks = dataset.clicks[:events]
    broker = start_local_broker(broker_kind, cache_dir=settings.data_dir)
    console.log(f"broker: {broker.description} on {broker.bootstrap_servers}")
    metrics_port = free_port()
    worker = None
    try:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
        asyncio.run(ensure_topics(kafka, settings.topics))
        log_path = work / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--metrics-port", str(metrics_port)],
            env=_worker_env(settings, broker.bootstrap_servers, work / "data", model_dir),
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        console.log(f"worker pid {worker.pid} (log: {log_path})")
        outcome = asyncio.run(_stream(settings, broker.bootstrap_servers, dataset, clicks, rate=rate,
                                      metrics_port=metrics_port, worker=worker))
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
    _show(dataset, clicks, outcome)
    latency = percentiles_ms(outcome.latencies_ms)  # None (JSON null) when nothing arrived
    p50, p99 = latency["p50"], latency["p99"]
    console.log(f"{len(clicks)} clicks -> {outcome.n_recommendations} recommendations + "
                f"{outcome.n_dead_letters} dead letters {outcome.dead_letter_reasons or ''}; "
                f"click -> recommendation p50 {p50} ms, p99 {p99} ms")
    return {
        "clicks": len(clicks),
        "recommendations": outcome.n_recommendations,
        "dead_letters": outcome.n_dead_letters,
        "latency_ms": {"p50": p50, "p99": p99},
        "broker": broker.description,
        "vector_index": {"edge": "qdrant-edge", "qdrant": "qdrant", "memory": "memory"}[settings.index.kind],
    }
