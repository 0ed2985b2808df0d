"""Nothing lost, nothing applied twice: kill -9 a worker mid-stream, restart it.

On the embedded engines (tansu and SQLite), with dynamic group membership:
the restart waits out the dead member's session. Apache Kafka + Apache
Cassandra get the same guarantee, and more, from
`tests/test_reliability_crash.py` (20,000 events, five kills, static
membership). This test ran on them too, for 18 s of every CI run; what it
added there, the dynamic-membership restart, the embedded run checks.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.admin import committed, ensure_topics, wait_committed
from streams.tail import TopicTail, ends_of, publish
from streams.worker import open_store, spawn_worker, stop_worker
from streams.workload import synthetic_workload, to_json_bytes
from tests.pipeline_fixtures import backend_settings

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("backend", ["embedded-sqlite"])
def test_kill_and_restart_applies_every_event_exactly_once(
    backend: str, request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    settings, bootstrap = backend_settings(backend, request, tmp_path, encoder_artifact)
    settings = settings.replace(
        top_k=10,
        batch_max=40,  # small batches: the kill lands between commits
        commit_interval_seconds=0.5,
    )
    topics = settings.topics
    ensure_topics(bootstrap, topics)
    w = synthetic_workload(users=12, items_per_tag=10, events_per_user=40, seed=9)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    log = tmp_path / "worker.log"
    worker = spawn_worker(settings, bootstrap, log)
    try:
        items = [(i["item_id"].encode(), to_json_bytes(i)) for i in w.items]
        wait_committed(bootstrap, settings.app_id, topics.items,
                       ends_of(publish(producer, topics.items, items)), timeout=90)  # fmt: skip
        records = [(e["user_id"].encode(), to_json_bytes(e)) for e in w.events]
        pool = ThreadPoolExecutor(1)
        publishing = pool.submit(publish, producer, topics.behaviours, records, rate=150)

        deadline = time.monotonic() + 60
        while sum(_committed(bootstrap, settings.app_id, topics.behaviours).values()) == 0:
            assert time.monotonic() < deadline, "the worker never committed"
            time.sleep(0.02)
        time.sleep(0.3)  # mid-way to the next commit: some applied batches are uncommitted
        worker.kill()  # no graceful shutdown: no final commit
        worker.wait()
        done = sum(committed(bootstrap, settings.app_id, topics.behaviours).values())
        assert done < len(records), "killed too late to test anything"
        ends = ends_of(publishing.result())
        pool.shutdown()

        worker = spawn_worker(settings, bootstrap, log)
        wait_committed(bootstrap, settings.app_id, topics.behaviours, ends, timeout=120,
                       alive=lambda: worker.poll() is None)  # fmt: skip
    finally:
        stop_worker(worker)
        producer.close()

    users = sorted({e["user_id"] for e in w.events})
    store = open_store(settings)
    states = store.get_states(users)
    store.close()
    for user in users:
        want = [e["event_id"] for e in w.events if e["user_id"] == user]
        assert states[user].events_applied == len(want), user
        assert sorted(states[user].recent_event_ids) == sorted(want), user

    with TopicTail(bootstrap, {topics.deltas: settings.partitions}) as tail:
        time.sleep(2)
        deltas = [json.loads(r.value) for r in tail.records()]
    for user in users:
        mine = [d for d in deltas if d["user_id"] == user]
        # in partition order; a delta restated after the restart may repeat a
        # version (downstream drops it), a version never goes back
        versions = [d["version"] for d in mine]
        assert versions == sorted(versions) and versions[-1] <= states[user].version
        applied = [
            i for d in mine if d["cause"]["kind"] != "replay" for i in d["cause"]["event_ids"]
        ]
        assert len(applied) == len(set(applied)), f"{user}: an event was applied twice"


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Committed offsets; none yet while Kafka still elects the group coordinator."""
    try:
        return committed(bootstrap, group, topic)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return {}
