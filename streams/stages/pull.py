"""The pull API: a service asks for a user's list now (on page load, before any click), or
for the items like an item, instead of keeping its own store of the latest pushed lists.

- ``GET /users/{user_id}/recommendations?k=N``: the list ranked now from the user's stored
  state (the same :meth:`Recommender.recommend_batch` that answers clicks); a user with no
  state gets what is trending (``"personalised": false``).
- ``GET /items/{item_id}/similar?k=N``: the nearest items by the encoder's vectors.

Both are served on the worker's endpoints port (:mod:`streams.stages.endpoints`). A user's
state lives on the worker that owns the user's click partition. Another worker answers
``307 Temporary Redirect`` to the owner: faust's partition assignor shares every member's URL
(``app.conf.canonical_url``) through the consumer group and maps a key to its owner
(``app.router.key_store``), so no routing table is kept here. Items are on every worker.

The HTTP server runs in its own thread; the work runs on the worker's event loop (the
recommender and the index have one owner), in between batches. A pull records no exposure
and changes no state: a GET is safe to repeat.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from streams.ranking import unit_score
from streams.records import SCHEMA_VERSION
from streams.recommend import Request

if TYPE_CHECKING:
    from streams.stages.context import WorkerContext

#: Seconds a pull may take on the event loop before the HTTP thread gives up (503).
TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class PullApi:
    """Answers pulls for one worker; called from the HTTP server's threads."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, once it runs

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def answer(self, path: str, query_string: str = "") -> Answer | None:
        """The answer to ``GET path?query_string``, or None when the path is not the pull API's."""
        parts = path.strip("/").split("/")
        if parts == ["models"]:
            return self._models()
        query = parse_qs(query_string)
        if len(parts) != 3 or (parts[0], parts[2]) not in (("users", "recommendations"), ("items", "similar")):
            return None
        most = self.ctx.settings.recommend.k  # the ranker's list length (RECSTREAM_RECOMMEND__K)
        try:
            k = int(query.get("k", [str(most)])[0])
        except ValueError:
            return Answer(400, {"error": "k must be an integer"})
        if not 1 <= k <= most:
            return Answer(400, {"error": f"k must be in 1..{most} (RECSTREAM_RECOMMEND__K)"})
        if self.loop is None or not self.ctx.index_ready.is_set() or self.ctx.recommend_stage is None:
            return Answer(503, {"error": "not serving yet: the index is catching up or the recommend stage is off"})
        subject = parts[1]
        here = path + (f"?{query_string}" if query_string else "")
        work = self._user(subject, k, here) if parts[0] == "users" else self._similar(subject, k)
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return future.result(TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            return Answer(503, {"error": f"no answer within {TIMEOUT_S:g} s: the worker is overloaded"})

    async def _user(self, user_id: str, k: int, path: str) -> Answer:
        ctx = self.ctx
        stage = ctx.recommend_stage
        recommender = stage.ensure_recommender() if stage is not None else None
        if recommender is None:
            return Answer(503, {"error": "no items indexed yet"})
        key = user_id.encode()
        app = ctx.app
        table = app.tables["user-state"]
        tp = app.producer.key_partition(table.changelog_topic.get_topic_name(), key)
        clicks_tp = (ctx.settings.topics.clicks, tp.partition)
        if clicks_tp not in {(a.topic, a.partition) for a in app.consumer.assignment()}:
            return self._redirect(key, path)
        state = stage.states.load([(key, tp.partition)])[key]
        now_s = time.time()
        [ranked] = recommender.recommend_batch([Request(state, now_s)], record_exposure=False)
        items = [{"item_id": r.item_id, "score": round(unit_score(r.score), 6), "because": list(r.because),
                  "source": r.source} for r in ranked[:k]]
        return Answer(200, {"user_id": user_id, "items": items, "personalised": state is not None and state.clicks > 0,
                            "model": recommender.catalog.model_version, "models": recommender.model_versions(),
                            "generated_at": now_s, "schema_version": SCHEMA_VERSION})

    def _models(self) -> Answer:
        """What ranks here: every model's version, the learned ranker's weights by feature
        (once fit from the stream), and how the sequence model in use was made."""
        stage = self.ctx.recommend_stage
        recommender = stage.recommender if stage is not None else None
        if recommender is None:
            return Answer(503, {"error": "not serving yet: the index is catching up or the recommend stage is off"})
        body: dict[str, Any] = {"models": recommender.model_versions()}
        ranker = recommender.ranker
        if ranker is not None:
            body["ranker_weights"] = ranker.weights()
        sequence = recommender.sequence
        if sequence is not None:
            manifest = sequence.manifest
            body["sequence"] = {"version": sequence.version, "items": len(sequence.item_ids),
                                "trained_on": manifest.trained_on, "config": manifest.config,
                                "parity": manifest.parity}
        return Answer(200, body)

    def _redirect(self, key: bytes, path: str) -> Answer:
        try:
            owner = self.ctx.app.router.key_store("user-state", key)
        except Exception:  # noqa: BLE001 - no assignment known yet (joining, rebalancing)
            return Answer(503, {"error": "the user's partition has no owner right now (rebalancing); retry"})
        if str(owner).rstrip("/") == str(self.ctx.app.conf.canonical_url).rstrip("/"):
            return Answer(503, {"error": "the user's partition is moving to this worker; retry"})
        location = str(owner).rstrip("/") + quote(path, safe="/?=&")
        return Answer(307, {"owner": str(owner), "location": location}, (("Location", location),))

    async def _similar(self, item_id: str, k: int) -> Answer:
        recommender = self.ctx.recommend_stage.ensure_recommender() if self.ctx.recommend_stage else None
        vector = recommender.catalog.vector(item_id) if recommender is not None else None
        if recommender is None or vector is None:
            return Answer(404, {"error": f"item {item_id!r} is not indexed"})
        hits = recommender.index.search(vector, k, exclude={item_id})
        return Answer(200, {"item_id": item_id, "items": [{"item_id": h.item_id, "score": round(float(h.score), 6)}
                                                          for h in hits],
                            "model": recommender.catalog.model_version, "schema_version": SCHEMA_VERSION})
