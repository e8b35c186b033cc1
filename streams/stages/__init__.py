"""The worker's runtime: one module per stage, in the order data flows.

- :mod:`.encode`: ``items`` -> text encoder -> ``item-vectors``;
- :mod:`.index_replica`: ``item-vectors`` -> this worker's catalogue and vector index;
- :mod:`.recommend`: ``clicks`` in natural batches -> user states -> :class:`~streams.recommend.Recommender`
  -> ``recommendations``; ``user-control`` -> forget;
- :mod:`.user_states`: the recommend stage's state store (faust table, RocksDB, changelog);
- :mod:`.app`: the faust app that wires the chosen stages, and ``run_worker``.

The pure core they drive (user state, co-visitation, trending, ranking, the recommender)
lives in :mod:`streams.interest`, :mod:`streams.covisit`, :mod:`streams.trending`,
:mod:`streams.ranking` and :mod:`streams.recommend`, and knows nothing of Kafka.
"""
