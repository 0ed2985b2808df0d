"""The one settings object, read in one place and validated at start-up.

Sources, later wins: defaults, a TOML file named by ``INTEREST_STREAM_CONFIG``
(keys as the field names), environment variables ``INTEREST_STREAM_<FIELD>``
(upper case), then explicit overrides from the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.ann import AnnSpec
from models.behaviour import TYPE_WEIGHTS
from models.core import CoreParams
from models.interest.composition import CompositionSpec
from models.interest.levels import LevelSpec
from models.interest.popularity import PopularityParams
from models.interest.shift import ShiftSpec
from models.update import InterestUpdater, TimeDecayUpdater
from models.window import WindowSpec
from streams.codec import Limits
from streams.stores import BACKENDS
from streams.stores.replication import DEFAULT_REPLICATION, parse_replication
from streams.topics import Topics

ENV_PREFIX = "INTEREST_STREAM_"
#: What Kafka accepts as a ``group.instance.id`` (the rule of its topic names).
_GROUP_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SECRETS = frozenset({"sasl_password", "cassandra_password"})
_ROLES = frozenset({"behaviours", "items"})
#: `models.encoder.variants.PRECISIONS`, spelt out so settings do not import onnxruntime.
ENCODER_PRECISIONS = ("fp32", "int8", "fp16")
_CONSISTENCY = frozenset(
    {"ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"}
)


class SettingsError(ValueError):
    """A setting is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Settings:
    """Everything a worker or the demo can be configured with.

    ``bootstrap_servers`` empty means: start the embedded broker.
    """

    app_id: str = "interest-stream"
    #: Which agents this worker runs: "behaviours", "items" or both. Encoder
    #: (GPU) workers run "items" under their own app_id.
    roles: str = "behaviours,items"
    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    topic_prefix: str = ""
    partitions: int = 4
    #: Replication factor of the topics interest-stream creates.
    replication_factor: int = 1
    data_dir: str = ".interest-stream"
    store: str = "sqlite"
    cassandra_contact_points: str = "127.0.0.1"
    cassandra_port: int = 9042
    cassandra_keyspace: str = "interest_stream"
    cassandra_local_dc: str = ""
    #: JSON replication map used when the keyspace is created.
    cassandra_replication: str = DEFAULT_REPLICATION
    cassandra_read_consistency: str = "LOCAL_QUORUM"
    cassandra_write_consistency: str = "LOCAL_QUORUM"
    cassandra_username: str = ""
    cassandra_password: str = ""
    cassandra_ssl_ca_file: str = ""
    #: CQL schema to create (empty: the package's streams/stores/cassandra_schema.cql).
    cassandra_schema_file: str = ""
    #: Item change feed entries Cassandra keeps (0: all); a lagging worker rescans.
    cassandra_feed_retention: int = 200_000
    #: Inactive users' states expire after this long (0: never).
    state_ttl_seconds: int = 0
    encoder_device: str = "auto"
    encoder_cache: str = ""
    encoder_batch_size: int = 64
    #: Graph the encoder runs: "fp32", "int8" (CPU) or "fp16" (CUDA); a
    #: precision the device cannot serve runs fp32 with a warning.
    encoder_precision: str = "fp32"
    #: The items agent's micro-batch: at most this many records, gathered for
    #: at most this long (README "Encoder variants" has the measurements).
    encoder_batch_max: int = 500
    encoder_batch_wait_ms: float = 50.0
    top_k: int = 10
    window_events: int = 50
    window_seconds: float = 7 * 86400.0
    half_life_seconds: float = 3 * 86400.0
    #: "time-decay" (the rule, ``half_life_seconds``) or the folder of an exported
    #: learned updater (``interest-stream train``), which then replaces the rule.
    updater: str = "time-decay"
    #: Seconds between two looks at a learned ``updater`` folder for a newly
    #: exported version (hot reload, `streams.model_watch`); 0: never.
    updater_watch_seconds: float = 10.0
    #: Short-term (window) level's share of the ranking while the user is active.
    short_term_weight: float = 0.3
    #: The same share for a learned ``updater`` (its state already carries the
    #: recent events; README, "The learned updater with several interests").
    learned_short_term_weight: float = 0.0
    #: Long-term level's share while active, and after a long absence (see README "Levels").
    long_term_weight: float = 0.1
    long_term_return_weight: float = 0.6
    return_scale_seconds: float = 14 * 86400.0
    long_term_half_life_seconds: float = 180 * 86400.0
    #: Several interests per user (1: one vector) and how they open, merge, decay, mix.
    max_interests: int = 12
    interest_open_below: float = 0.7
    interest_merge_above: float = 0.85
    interest_half_life_seconds: float = 30 * 86400.0
    interest_temperature: float = 0.5
    #: How the interests share the list: "softmax" or "quota" (CompositionSpec.mode).
    interest_compose: str = "softmax"
    #: Per-event decay of a user's topic masses; topic model size; online topics on/off.
    topic_decay: float = 0.9
    max_topics: int = 32
    topics_enabled: bool = True
    #: Interest-shift detection (models.interest.shift): on/off, Page-Hinkley's
    #: threshold and tolerance (in cosine distance of the window's blocks).
    shift_enabled: bool = True
    shift_threshold: float = 0.8
    shift_delta: float = 0.05
    #: Delta schema the worker writes: 2 (with the interest structure) or 1,
    #: for consumers not yet upgraded (README "Delta contract").
    delta_schema: int = 2
    #: How hard a query's negative phrases push matching items down.
    query_negative_strength: float = 2.0
    #: Only items more than this many standard deviations towards a negative
    #: phrase (less its part along the query's positives) are pushed.
    query_negative_margin: float = 0.25
    #: Cold start: a user with a query and fewer than ``popularity_cold_items``
    #: consumed items is ranked by the query composed with a popularity prior
    #: (what other newcomers consumed lately, counted by every worker in a
    #: store blob); off: by the query alone, and no counting.
    popularity_prior: bool = True
    popularity_cold_items: int = 1
    #: The query's weight against the prior (tuned on MovieLens-100K, where genre
    #: words add little; raise it where queries say more than popularity).
    popularity_query_weight: float = PopularityParams().query_weight
    #: The prior weighs m / (m + popularity_prior_events), m its counted events
    #: (decayed): a counter of a few users' events does not drown the query.
    popularity_prior_events: float = PopularityParams().prior_events
    #: The counts go to the store once this many are pending, or this long
    #: after the last write (at most one write per micro-batch).
    popularity_flush_events: int = 200
    popularity_flush_seconds: float = 5.0
    #: How much each behaviour type moves the state (a rating scales by its stars).
    weight_view: float = TYPE_WEIGHTS["view"]
    weight_click: float = TYPE_WEIGHTS["click"]
    weight_like: float = TYPE_WEIGHTS["like"]
    weight_purchase: float = TYPE_WEIGHTS["purchase"]
    weight_rating: float = TYPE_WEIGHTS["rating"]
    weight_skip: float = TYPE_WEIGHTS["skip"]
    weight_dislike: float = TYPE_WEIGHTS["dislike"]
    weight_query: float = TYPE_WEIGHTS["query"]
    #: Bounds on a behaviour's numbers; outside them it is dead-lettered
    #: (``out_of_range``, ``ts_before_epoch``, ``ts_future``).
    max_abs_weight: float = 100.0
    rating_min: float = 0.0
    rating_max: float = 10.0
    min_event_ts: float = 0.0
    max_future_skew_seconds: float = 86400.0
    #: Past this many catalogue items, ranking fetches candidates from an HNSW
    #: index (models/ann.py) instead of scoring every item; 0: always exact.
    #: benchmarks/ann_index.py, p99 of one user's ranking: exact 25 ms at 10,000
    #: items, 33 ms at 20,000, 227 ms at 100,000; through the index 12-17 ms.
    ann_min_items: int = 10_000
    #: Items each of a user's directions fetches from the index: recall@10 of the
    #: lists against exact ranking 1.000 (clustered) / 0.990 (loose) at 100,000.
    ann_candidates: int = 50
    #: The HNSW graph's degree (M), build breadth and search breadth (ef).
    ann_connectivity: int = 16
    ann_ef_construction: int = 100
    ann_ef_search: int = 64
    batch_max: int = 500
    #: How long a micro-batch waits to fill (latency against per-batch overhead).
    #: Faust waits this long after every batch, even with records queued, so it
    #: is paid once per batch, not once per idle spell: at 40 events/s on the
    #: embedded broker, 0.005 gave p50 41 ms / p99 85 ms against 0.02's 65 / 136
    #: (interleaved runs; 0.002 no better). > 0: Faust stalls without a timeout.
    batch_within_seconds: float = 0.005
    #: Small on the embedded broker: it waits this long for group joins.
    rebalance_timeout_seconds: float = 6.0
    session_timeout_seconds: float = 6.0
    #: Kafka static membership (KIP-345), one distinct id per worker process
    #: (e.g. the pod name); empty: dynamic membership. A worker restarted with
    #: its id gets its partitions back at once instead of after the dead one's
    #: ``session_timeout_seconds``; but a worker stopped for good keeps its
    #: partitions unread until that timeout, as static members send no leave.
    group_instance_id: str = ""
    #: A worker whose consumer-group rebalance has not completed after this
    #: many seconds of the broker and the store answering exits with 75 for
    #: its supervisor to restart it (`streams.rebalance_watch`: Faust can stay
    #: stuck after an outage); 0: never. Checked by the health prober
    #: (``health_port`` set).
    rebalance_stuck_seconds: float = 60.0
    commit_interval_seconds: float = 1.0
    #: Longest a fetch waits on the broker for data (Faust's own is 1.5 s). The
    #: embedded tansu holds an idle fetch the whole wait; Apache Kafka answers
    #: as soon as data arrives, so there it only sets how often an idle consumer
    #: asks. `interest-stream bench`: the pass-through's p50 at 200-400 events/s
    #: 67-74 ms with 100, 26-31 ms with 10.
    fetch_max_wait_ms: int = 10
    #: Threads of the BLAS under numpy in a worker (threadpoolctl); 0: the
    #: library's own default, one per core. A worker's matrices are small
    #: (a micro-batch's users against the catalogue): on two cores,
    #: `benchmarks/processor_cost.py --batch 250` took 1.9-2.1 ms/event for
    #: 1.9-2.0 ms of CPU with one thread, 2.1-2.2 ms/event for 3.3-3.4 ms of
    #: CPU with two (idle BLAS threads spin).
    blas_threads: int = 1
    log_level: str = "info"
    #: A micro-batch that took at least this long (processing and producing)
    #: is logged at INFO, the others at DEBUG; 0: every batch at INFO. A line
    #: per batch at INFO was 2.5% of the worker's GIL time at 100 events/s
    #: (py-spy --gil), and a hundred lines a second.
    batch_log_seconds: float = 1.0
    #: Health endpoints (GET /livez, GET /readyz) of each worker; port 0: no server.
    health_host: str = "0.0.0.0"
    health_port: int = 6066
    #: How often the store and the broker are probed for readiness.
    health_probe_seconds: float = 2.0
    #: /livez turns 503 when the worker's event loop has not run for this long.
    health_stall_seconds: float = 30.0
    #: How long the start-up may take before the loop's first stamp (the catalogue
    #: read and index build of a large catalogue; a Kubernetes startupProbe's role).
    health_startup_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise SettingsError("partitions must be >= 1")
        if self.store not in BACKENDS:
            raise SettingsError(f"unknown store {self.store!r} (known: {', '.join(BACKENDS)})")
        if not self.role_set or not self.role_set <= _ROLES:
            raise SettingsError(f"roles must be a comma-separated subset of {sorted(_ROLES)}")
        if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise SettingsError("sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            raise SettingsError(f"{self.security_protocol} needs sasl_username and sasl_password")
        for name in ("cassandra_read_consistency", "cassandra_write_consistency"):
            if getattr(self, name) not in _CONSISTENCY:
                raise SettingsError(f"{name} must be one of {sorted(_CONSISTENCY)}")
        try:
            parse_replication(self.cassandra_replication)
        except ValueError as exc:
            raise SettingsError(f"cassandra_replication: {exc}") from exc
        if self.group_instance_id and not _GROUP_INSTANCE_ID.fullmatch(self.group_instance_id):
            raise SettingsError(
                "group_instance_id must be 1-249 of the characters A-Z a-z 0-9 . _ - "
                f"(Kafka's rule for ids), not {self.group_instance_id!r}"
            )
        if self.encoder_device not in ("auto", "cpu", "cuda"):
            raise SettingsError("encoder_device must be auto, cpu or cuda")
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise SettingsError(f"encoder_precision must be one of {', '.join(ENCODER_PRECISIONS)}")
        # Faust reads a zero wait as "no timeout": a lone item would wait for a full batch.
        if not (self.encoder_batch_wait_ms > 0 and math.isfinite(self.encoder_batch_wait_ms)):
            raise SettingsError("encoder_batch_wait_ms must be a finite number > 0")
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise SettingsError(f"unknown security_protocol {self.security_protocol!r}")
        if not self.updater.strip():
            raise SettingsError("updater must be 'time-decay' or a learned-updater folder")
        try:
            self.limits()
        except ValueError as exc:
            raise SettingsError(f"record limits: {exc}") from exc
        if not (self.updater_watch_seconds >= 0 and math.isfinite(self.updater_watch_seconds)):
            raise SettingsError("updater_watch_seconds must be a finite number >= 0 (0: never)")
        if not (self.half_life_seconds > 0 and math.isfinite(self.half_life_seconds)):
            raise SettingsError("half_life_seconds must be a positive number")
        if not 0.0 <= self.short_term_weight <= 1.0:
            raise SettingsError("short_term_weight must be within [0, 1]")
        try:
            self._composition(), self._levels(), self._shift()
        except ValueError as exc:
            raise SettingsError(f"interest structure: {exc}") from exc
        try:
            self._ann()
        except ValueError as exc:
            raise SettingsError(f"approximate ranking: {exc}") from exc
        if self.delta_schema not in (1, 2):
            raise SettingsError("delta_schema must be 1 or 2")
        if not 0.0 < self.topic_decay <= 1.0:
            raise SettingsError("topic_decay must be within (0, 1]")
        if self.max_topics < 1 or self.query_negative_strength < 0:
            raise SettingsError("max_topics must be >= 1 and query_negative_strength >= 0")
        if not math.isfinite(self.query_negative_margin) or self.query_negative_margin < 0:
            raise SettingsError("query_negative_margin must be a finite number >= 0")
        if self.popularity_cold_items < 0 or self.popularity_flush_events < 1:
            raise SettingsError(
                "popularity_cold_items must be >= 0 and popularity_flush_events >= 1"
            )
        if not (math.isfinite(self.popularity_query_weight) and self.popularity_query_weight >= 0):
            raise SettingsError("popularity_query_weight must be a finite number >= 0")
        if not (math.isfinite(self.popularity_prior_events) and self.popularity_prior_events >= 0):
            raise SettingsError("popularity_prior_events must be a finite number >= 0")
        if not (
            self.popularity_flush_seconds >= 0 and math.isfinite(self.popularity_flush_seconds)
        ):
            raise SettingsError("popularity_flush_seconds must be a finite number >= 0")
        for t, w in self.type_weights().items():
            if not math.isfinite(w):
                raise SettingsError(f"weight_{t} must be a finite number")
        for name in (
            "top_k", "window_events", "batch_max", "encoder_batch_size", "encoder_batch_max",
            "replication_factor",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1")
        if self.blas_threads < 0:
            raise SettingsError("blas_threads must be >= 0 (0: the BLAS library's default)")
        if not self.health_host:
            raise SettingsError("health_host must not be empty")
        if not 0 <= self.health_port <= 65535:
            raise SettingsError("health_port must be within [0, 65535] (0: no health server)")
        if not (math.isfinite(self.batch_within_seconds) and self.batch_within_seconds > 0):
            raise SettingsError(
                "batch_within_seconds must be a finite number > 0 (Faust's take stalls without it)"
            )
        if not (math.isfinite(self.batch_log_seconds) and self.batch_log_seconds >= 0):
            raise SettingsError("batch_log_seconds must be a finite number >= 0 (0: every batch)")
        stuck = self.rebalance_stuck_seconds
        if not (stuck == 0 or (math.isfinite(stuck) and stuck > self.rebalance_timeout_seconds)):
            raise SettingsError(
                "rebalance_stuck_seconds must be 0 (never) or a finite number above "
                f"rebalance_timeout_seconds ({self.rebalance_timeout_seconds:g}), not {stuck!r}"
            )
        if self.fetch_max_wait_ms < 0:
            raise SettingsError("fetch_max_wait_ms must be >= 0")
        for name in ("health_probe_seconds", "health_stall_seconds", "health_startup_seconds"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be > 0")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown.append(f"{f.name}={'***' if f.name in _SECRETS and value else repr(value)}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    def to_env(self) -> dict[str, str]:
        """Environment variables that `load_settings` reads back as these settings."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def batching(self, agent: str) -> tuple[int, float]:
        """(max records, max wait in seconds) of ``agent``'s micro-batches.

        The items agent feeds the encoder, whose best batch differs from the
        behaviours agent's (and, on a GPU worker, from a CPU one's), so it has
        its own pair.
        """
        if agent == "items":
            return self.encoder_batch_max, self.encoder_batch_wait_ms / 1000
        return self.batch_max, self.batch_within_seconds

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def topics(self) -> Topics:
        return Topics(partitions=self.partitions, replication=self.replication_factor).prefixed(
            self.topic_prefix
        )

    @property
    def state_path(self) -> Path:
        return Path(self.data_dir) / "state.sqlite"

    def _updater(self) -> InterestUpdater:
        """The updater this worker runs; a learned one is loaded here, at worker start.

        Validation (``__post_init__``) never reads the file system: the folder
        is only opened when a worker (or the demo, or eval) asks for it.
        """
        if self.updater == "time-decay":
            return TimeDecayUpdater(self.half_life_seconds)
        from models.learned import ArtifactError, LearnedUpdater

        try:
            return LearnedUpdater.load(self.updater)
        except (ArtifactError, OSError) as exc:
            raise SettingsError(
                f"updater must be 'time-decay' or a learned-updater folder, not "
                f"{self.updater!r}: {exc}"
            ) from exc

    def limits(self) -> Limits:
        """The bounds `streams.codec` checks every behaviour's numbers against."""
        return Limits(
            max_abs_weight=self.max_abs_weight,
            rating_min=self.rating_min,
            rating_max=self.rating_max,
            min_ts=self.min_event_ts,
            max_future_skew_s=self.max_future_skew_seconds,
        )

    def core_params(self) -> CoreParams:
        return CoreParams(
            k=self.top_k,
            window=WindowSpec(self.window_events, self.window_seconds or None),
            updater=self._updater(),
            composition=self._composition(),
            levels=self._levels(),
            type_weights=self.type_weights(),
            topic_decay=self.topic_decay,
            negative_strength=self.query_negative_strength,
            negative_margin=self.query_negative_margin,
            shift=self._shift() if self.shift_enabled else None,
            popularity=PopularityParams(
                query_weight=self.popularity_query_weight,
                cold_items=self.popularity_cold_items,
                prior_events=self.popularity_prior_events,
            ),
            ann=self._ann(),
        )

    def _ann(self) -> AnnSpec:
        return AnnSpec(
            min_items=self.ann_min_items,
            candidates=self.ann_candidates,
            connectivity=self.ann_connectivity,
            ef_construction=self.ann_ef_construction,
            ef_search=self.ann_ef_search,
        )

    def _shift(self) -> ShiftSpec:
        return ShiftSpec(threshold=self.shift_threshold, delta=self.shift_delta)

    def _composition(self) -> CompositionSpec:
        return CompositionSpec(
            max_interests=self.max_interests,
            open_below=self.interest_open_below,
            merge_above=self.interest_merge_above,
            half_life_s=self.interest_half_life_seconds,
            temperature=self.interest_temperature,
            mode=self.interest_compose,
        )

    def _levels(self) -> LevelSpec:
        return LevelSpec(
            short_weight=self.short_term_weight,
            learned_short_weight=self.learned_short_term_weight,
            long_weight=self.long_term_weight,
            long_return_weight=self.long_term_return_weight,
            return_scale_s=self.return_scale_seconds,
            long_half_life_s=self.long_term_half_life_seconds,
        )

    def type_weights(self) -> dict[str, float]:
        """Behaviour type -> weight: the defaults, with ``weight_<type>`` settings applied."""
        return {t: float(getattr(self, f"weight_{t}")) for t in TYPE_WEIGHTS}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults < config file < environment < ``overrides`` (None values ignored)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config = env.get(ENV_PREFIX + "CONFIG")
    if config:
        try:
            values.update(tomllib.loads(Path(config).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config}: {exc}") from exc
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(Settings)}
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    return Settings(**{name: _coerce(name, value) for name, value in values.items()})


def _coerce(name: str, value: Any) -> Any:
    kind = type(getattr(Settings, name))
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: cannot read {value!r} as {kind.__name__}") from exc
