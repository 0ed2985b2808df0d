"""Load tools shared by the load benchmark, the soak and the pass-through comparison.

- `endless_records`: a workload's events, replayed cycle after cycle with
  fresh user and event ids, so nothing is a duplicate.
- `WorkerRun`: a fresh worker (own group, topics, data folder) on a broker:
  the pipeline (`interest-stream worker`) or the bare Faust pass-through
  (`run_passthrough_worker`), started and known to be consuming.
- `OpenLoopProducer`: offers records at a fixed rate whatever the consumer
  does (open loop), so a consumer that falls behind shows as lag, not as a
  slower producer.
- `DeltaLatencies`: reads the output topic as it fills and keeps the
  event-to-delta latency of every record, not the records.
- `Probe`: a worker's memory and CPU (``/proc``) and its group's lag.
- `find_max_rate`: the unpaced throughput of a saturating batch (the soak's
  first phase).
- `encode_items` and `Preload`: a bigger catalogue, encoded once here and
  written into a pipeline worker's store before it starts, as its items
  agent would have left it (the worker then loads it, and does not encode
  it, as a restarted worker does).

``interest-stream bench`` (`streams.bench`), ``benchmarks/soak.py`` and
``benchmarks/pipeline_vs_passthrough.py`` use them.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streams import codec
from streams.admin import admin_client, delete_topics, ensure_topics, wait_committed
from streams.ports import free_port
from streams.processor import content_hash
from streams.security import kafka_security
from streams.settings import Settings, load_settings
from streams.stores.base import StoredItem
from streams.tail import ends_of, publish
from streams.worker import spawn_worker, stop_worker
from streams.workload import Workload, synthetic_workload, to_json_bytes

#: The two kinds of worker `WorkerRun` starts.
PIPELINE, PASSTHROUGH = "pipeline", "passthrough"
#: Workers start in parallel, but their topics are created one set at a time: Apache
#: Kafka described topics created concurrently as having 0 partitions.
_CREATING = threading.Lock()


# -- workload -------------------------------------------------------------------------------

USERS_PER_CYCLE = 500
EVENTS_PER_USER = 60
ITEMS_PER_TAG = 60  # the demo's catalogue: 480 items over 8 tags


def load_workload(seed: int) -> Workload:
    """The load benchmarks' workload: 500 users x 60 events over the demo's 480 items."""
    return synthetic_workload(users=USERS_PER_CYCLE, events_per_user=EVENTS_PER_USER,
                              items_per_tag=ITEMS_PER_TAG, seed=seed)  # fmt: skip


def machine(load_start: float, note: str) -> dict[str, object]:
    """The machine a load run ran on, with its load average at the start and now."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_1m_start": round(load_start, 2),
        "load_1m_end": round(os.getloadavg()[0], 2),
        "note": note,
    }


def endless_records(workload: Workload) -> Iterator[tuple[bytes, bytes]]:
    """The workload's events as (key, value) records, cycle after cycle, never repeating.

    Cycle ``c`` renames user ``u001`` to ``c{c:04d}-u001`` and suffixes event ids
    with ``-c{c:04d}``: fresh users and ids, the same catalogue and event mix.
    """
    for cycle in itertools.count():
        tag = f"c{cycle:04d}"
        for event in workload.events:
            user = f"{tag}-{event['user_id']}"
            renamed = {**event, "user_id": user, "event_id": f"{event['event_id']}-{tag}"}
            yield user.encode(), to_json_bytes(renamed)


# -- a bigger catalogue -----------------------------------------------------------------------

#: Texts per cached embedding file: an encoding stopped midway keeps the chunks it finished.
ENCODE_CHUNK = 4096
#: Rows per store write when a catalogue is preloaded.
WRITE_CHUNK = 2000


