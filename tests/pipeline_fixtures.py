"""Session fixtures for tests through a real broker, on four backends.

{embedded tansu broker, Apache Kafka} x {embedded SQLite store, Apache
Cassandra}: one worker process per backend, started once; each test uses its
own users and items. The real engines come from `tests.engine_fixtures`
(started through `deploy/`), only when a backend needs them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.admin import ensure_topics, wait_committed
from streams.embedded_broker import EmbeddedBroker
from streams.ports import free_port
from streams.settings import Settings
from streams.stores.base import Store
from streams.tail import Received, TopicTail, ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import open_store, spawn_worker, stop_worker


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


BACKENDS = ("embedded-sqlite", "kafka-sqlite", "embedded-cassandra", "kafka-cassandra")


@dataclass
class Pipeline:
    """A running worker and handles to feed it and read what it produced."""

    backend: str
    bootstrap: str
    settings: Settings
    worker: subprocess.Popen
    producer: KafkaProducer
    tail: TopicTail
    log_path: Path
    _store: Store | None = None

    def send(
        self, topic: str, records: list[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[int, int]]:
        """Produce, wait until the worker has processed and committed them.

        Returns the (partition, offset) of each record.
        """
        positions = publish(self.producer, topic, records)
        wait_committed(
            self.bootstrap,
            self.settings.app_id,
            topic,
            ends_of(positions),
            timeout=90,
            alive=lambda: self.worker.poll() is None,
        )
        time.sleep(0.3)  # outputs are flushed before the commit; let the tail read them
        return positions

    def deltas(self, user: str) -> list[dict]:
        values = [json.loads(r.value) for r in self.tail.records(self.settings.topics.deltas)]
        return sorted((v for v in values if v["user_id"] == user), key=lambda v: v["version"])

    def dead_letters(self) -> list[tuple[Received, dict]]:
        recs = self.tail.records(self.settings.topics.dead_letters)
        return [(r, json.loads(r.value)) for r in recs]

    def store(self) -> Store:
        """The worker's store, opened a second time (SQLite WAL allows it)."""
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def backend_settings(
    backend: str, request: pytest.FixtureRequest, data_dir: Path, encoder_artifact: Path
) -> tuple[Settings, str]:
    """Settings of a fresh worker on ``backend`` (own topics, group, keyspace) and its bootstrap."""
    run = uuid.uuid4().hex[:8]
    broker, store = backend.split("-")
    if broker == "kafka":
        bootstrap = request.getfixturevalue("kafka_engine").address
    else:
        bootstrap = request.getfixturevalue("embedded_broker").bootstrap
    extra: dict[str, object] = {}
    if store == "cassandra":
        engine = request.getfixturevalue("cassandra_engine")
        extra = {
            "store": "cassandra",
            "cassandra_contact_points": engine.host,
            "cassandra_port": engine.port,
            "cassandra_keyspace": f"t{run}",
        }
    settings = Settings(
        app_id=f"interest-stream-test-{run}",
        topic_prefix=f"t{run}-",
        data_dir=str(data_dir),
        encoder_cache=str(encoder_artifact.parent),
        top_k=5,
        # Many workers run at once: each serves /livez and /readyz on its own port.
        health_host="127.0.0.1",
        health_port=free_port(),
        **extra,
    )
    return settings, bootstrap


@pytest.fixture(scope="session", params=BACKENDS)
def pipeline(
    request: pytest.FixtureRequest,
    encoder_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    data_dir = tmp_path_factory.mktemp("worker")
    settings, bootstrap = backend_settings(request.param, request, data_dir, encoder_artifact)
    ensure_topics(bootstrap, settings.topics)
    if settings.store == "cassandra":
        open_store(settings).close()  # create the keyspace before the worker races for it
    log_path = data_dir / "worker.log"
    worker = spawn_worker(settings, bootstrap, log_path)
    topics = settings.topics
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES)
    tail = TopicTail(bootstrap, {topics.deltas: settings.partitions, topics.dead_letters: 1})
    with tail:
        pipe = Pipeline(request.param, bootstrap, settings, worker, producer, tail, log_path)
        try:
            yield pipe
        finally:
            pipe.close()
            producer.close()
            stop_worker(worker)
            print(log_path.read_text(errors="replace")[-3000:])
