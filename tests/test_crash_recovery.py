"""Nothing lost, nothing applied twice: kill -9 a worker mid-stream, restart it."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.broker import EmbeddedBroker, committed, ensure_topics, wait_committed
from streams.settings import Settings
from streams.stores.sqlite import SqliteStore
from streams.tail import TopicTail, ends_of, publish
from streams.worker import spawn_worker, stop_worker
from streams.workload import synthetic_workload, to_json_bytes

pytestmark = pytest.mark.broker


def test_kill_and_restart_applies_every_event_exactly_once(
    embedded_broker: EmbeddedBroker, encoder_artifact: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"crash-{run}",
        topic_prefix=f"c{run}-",
        data_dir=str(tmp_path),
        encoder_cache=str(encoder_artifact.parent),
        batch_max=40,  # small batches: the kill lands between commits
        commit_interval_seconds=0.5,
    )
    bootstrap, topics = embedded_broker.bootstrap, settings.topics
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
        while sum(committed(bootstrap, settings.app_id, topics.behaviours).values()) == 0:
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
    store = SqliteStore(settings.state_path)
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
