"""One batch of clicks through the recommender, with no Kafka in it: decode, apply each user's
clicks to their state in order, rank every user at once, build the records, and learn what the
batch taught the crowd.

Shared by the recommend stage (:mod:`streams.stages.recommend`, which reads the clicks from
Kafka, loads and stores the states, and produces the records) and the deterministic rebuild
(:mod:`streams.rebuild`), so that a rebuilt list is ranked exactly as a served one. A click
travels as the event it came in (anything with a ``message`` holding topic, partition,
offset, key and value: a faust event, or a wrapped aiokafka record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streams.interest import UserState
from streams.ranking import RankedItem, unit_score
from streams.recommend import CrowdEvent, Recommender, Request
from streams.records import Click, RecommendedItem, Recommendation, RecordLimits, Trigger, check_key, decode_click

log = logging.getLogger(__name__)

#: Loads the stored states of ``(user key, partition)``s: ``{key: state or None}``.
LoadStates = Callable[[Iterable[tuple[bytes, int]]], dict[bytes, UserState | None]]


@dataclass(slots=True)
class BatchUser:
    """One user's part of a batch: their state as it goes and the clicks that moved it."""

    key: bytes
    partition: int
    state: UserState | None
    changed: bool = False
    clicks: list[tuple[Any, Click]] = field(default_factory=list)  # (event, click)
    redelivered: set[int] = field(default_factory=set)  # ids of the events whose click was applied before


def read_click(message: Any, *, now_s: float, limits: RecordLimits) -> Click:
    """The click a record holds, keyed by its user; ``RecordDecodeError`` otherwise."""
    click = decode_click(message.value, now_s=now_s, limits=limits)
    check_key(message.key, click.user_id, "user_id", required=True)
    return click


def apply_clicks(recommender: Recommender, clicks: list[tuple[Any, Click]], load: LoadStates,
                 letters: list[tuple[Any, Exception]], learned: list[CrowdEvent]) -> list[BatchUser]:
    """Each user's clicks applied in order to their stored state (loaded once); what they
    teach the crowd goes to ``learned``, for :func:`learn_batch` once the batch is ranked; a
    click that fails goes to ``letters``."""
    users: dict[bytes, BatchUser] = {}
    for event, click in clicks:
        message = event.message
        if message.key not in users:
            users[message.key] = BatchUser(key=message.key, partition=message.partition, state=None)
    broken: dict[bytes, Exception] = {}
    try:
        stored = load((u.key, u.partition) for u in users.values())
    except Exception:  # noqa: BLE001 - one undecodable state must not fail the batch
        stored = _load_each(load, users, broken)
    for key, state in stored.items():
        users[key].state = state
    for event, click in clicks:
        user = users[event.message.key]
        if user.key in broken:
            letters.append((event, broken[user.key]))
            continue
        try:
            new, lesson = recommender.apply(user.state, click)
        except Exception as exc:  # noqa: BLE001 - a click the state cannot absorb: dead letter
            log.exception("click at %s[%d]@%d failed", event.message.topic, event.message.partition,
                          event.message.offset)
            letters.append((event, exc))
            continue
        if lesson is not None:
            learned.append(lesson)
        if new is not user.state:
            user.state, user.changed = new, True
        elif user.state is not None and click.ts_s > user.state.forgotten_at_s:
            # unchanged and not fenced off by a forget: the click was applied before (a
            # crash or rebalance re-read it); update_interest already looked for it
            user.redelivered.add(id(event))
        user.clicks.append((event, click))
    return [u for u in users.values() if u.clicks]


def learn_batch(recommender: Recommender, learned: list[CrowdEvent]) -> None:
    """Count a ranked batch's clicks in the crowd's aggregates.

    After the ranking, not before: a user's own click adds next to nothing to their list
    (the pairs it counts lead to items they have seen), and its dozens of co-visit counts
    are work a lone click's answer need not wait for (the stage learns once the answers have
    left). So a batch is ranked on the crowd as it stood before the batch, in the worker and
    in the rebuild alike.
    """
    for event in learned:
        recommender.learn(event)


def _load_each(load: LoadStates, users: dict[bytes, BatchUser], broken: dict[bytes, Exception]
               ) -> dict[bytes, UserState | None]:
    """``load`` user by user, when the batch load failed: the users whose state cannot be
    read go into ``broken`` with the error (their clicks get dead letters)."""
    stored: dict[bytes, UserState | None] = {}
    for user in users.values():
        try:
            stored.update(load([(user.key, user.partition)]))
        except Exception as exc:  # noqa: BLE001
            log.exception("state of a user on partition %d cannot be read", user.partition)
            broken[user.key] = exc
    return stored


def rank_users(recommender: Recommender, users: list[BatchUser], letters: list[tuple[Any, Exception]]
               ) -> list[tuple[BatchUser, list[RankedItem]]]:
    """Every user's list in one batch, ranked at the user's last click; if the batch fails,
    user by user, so that only the users whose ranking fails lose their clicks to dead letters."""
    requests = [Request(u.state, u.state.last_ts_s if u.state is not None else time.time()) for u in users]
    try:
        return list(zip(users, recommender.recommend_batch(requests), strict=True))
    except Exception:  # noqa: BLE001
        log.exception("ranking a batch of %d users failed; ranking them one by one", len(users))
    ranked = []
    for user, request in zip(users, requests, strict=True):
        try:
            ranked.append((user, recommender.recommend_batch([request])[0]))
        except Exception as exc:  # noqa: BLE001
            letters.extend((event, exc) for event, _ in user.clicks)
    return ranked


class Versions(NamedTuple):
    """The model versions a batch's records name (read once per batch)."""

    encoder: str
    models: dict[str, str]

    @classmethod
    def of(cls, recommender: Recommender | None) -> Versions:
        if recommender is None:
            return cls("", {})
        return cls(recommender.catalog.model_version, recommender.model_versions())


def recommendations(versions: Versions, user: BatchUser, items: list[RankedItem], *,
                    answered_before_skipped: bool = False) -> Iterator[tuple[Any, Recommendation]]:
    """The record of each of the user's clicks (all share the list; each names its own
    trigger). With ``answered_before_skipped``, none for a click applied before."""
    shown = [RecommendedItem(item_id=r.item_id, score=round(unit_score(r.score), 6), because=list(r.because),
                             source=r.source) for r in items]
    generated_s = time.time()
    for event, click in user.clicks:
        if answered_before_skipped and id(event) in user.redelivered:
            continue
        message = event.message
        yield event, Recommendation(
            user_id=click.user_id, items=shown,
            trigger=Trigger(topic=message.topic, partition=message.partition, offset=message.offset, ts_s=click.ts_s),
            model=versions.encoder, models=versions.models, generated_at_s=generated_s,
            redelivered=id(event) in user.redelivered)