@dataclass(frozen=True)
class Preload:
    """Items for a pipeline worker's store, as its items agent would have written them.

    Attributes
    ----------
    rows
        Store rows: vector, title, tags and the content hash the items agent
        keys its embedding cache on (`streams.processor.content_hash`).
    texts
        What the items agent encodes for each row (`codec.decode_item`'s
        text), which the shared topic model learns from.
    encode_s
        Seconds `encode_items` took, cached chunks included.
    chunks_cached
        How many of its ``ENCODE_CHUNK`` chunks were read from the embedding cache.
    chunks
        How many chunks there were.
    """

    rows: list[StoredItem]
    texts: list[str]
    encode_s: float
    chunks_cached: int
    chunks: int


def encode_items(
    items: Sequence[dict],
    encoder_cache: str,
    *,
    precision: str = "fp32",
    progress: Callable[[int], None] = lambda done: None,
) -> Preload:
    """Encode ``items`` (``items`` topic values) once, with the export the workers run.

    Each value goes through the items agent's decoder, so the text encoded
    and its content hash are the ones the worker would compute. fp32 vectors
    are cached on disk per ``ENCODE_CHUNK`` texts (`models.encoder.embedding_cache`,
    keyed on the export and the texts): a second run reads them in seconds.
    Another precision is encoded on every run, on the CPU. ``progress`` gets
    the number of items done after each chunk. A value the decoder refuses
    is a ValueError.
    """
    from models.encoder import OnnxEncoder
    from models.encoder.artifact import find_exported
    from models.encoder.embedding_cache import (
        cache_key,
        cached_embeddings,
        default_embedding_cache_dir,
    )

    artifact = find_exported(Path(encoder_cache))
    if artifact is None:
        raise ValueError(f"no encoder export in {encoder_cache} (`interest-stream models export`)")
    decoded = []
    for item in items:
        update = codec.decode_item(item["item_id"].encode(), to_json_bytes(item))
        if not isinstance(update, codec.ItemUpdate):
            raise ValueError(f"generated item {item['item_id']!r} does not decode: {update}")
        decoded.append(update)
    texts = [u.text for u in decoded]
    started = time.perf_counter()
    encoder = (
        None if precision == "fp32" else OnnxEncoder(artifact, device="cpu", precision=precision)
    )
    name = OnnxEncoder.name if encoder is None else encoder.name
    vectors, cached = [], 0
    chunks = range(0, len(texts), ENCODE_CHUNK)
    for start in chunks:
        chunk = texts[start : start + ENCODE_CHUNK]
        if encoder is None:
            cached += (
                default_embedding_cache_dir() / f"{cache_key(chunk, artifact)}.npy"
            ).is_file()
            vectors.append(cached_embeddings(chunk, artifact))
        else:
            vectors.append(encoder.encode(chunk))
        progress(start + len(chunk))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    rows = [
        StoredItem(u.item_id, matrix[k], u.title, u.tags, content_hash(name, u.text))
        for k, u in enumerate(decoded)
    ]
    return Preload(rows, texts, round(time.perf_counter() - started, 2), cached, len(chunks))


def write_preload(settings: Settings, preload: Preload) -> dict[str, float]:
    """Write ``preload`` into the store ``settings`` name, as the items agent would.

    The agent's order: the shared topic model learns the items first (when
    ``topics_enabled``), then the rows go to the store, whose change feed
    the worker's catalogue reads. Returns the seconds each took.
    """
    from streams.shared_topics import SharedTopics
    from streams.stores import open_store

    store = open_store(settings)
    try:
        started = time.perf_counter()
        if settings.topics_enabled and preload.rows:
            shared = SharedTopics(store, len(preload.rows[0].vector),
                                  max_topics=settings.max_topics)  # fmt: skip
            shared.learn(
                [
                    (r.item_id, r.vector, t)
                    for r, t in zip(preload.rows, preload.texts, strict=True)
                ],
                [],
            )
        learned = time.perf_counter()
        for start in range(0, len(preload.rows), WRITE_CHUNK):
            store.put_items(preload.rows[start : start + WRITE_CHUNK])
        written = time.perf_counter()
    finally:
        store.close()
    return {"topics_s": round(learned - started, 2), "store_write_s": round(written - learned, 2)}


