"""Encode stage: ``items`` -> micro-batches (size or ``batch_wait_ms``, whichever first) ->
:class:`encoders.item_encoder.ItemEncoder` -> ``item-vectors`` (deletes become tombstones)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streams.records import ItemEvent, ItemVector, check_key, decode_item, encode_item_vector
from streams.stages.context import WorkerContext

log = logging.getLogger(__name__)


def register(ctx: WorkerContext) -> None:
    from encoders.item_encoder import ItemEncoder

    settings = ctx.settings
    # One thread runs the encoder, at a lower priority than the event loop that serves clicks.
    # The session is made in that thread, so onnxruntime's own threads inherit its niceness.
    encoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder", initializer=_lower_priority,
                                       initargs=(settings.model.nice,))
    # With shape buckets (on the GPU) the load also runs every shape once: the worker is not
    # ready before, so no item pays the provider's first-shape cost.
    encoder = encoder_thread.submit(ItemEncoder.load, settings.model_dir, device=settings.model.device,
                                   threads=settings.model.threads, shape_buckets=settings.model.shape_buckets,
                                   token_buckets=settings.model.token_buckets,
                                   max_rows=settings.model.batch_size,
                                   cuda_options=settings.model.cuda_options).result()
    log.info("encoder %s on %s (%s%s)", encoder.version, encoder.provider, encoder.variant,
             f", {len(encoder.buckets.shapes())} shapes warmed in {encoder.warm_up_s:.1f} s" if encoder.buckets else "")
    ctx.encoder_version = encoder.version
    items = ctx.app.topic(settings.topics.items, key_type=bytes, value_type=bytes)
    vectors = ctx.app.topic(settings.topics.item_vectors, key_type=bytes, value_type=bytes)

    @ctx.app.agent(items, name="encode")
    async def encode(stream: Any) -> None:
        async for events in stream.take_events(settings.model.batch_size,
                                               within=settings.model.batch_wait_ms / 1000.0):
            # A vector message carries its item record's timestamp (when the item was described),
            # so an index replica can time new item -> recommendable (item_freshness_seconds).
            upserts: list[tuple[ItemEvent, float | None, Any]] = []
            for event in events:
                message = event.message
                try:
                    item = decode_item(message.value, now_s=time.time(), limits=ctx.limits)
                    check_key(message.key, item.item_id, "item_id")
                except Exception as exc:  # noqa: BLE001 - a bad record is a dead letter, never a crash
                    await ctx.reject(message, exc)
                    continue
                if item.op == "delete":
                    await vectors.send(key=item.item_id.encode(), value=None, timestamp=message.timestamp)
                else:
                    upserts.append((item, message.timestamp, message))
            if not upserts:
                continue
            began = time.perf_counter()
            encoded = await _encode(encoder, upserts, encoder_thread)
            ctx.metrics.encoder_batch_seconds.observe(time.perf_counter() - began)
            ctx.metrics.items_encoded.inc(sum(not isinstance(v, Exception) for v in encoded))
            for (item, described_s, message), vector in zip(upserts, encoded, strict=True):
                if isinstance(vector, Exception):
                    await ctx.send_dead_letter(message, vector)
                    continue
                record = ItemVector.from_array(item_id=item.item_id, model=encoder.version, vector=vector,
                                               title=item.title, tags=item.tags, created_at_s=item.created_at_s)
                await vectors.send(key=item.item_id.encode(), value=encode_item_vector(record),
                                   timestamp=described_s)


def _lower_priority(nice: int) -> None:
    """Raise this thread's niceness (Linux sets it per thread; threads it starts inherit it)."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: the encoder runs at normal priority
        log.info("the encoder's threads keep the default priority: %r", exc)


async def _encode(encoder: Any, upserts: list[tuple[ItemEvent, float | None, Any]],
                  executor: Any) -> list[Any]:
    """Each item's vector, in order; where the batch cannot be encoded, item by item, so that
    only an item the encoder fails on gets an error (its dead letter) in place of a vector."""
    run = asyncio.get_running_loop().run_in_executor
    texts = [item.encoder_text() for item, _, _ in upserts]
    try:
        return list(await run(executor, encoder.encode, texts))
    except Exception:  # noqa: BLE001
        log.exception("encoding a batch of %d items failed; encoding them one by one", len(texts))
    out: list[Any] = []
    for text in texts:
        try:
            out.append((await run(executor, encoder.encode, [text]))[0])
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out
