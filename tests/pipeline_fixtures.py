"""Session fixtures for tests through a real broker: the embedded broker and
one worker process, started once; each test uses its own users and items.
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

from streams.broker import EmbeddedBroker, ensure_topics, wait_committed
from streams.settings import Settings
from streams.stores.sqlite import SqliteStore
from streams.tail import Received, TopicTail, ends_of, publish
from streams.worker import spawn_worker, stop_worker


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@dataclass
class Pipeline:
    """A running worker and handles to feed it and read what it produced."""

    bootstrap: str
    settings: Settings
    worker: subprocess.Popen
    producer: KafkaProducer
    tail: TopicTail
    log_path: Path

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

    def store(self) -> SqliteStore:
        """A second connection to the worker's store (SQLite WAL allows it)."""
        return SqliteStore(self.settings.state_path)


@pytest.fixture(scope="session")
def pipeline(
    embedded_broker: EmbeddedBroker,
    encoder_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    run = uuid.uuid4().hex[:8]
    data_dir = tmp_path_factory.mktemp("worker")
    settings = Settings(
        app_id=f"interest-stream-test-{run}",
        topic_prefix=f"t{run}-",
        data_dir=str(data_dir),
        encoder_cache=str(encoder_artifact.parent),
        top_k=5,
    )
    bootstrap = embedded_broker.bootstrap
    ensure_topics(bootstrap, settings.topics)
    log_path = data_dir / "worker.log"
    worker = spawn_worker(settings, bootstrap, log_path)
    topics = settings.topics
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    tail = TopicTail(bootstrap, {topics.deltas: settings.partitions, topics.dead_letters: 1})
    with tail:
        try:
            yield Pipeline(bootstrap, settings, worker, producer, tail, log_path)
        finally:
            producer.close()
            stop_worker(worker)
            print(log_path.read_text(errors="replace")[-3000:])