# -- the bare Faust pass-through --------------------------------------------------------------


def run_passthrough_worker() -> None:
    """The bare Faust pass-through (child process; settings from the environment).

    Consumes ``behaviours`` with the pipeline's batching, fetch and commit
    settings and produces every record unchanged to the deltas topic, with
    its original timestamp, so a reader measures produce-to-receive latency
    the way it does for the pipeline's deltas (``cause.source_ts_ms``).
    """
    import faust

    from streams import transport
    from streams.faust_tables import TablelessManager

    settings = load_settings()
    topics = settings.topics
    app = faust.App(
        settings.app_id,
        broker=f"{transport.SCHEME}://{settings.bootstrap_servers}",
        store="memory://",
        datadir=str(Path(settings.data_dir) / "faust"),
        web_enabled=False,
        autodiscover=False,
        topic_allow_declare=False,
        broker_commit_interval=settings.commit_interval_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        TableManager=TablelessManager,  # as the pipeline's worker (streams.app.app_config)
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    out = app.topic(topics.deltas, **raw)

    @app.agent(app.topic(topics.behaviours, **raw), name="passthrough")
    async def passthrough(stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            settings.batch_max, within=settings.batch_within_seconds
        ):
            futures = [
                await out.send(
                    key=e.message.key, value=e.message.value, timestamp=e.message.timestamp
                )
                for e in events
            ]
            await asyncio.gather(*futures)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def spawn_passthrough(settings: Settings, bootstrap: str, log: Path) -> subprocess.Popen:
    """Start `run_passthrough_worker` as a child process with ``settings``."""
    return spawn_worker(settings, bootstrap, log, ("streams.loadtest", "--passthrough-worker"))


# -- one worker on its own topics -------------------------------------------------------------


@dataclass
class WorkerRun:
    """A fresh worker (own group, topics, data folder) that is consuming.

    The pipeline has taken the catalogue; the pass-through has forwarded one
    warm record. ``base`` carries the broker's security, the store (SQLite
    or Cassandra) and any setting a benchmark sweeps.
    """

    settings: Settings
    bootstrap: str
    worker: subprocess.Popen
    producer: KafkaProducer
    kind: str = PIPELINE
    security: dict[str, object] = field(default_factory=dict)
    #: Seconds the start took: writing a `Preload` (``topics_s``, ``store_write_s``),
    #: and from the worker's spawn to its taking the catalogue (``ready_s``).
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        bootstrap: str,
        phase: str,
        workload: Workload,
        encoder_cache: str,
        *,
        base: Settings | None = None,
        kind: str = PIPELINE,
        name: str = "soak",
        ready_timeout: float = 300.0,
        preload: Preload | None = None,
    ) -> WorkerRun:
        """Start a worker; a pipeline's store first gets ``preload``, its catalogue's rest.

        The pipeline is ready once it committed ``workload.items`` on the
        items topic (it encodes those itself); the preloaded items it reads
        from its store at start, and builds their index there when the
        catalogue is past ``ann_min_items``.
        """
        if kind not in (PIPELINE, PASSTHROUGH):
            raise ValueError(f"kind must be {PIPELINE!r} or {PASSTHROUGH!r}, not {kind!r}")
        if preload is not None and kind != PIPELINE:
            raise ValueError("only a pipeline worker has a catalogue to preload")
        run = uuid.uuid4().hex[:8]
        settings = (base or Settings()).replace(
            app_id=f"{name}-{phase}-{run}",
            topic_prefix=f"{name}-{phase}-{run}-",
            data_dir=tempfile.mkdtemp(prefix=f"{name}-{phase}-"),
            encoder_cache=encoder_cache,
            health_host="127.0.0.1",
            health_port=free_port(),  # other workers on this machine may hold the default
        )
        if settings.store == "cassandra":  # a keyspace of its own, like the topics
            settings = settings.replace(cassandra_keyspace=f"{name}_{phase}_{run}")
        security = kafka_security(settings)
        with _CREATING:
            ensure_topics(bootstrap, settings.topics, **security)
        timings = write_preload(settings, preload) if preload is not None else {}
        log = Path(settings.data_dir) / "worker.log"
        spawn = spawn_worker if kind == PIPELINE else spawn_passthrough
        spawned = time.perf_counter()
        worker = spawn(settings, bootstrap, log)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **security)
        started = cls(settings, bootstrap, worker, producer, kind, security, timings)
        try:
            topics = settings.topics
            if kind == PIPELINE:
                items = [(i["item_id"].encode(), to_json_bytes(i)) for i in workload.items]
                started.wait(topics.items, publish(producer, topics.items, items), ready_timeout)
            else:
                warm = [(b"warm", b"{}")]
                started.wait(
                    topics.behaviours, publish(producer, topics.behaviours, warm), ready_timeout
                )
        except BaseException:
            started.close()
            raise
        started.timings["ready_s"] = round(time.perf_counter() - spawned, 2)
        return started

    def alive(self) -> bool:
        return self.worker.poll() is None

    def wait(self, topic: str, positions: list[tuple[int, int]], timeout: float) -> None:
        """Block until the worker has committed ``positions`` of ``topic``."""
        wait_committed(self.bootstrap, self.settings.app_id, topic, ends_of(positions),
                       timeout=timeout, alive=self.alive, **self.security)  # fmt: skip

    def log_tail(self, lines: int = 30) -> str:
        path = Path(self.settings.data_dir) / "worker.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def store_bytes(self) -> int:
        """Size of the SQLite store with its write-ahead log."""
        base = Path(self.settings.state_path)
        return sum(p.stat().st_size for p in (base, Path(f"{base}-wal")) if p.exists())

    def close(self, keep_data: bool = False) -> None:
        """Stop the worker, drop the topics (tansu keeps them in memory) and the data."""
        self.producer.close()
        stop_worker(self.worker)
        try:
            delete_topics(self.bootstrap, self.settings.topics, **self.security)
        except KafkaError as exc:
            print(f"could not delete the topics of {self.settings.app_id}: {exc!r}", flush=True)
        if keep_data:
            print(f"kept {self.settings.data_dir} (worker.log, state.sqlite)", flush=True)
        else:
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)


