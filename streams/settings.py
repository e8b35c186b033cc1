"""One settings object for every recstream command.

Precedence: CLI flag > environment (``RECSTREAM_*``, nested with ``__``, e.g.
``RECSTREAM_KAFKA__BOOTSTRAP_SERVERS``) > ``.env`` file > default. The CLI builds a
:class:`Settings` once and passes it down; nothing else reads the environment.

Field descriptions are the documentation: ``recstream config --markdown`` prints the
README's configuration table from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoders.shapes import DEFAULT_TOKEN_BUCKETS
from streams.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
#: What recstream's consumers read, in every mode: never a record of a transaction that was
#: aborted (a crashed exactly_once worker's half-served batch, a failed rebuild) or is still
#: open. Records written outside transactions read the same either way.
ISOLATION_LEVEL = "read_committed"


def default_data_dir() -> Path:
    """Where local state, exported models and caches go unless told otherwise."""
    return Path.home() / ".cache" / "recstream"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "localhost:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    client_id: str = Field("recstream", description="Client id sent to the broker.")
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism, when SASL is used.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: Path | None = Field(None, description="Client key for SSL.")
    fetch_max_wait_ms: int = Field(
        50,
        ge=0,
        description="Longest time a fetch waits for data (faust hard-codes 1500 ms; recstream "
        "overrides it). Apache Kafka answers as soon as data arrives, so this bounds only idle "
        "polling; brokers that hold every fetch for the full wait (Tansu) add it to latency.",
    )
    linger_ms: int = Field(0, ge=0, description="Producer batching delay; 0 sends at once.")
    session_timeout_s: float = Field(
        10.0, ge=6, le=300,
        description="A worker that stops heartbeating (killed, frozen) loses its partitions, and a crashed "
                    "worker's successor gets them, after this long (Kafka's group.min.session.timeout.ms is 6 s).",
    )
    processing_guarantee: ProcessingGuarantee = Field(
        "at_least_once",
        description="exactly_once: each batch of clicks is served in one Kafka transaction (its recommendations, "
                    "dead letters, crowd lessons, state changelog records and input offsets together); a click read "
                    "again after a crash is not answered twice. Costs a transaction per batch (tens of ms on Apache "
                    "Kafka with aiokafka); subscribers must read with isolation.level=read_committed (recstream's "
                    "own consumers always do).",
    )
    transaction_timeout_s: float = Field(
        10.0, gt=0, le=900,
        description="exactly_once: a transaction left open by a crashed worker is aborted after this long when "
                    "the partitions' next owner is another worker (a restarted worker aborts its own at once); "
                    "until then read_committed readers of those partitions wait.",
    )
    consumer_extra: dict[str, Any] = Field(
        default_factory=dict, description="Extra aiokafka consumer kwargs, merged last."
    )
    producer_extra: dict[str, Any] = Field(
        default_factory=dict, description="Extra aiokafka producer kwargs, merged last."
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        """SASL and SSL settings must agree, or some clients would use them and others not."""
        sasl = self.security_protocol.startswith("SASL")
        if sasl and self.sasl_mechanism is None:
            raise ConfigError(
                "security_protocol is SASL_* but no sasl_mechanism is set: "
                "set RECSTREAM_KAFKA__SASL_MECHANISM"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ConfigError(
                f"SASL settings are set but security_protocol is {self.security_protocol}: set "
                "RECSTREAM_KAFKA__SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL (or drop the SASL settings)"
            )
        if sasl and self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
                not self.sasl_username or self.sasl_password is None):
            raise ConfigError(f"SASL {self.sasl_mechanism} needs RECSTREAM_KAFKA__SASL_USERNAME and "
                              "RECSTREAM_KAFKA__SASL_PASSWORD")
        if not self.security_protocol.endswith("SSL") and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ConfigError(f"SSL files are set but security_protocol is {self.security_protocol}: use SSL or "
                              "SASL_SSL")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security kwargs shared by every aiokafka client (the one place)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        return kwargs

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def consumer_kwargs(self) -> dict[str, Any]:
        return {**self.client_kwargs(), "fetch_max_wait_ms": self.fetch_max_wait_ms,
                "isolation_level": ISOLATION_LEVEL, **self.consumer_extra}

    def producer_kwargs(self) -> dict[str, Any]:
        return {**self.client_kwargs(), "linger_ms": self.linger_ms, **self.producer_extra}


class TopicSettings(_Section):
    items: str = Field("items", description="Item events topic.")
    clicks: str = Field("clicks", description="Click events topic, keyed by user_id.")
    user_control: str = Field("user-control", description="Privacy commands (forget) topic.")
    item_vectors: str = Field("item-vectors", description="Encoded item vectors (compacted).")
    recommendations: str = Field("recommendations", description="Output topic.")
    dead_letters: str = Field("dead-letters", description="Bad input with its reason.")
    crowd: str = Field(
        "crowd",
        description="What every recommend worker's clicks teach the crowd (co-visitation, co-likes, trending), "
                    "without user ids; every recommend worker reads all of it.",
    )
    crowd_retention_s: float = Field(
        7 * 86_400.0, gt=0,
        description="How long the crowd topic keeps its records: a worker started on an empty data dir learns "
                    "the crowd from this much of the past (a restarted one from its snapshot on).",
    )
    partitions: int = Field(4, ge=1, description="Partitions for topics recstream creates.")
    replication_factor: int = Field(1, ge=1, description="Replication for topics recstream creates.")

    @classmethod
    def named(cls, pattern: str, **values: Any) -> TopicSettings:
        """Every topic renamed by ``pattern`` (``"{name}-x1"``: ``clicks-x1``, ...): fresh topics
        for a test or a benchmark run, never another run's records."""
        names = {name: pattern.format(name=field.default) for name, field in cls.model_fields.items()
                 if isinstance(field.default, str)}
        return cls(**(names | values))

    def all_names(self) -> tuple[str, ...]:
        return (
            self.items,
            self.clicks,
            self.user_control,
            self.item_vectors,
            self.recommendations,
            self.dead_letters,
            self.crowd,
        )


