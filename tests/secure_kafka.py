"""Helpers of the security tests (``test_kafka_sasl.py``, ``test_kafka_tls.py``).

Client settings for a security protocol, one aiokafka connection with the
credentials Faust gets from them, and a real worker run over a secured
listener whose deltas must equal an offline replay (the check of
``test_pipeline_e2e.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaProducer

from streams.admin import ensure_topics, wait_committed
from streams.app import _credentials
from streams.ports import free_port
from streams.security import kafka_security
from streams.settings import Settings
from streams.snapshot import request_snapshots
from streams.tail import Received, TopicTail, ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import open_store, spawn_worker, stop_worker
from tests.test_pipeline_e2e import assert_deltas_replay, event_records, item_records, scenario


def secure_settings(
    protocol: str,
    *,
    mechanism: str = "PLAIN",
    user: str = "",
    password: str = "",
    ca_file: Path | str = "",
    **extra: Any,
) -> Settings:
    """Settings of a client on ``protocol`` with its own app id and topics."""
    run = uuid.uuid4().hex[:8]
    name = protocol.lower().replace("_", "")
    return Settings(
        app_id=f"interest-stream-{name}-{run}",
        topic_prefix=f"{name}{run}-",
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=user,
        sasl_password=password,
        ssl_ca_file=str(ca_file),
        **{"health_host": "127.0.0.1", "health_port": free_port(), **extra},
    )


def aiokafka_connect(address: str, settings: Settings, timeout: float = 10.0) -> None:
    """One aiokafka connection (TLS handshake, SASL login as configured) with the
    credentials Faust gets from ``settings``; raises what aiokafka raises."""
    host, port = address.rsplit(":", 1)
    auth = credentials_to_aiokafka_auth(_credentials(settings))

    async def connect() -> None:
        conn = await create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **auth)
        conn.close()

    asyncio.run(asyncio.wait_for(connect(), timeout))


def assert_worker_publishes_exact_deltas(
    address: str, settings: Settings, encoder_artifact: Path, tmp_path: Path, label: str
) -> None:
    """Run a worker with ``settings`` against ``address``, feed it a small
    scenario through clients with the same security settings, and check its
    deltas against an offline replay of the same batches."""
    settings = settings.replace(
        data_dir=str(tmp_path), encoder_cache=str(encoder_artifact.parent), top_k=5
    )
    security = kafka_security(settings)
    topics = settings.topics
    ensure_topics(address, topics, **security)
    items, events = scenario(f"{label}-", users=2, events=10)
    applied = Counter(e["user_id"] for e in events)
    with _worker(settings, address, tmp_path / "worker.log") as worker:
        producer = KafkaProducer(
            bootstrap_servers=address, max_request_size=MAX_MESSAGE_BYTES, **security
        )
        tail = TopicTail(address, {topics.deltas: settings.partitions}, **security)
        try:
            with tail:
                for topic, records in (
                    (topics.items, item_records(items)),
                    (topics.behaviours, event_records(events)),
                ):
                    positions = publish(producer, topic, records)
                    wait_committed(
                        address,
                        settings.app_id,
                        topic,
                        ends_of(positions),
                        timeout=60,
                        alive=lambda: worker.poll() is None,
                        **security,
                    )
                got = tail.wait_for(lambda recs: _covers(recs, applied), timeout=15)
        finally:
            producer.close()
        deltas = [json.loads(r.value) for r in got]

        def deltas_of(user: str) -> list[dict]:
            mine = (d for d in deltas if d["user_id"] == user)
            return sorted(mine, key=lambda d: d["version"])

        store = open_store(settings)  # the worker's store, opened again (SQLite WAL or Cassandra)
        try:
            assert_deltas_replay(settings, store, items, events, deltas_of)
        finally:
            store.close()
        # Snapshots on demand go through the same secured listener.
        snaps = request_snapshots(settings, address, list(applied), **security)
        for user, snap in snaps.items():
            last = deltas_of(user)[-1]
            assert (snap["version"], snap["top_k"]) == (last["version"], last["top_k"])


def _covers(records: list[Received], applied: Counter[str]) -> bool:
    """Do the deltas read so far account for every user's events?"""
    seen: dict[str, int] = {}
    for record in records:
        delta = json.loads(record.value)
        user = delta["user_id"]
        seen[user] = max(seen.get(user, 0), delta["interest"]["events"])
    return all(seen.get(user, 0) >= count for user, count in applied.items())


@contextlib.contextmanager
def _worker(settings: Settings, bootstrap: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """A spawned worker, stopped on exit; its log's tail is printed if the block fails."""
    worker = spawn_worker(settings, bootstrap, log_path)
    try:
        yield worker
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_worker(worker)