# -- the unpaced maximum ----------------------------------------------------------------------


def find_max_rate(
    bootstrap: str, workload: Workload, encoder_cache: str, *, quick: bool, keep_data: bool
) -> dict[str, object]:
    """Unpaced throughput of a saturating batch, after an untimed warm batch.

    The batch is sized to take about 45 s at the warm batch's rate (8 s with
    ``quick``); the rate is its event count over the time from its first
    produce to the worker's last committed offset.
    """
    warm_events, target_s = (1_000, 8.0) if quick else (5_000, 45.0)
    records = endless_records(workload)
    run = WorkerRun.start(bootstrap, "max", workload, encoder_cache)
    topic = run.settings.topics.behaviours
    try:
        t0 = time.perf_counter()
        warm = list(itertools.islice(records, warm_events))
        run.wait(topic, publish(run.producer, topic, warm), 300)
        warm_rate = warm_events / (time.perf_counter() - t0)
        n = int(min(max(warm_rate * target_s, 2_000), 400_000))
        batch = list(itertools.islice(records, n))
        print(f"max-rate phase: warm batch {warm_rate:,.0f} events/s; timing {n:,} events",
              flush=True)  # fmt: skip
        t0 = time.perf_counter()
        run.wait(topic, publish(run.producer, topic, batch), 900)
        elapsed = time.perf_counter() - t0
    finally:
        run.close(keep_data)
    return {
        "definition": "unpaced throughput of a saturating batch: events / (first produce to "
        "last committed offset), after an untimed warm batch",
        "warm_events": warm_events,
        "warm_events_per_s": round(warm_rate, 1),
        "timed_events": n,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(n / elapsed, 1),
    }