class IndexSettings(_Section):
    kind: Literal["edge", "qdrant", "memory"] = Field(
        "edge",
        description="Vector index: in-process Qdrant Edge (default), a Qdrant server via "
        "qdrant-client, or brute-force numpy (tests, small catalogues).",
    )
    path: Path | None = Field(
        None, description="Qdrant Edge data directory (default: <data_dir>/index)."
    )
    url: str | None = Field(
        None,
        description="Qdrant server URL for kind=qdrant; ':memory:' or a path runs "
        "qdrant-client's local mode (tests only).",
    )
    api_key: SecretStr | None = Field(None, description="Qdrant server API key.")
    collection: str = Field("items", description="Collection / shard name.")
    quantization: bool = Field(
        True,
        description="Qdrant Edge: search HNSW over int8 copies of the vectors, rescoring with the float ones "
                    "(a query about twice as fast at 100k items, recall@10 0.991 vs 0.994: docs/architecture.md).",
    )
    optimize_min_items: int = Field(
        20_000, ge=0,
        description="Build the ANN (HNSW) index at worker start when the catalogue has at least "
        "this many items; below it exact search is as fast.",
    )

    @model_validator(mode="after")
    def _url_for_remote(self) -> IndexSettings:
        if self.kind == "qdrant" and not self.url:
            raise ConfigError("index kind 'qdrant' needs a URL: set --index-url or RECSTREAM_INDEX__URL")
        return self


#: The encoder a fresh data dir exports when no model directory is given.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class ModelSettings(_Section):
    name: str = Field(
        DEFAULT_ENCODER,
        description="The packaged text encoder exported on first use when no model directory exists: "
                    "all-MiniLM-L6-v2 (English) or m3e-small (Chinese; its licence allows research use only). "
                    "Choose it per catalogue; every worker and eval of one catalogue must use the same.",
    )
    dir: Path | None = Field(
        None, description="Exported model directory (manifest.json); default <data_dir>/models/default for "
                          "all-MiniLM-L6-v2, <data_dir>/models/<name> for another packaged encoder."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="onnxruntime device: CUDA when usable, else CPU."
    )
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = onnxruntime's default.")
    batch_size: int = Field(32, ge=1, description="Largest encoder micro-batch.")
    shape_buckets: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Pad encoder runs to fixed shapes (token-length buckets x powers of two rows up to batch_size), "
                    "each run once before the worker reports ready: onnxruntime's CUDA provider pays ~75 ms for a "
                    "shape it has not seen. auto: on for CUDA only (the CPU has no such cost; padding only costs).",
    )
    cuda_options: dict[str, str] = Field(
        default_factory=dict,
        description="onnxruntime CUDA provider options, as they are (JSON object, e.g. "
                    '{"arena_extend_strategy": "kSameAsRequested"}); measure with bench encoder first.',
    )
    token_buckets: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        DEFAULT_TOKEN_BUCKETS, min_length=1,
        description="Token-length buckets of shape_buckets (JSON list; the model's max length is always the top one).",
    )
    batch_wait_ms: float = Field(5.0, ge=0, description="Longest wait to fill a micro-batch.")
    nice: int = Field(
        10, ge=0, le=19,
        description="Niceness of the encoder's threads (Linux): when clicks and a burst of new items want the "
                    "same cores, the clicks are served first and the encoder takes what is left; 0: no priority.",
    )


class LimitSettings(_Section):
    max_text_chars: int = Field(10_000, ge=1, description="Longest item title + text accepted.")
    max_id_chars: int = Field(256, ge=1, description="Longest user_id / item_id accepted.")
    max_tags: int = Field(64, ge=0, description="Most tags on one item.")
    max_future_s: float = Field(
        86_400.0, ge=0, description="How far in the future a timestamp may lie before it is rejected."
    )
    max_record_bytes: int = Field(1_000_000, ge=1, description="Largest raw record accepted.")


class StateSettings(_Section):
    store: Literal["memory", "rocksdb"] = Field(
        "rocksdb", description="faust table store: rocksdb survives restarts without a full replay."
    )
    max_interests: int = Field(4, ge=1, description="Interest centroids kept per user.")
    recent_items: int = Field(50, ge=1, description="Recent items kept per user (seen set, reasons).")
    interest_half_life_s: float = Field(
        14 * 86_400.0, gt=0, description="Half-life of an interest's weight."
    )
    session_half_life_s: float = Field(1_800.0, gt=0, description="Half-life of the session vector.")
    merge_threshold: float = Field(
        0.6, ge=-1, le=1, description="Cosine above which a click reinforces an existing interest."
    )
    changelog_compaction_lag_s: float = Field(
        86_400.0, gt=0,
        description="Longest time a superseded user state (a forgotten user's history too) stays in the "
                    "state changelog topic before Kafka compacts it away (max.compaction.lag.ms and segment.ms "
                    "of the changelog, set when the topic is created).",
    )


class RecommendSettings(_Section):
    k: int = Field(10, ge=1, le=1000, description="Items per recommendation.")
    candidates_per_source: int = Field(
        20, ge=1,
        description="Co-visitation, co-like and trending candidates per click (ml-100k NDCG@10 is flat from 20 to 50; "
                    "ranking cost grows with it).",
    )
    diversity: float = Field(
        0.1, ge=0, le=1,
        description="MMR trade-off: 0 = pure relevance, 1 = pure diversity (0.1 is best on ml-100k).",
    )
    share_crowd: bool = Field(
        True,
        description="Publish what this worker's clicks teach the crowd (co-visitation, co-likes, trending) on the "
                    "crowd topic and learn the other workers': every worker ranks with the counts of all clicks.",
    )
    unknown_item_wait_s: float = Field(
        30.0, ge=0,
        description="How long a click on an item not indexed yet is held for its item (items and clicks travel "
                    "on different topics, so a click can overtake its item); then it is dead-lettered as "
                    "unknown_item. 0 dead-letters it at once.",
    )
    max_batch: int = Field(
        256, ge=1,
        description="Most clicks served as one batch: the recommend stage takes whatever is waiting, up to this, "
                    "and never waits for more.",
    )
    ranker_refit_every: int = Field(
        2_000, ge=0,
        description="Learn the ranking from the stream: refit a logistic regression (each generator's score, "
                    "popularity, cold item, new user) every this many answered recommendations (a user's next "
                    "click on an item offered to them); until the first fit, and with 0 always, the hand-tuned "
                    "blend ranks. Each worker learns from its own users.",
    )
    sequence_dir: Path | None = Field(
        None,
        description="Where `recstream train` publishes next-item sequence models (one directory per model, "
                    "`latest` names the newest); workers pick a newer one up while running. Default "
                    "<data_dir>/models/sequence; with no model there, lists are ranked without one.",
    )
    sequence_poll_s: float = Field(
        5.0, gt=0, description="How often a worker looks for a newer sequence model.",
    )


class Settings(BaseSettings):
    """Everything a recstream process can be told. Frozen: build once, pass down."""

    model_config = SettingsConfigDict(
        env_prefix="RECSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state, models, caches.")
    app_id: str = Field("recstream", description="faust app id = consumer group prefix.")
    summary_every_s: float = Field(
        30.0, ge=0,
        description="A worker logs a one-line summary (clicks/s, p99, lag, dead letters) this often; 0 never.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)

    @property
    def model_dir(self) -> Path:
        name = self.model.name
        return self.model.dir or self.data_dir / "models" / ("default" if name == DEFAULT_ENCODER else name)

    @property
    def sequence_dir(self) -> Path:
        return self.recommend.sequence_dir or self.data_dir / "models" / "sequence"

    @property
    def index_path(self) -> Path:
        return self.index.path or self.data_dir / "index"


def settings_table_markdown() -> str:
    """The README's configuration table, generated from the field descriptions."""
    rows = ["| environment variable | default | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, _Section):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            default = "" if field.default_factory else repr(field.default)
            rows.append(f"| `{prefix}{name.upper()}` | {default} | {field.description or ''} |")

    walk(Settings, "RECSTREAM_")
    return "\n".join(rows)