# -- open-loop load ---------------------------------------------------------------------------


class OpenLoopProducer(threading.Thread):
    """Offers ``rate`` records/s for ``duration`` seconds on a fixed schedule.

    Every few milliseconds it sends all records due by then: if sending falls
    behind (a busy CPU), the next tick catches up, so the offered rate stays
    ``rate``. ``behind_max_s`` is how far the sends trailed the schedule at
    worst; ``done_at`` the monotonic time the last record was flushed.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        records: Iterator[tuple[bytes, bytes]],
        rate: float,
        duration: float,
    ) -> None:
        super().__init__(name="open-loop-producer", daemon=True)
        self.producer, self.topic, self.records = producer, topic, records
        self.rate, self.total = rate, max(1, round(rate * duration))
        self.sent = 0
        self.errors = 0
        self.behind_max_s = 0.0  # how far the schedule got ahead of the sends, at worst
        self.done_at: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while self.sent < self.total and not self._halt.is_set():
            now = time.monotonic()
            due = min(self.total, int((now - start) * self.rate) + 1)
            self.behind_max_s = max(self.behind_max_s, (due - self.sent) / self.rate)
            for key, value in itertools.islice(self.records, due - self.sent):
                future = self.producer.send(self.topic, key=key, value=value)
                future.add_errback(self._failed)
                self.sent += 1
            time.sleep(max(start + self.sent / self.rate - time.monotonic(), 0.005))
        self.producer.flush()
        self.done_at = time.monotonic()

    def _failed(self, _exc: Exception) -> None:
        self.errors += 1

    def stop(self) -> None:
        self._halt.set()


def delta_source_ms(record: object) -> tuple[float, float] | None:
    """(source, published) times in ms of a pipeline delta caused by events, else None.

    ``cause.source_ts_ms`` is the produce time of the newest input record of
    the delta's batch; the delta record's own timestamp is when the worker sent it.
    """
    cause = json.loads(record.value)["cause"]
    if cause["kind"] == "events" and cause["source_ts_ms"] is not None:
        return cause["source_ts_ms"], record.timestamp
    return None


def forwarded_source_ms(record: object) -> tuple[float, float] | None:
    """(source, published) of a pass-through record: it keeps the input's timestamp."""
    if record.key == b"warm":
        return None
    return record.timestamp, record.timestamp


class DeltaLatencies(threading.Thread):
    """Reads the deltas as they arrive; keeps event-to-delta latencies, not the records.

    Two latencies per delta of kind ``events``: *received* (when this reader
    got it, minus ``cause.source_ts_ms``: what a downstream consumer sees) and
    *published* (the delta record's own timestamp, set by the worker's
    producer, minus ``source_ts_ms``: the worker's part alone, whatever this
    reader's own delay). ``positions`` is how far it has read, for its lag.
    ``source_of`` reads a record's times (`delta_source_ms`, or
    `forwarded_source_ms` for the pass-through); ``from_end`` starts at the
    current end of the topic instead of its beginning.
    """

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        *,
        source_of: Callable[[object], tuple[float, float] | None] = delta_source_ms,
        from_end: bool = False,
        **security: object,
    ) -> None:
        super().__init__(name="delta-latencies", daemon=True)
        topics = settings.topics
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,  # receive times measure latency: do not park fetches
            **security,
        )
        self.parts = [TopicPartition(topics.deltas, p) for p in range(settings.partitions)]
        self._consumer.assign([*self.parts, TopicPartition(topics.dead_letters, 0)])
        self.positions = {tp.partition: 0 for tp in self.parts}
        if from_end:
            for tp, end in self._consumer.end_offsets(self.parts).items():
                self._consumer.seek(tp, end)
                self.positions[tp.partition] = end
        self._source_of = source_of
        self._deltas_topic = topics.deltas
        self._lock = threading.Lock()
        self._received: list[float] = []
        self._published: list[float] = []
        self.all_ms = array.array("d")  # every received latency, for whole-run percentiles
        self.all_published_ms = array.array("d")
        self.all_at = array.array("d")  # when each was received (monotonic)
        self.deltas = 0
        self.dead_letters = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for tp, batch in self._consumer.poll(100).items():
                    now, mono = time.time(), time.monotonic()
                    if tp.topic != self._deltas_topic:
                        self.dead_letters += len(batch)
                        continue
                    received, published = [], []
                    for rec in batch:
                        times = self._source_of(rec)
                        if times is not None:
                            received.append(now * 1000 - times[0])
                            published.append(times[1] - times[0])
                    with self._lock:
                        self.deltas += len(batch)
                        self.positions[tp.partition] = batch[-1].offset + 1
                        self._received.extend(received)
                        self._published.extend(published)
                        self.all_ms.extend(received)
                        self.all_published_ms.extend(published)
                        self.all_at.extend([mono] * len(received))
        finally:
            self._consumer.close()

    def take_interval(self) -> tuple[list[float], list[float], int]:
        """(received, published) latencies since the last call, and the offsets read."""
        with self._lock:
            got = self._received, self._published, sum(self.positions.values())
            self._received, self._published = [], []
        return got

    def read(self) -> int:
        """Offsets read so far, summed over the deltas partitions."""
        with self._lock:
            return sum(self.positions.values())

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class Probe:
    """Reads a worker's memory and CPU from /proc and its group's lag from the broker."""

    def __init__(self, bootstrap: str, settings: Settings, pid: int, **security: object) -> None:
        self.pid, self.group = pid, settings.app_id
        self.topic = settings.topics.behaviours
        self._parts = [TopicPartition(self.topic, p) for p in range(settings.partitions)]
        self._admin = admin_client(bootstrap, **security)
        self._offsets = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, **security
        )
        self._ticks = os.sysconf("SC_CLK_TCK")

    def rss_mib(self, pid: int | None = None) -> float:
        return _status_kib(pid or self.pid, "VmRSS") / 1024

    def cpu_s(self) -> float:
        """User + system CPU seconds the worker has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def progress(self) -> tuple[int, int]:
        """(log end offsets, committed offsets) summed over the behaviours partitions."""
        lags = self.lag_by_partition()
        return sum(end for end, _ in lags), sum(done for _, done in lags)

    def ends(self, parts: list[TopicPartition]) -> int:
        """Log end offsets of ``parts``, summed."""
        return sum(self._offsets.end_offsets(parts).values())

    def lag_by_partition(self) -> list[tuple[int, int]]:
        """(log end offset, committed offset) of each behaviours partition."""
        ends = self._offsets.end_offsets(self._parts)
        for attempt in range(5):
            try:
                offsets = self._admin.list_group_offsets(self.group).get(self.group, {})
                break
            except KafkaError as exc:
                if not exc.retriable or attempt == 4:
                    raise
                time.sleep(0.2)
        done = {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == self.topic}
        return [(ends[tp], max(0, done.get(tp.partition, 0))) for tp in self._parts]

    def close(self) -> None:
        self._admin.close()
        self._offsets.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def broker_pid() -> int | None:
    """The embedded broker: the `tansu` child of this process."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        if comm == "tansu" and int(rest.split()[1]) == me:
            return int(stat.parent.name)
    return None


if __name__ == "__main__":
    if sys.argv[1:] != ["--passthrough-worker"]:
        sys.exit("usage: python -m streams.loadtest --passthrough-worker (settings from the env)")
    run_passthrough_worker()
