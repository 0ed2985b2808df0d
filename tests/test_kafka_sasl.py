"""Tier 3: SASL_PLAINTEXT against the session's Apache Kafka, PLAIN and SCRAM.

A real worker authenticates with the settings' credentials (Faust/aiokafka via
``streams.app._credentials``; topics, commits and the tail via kafka-python and
``streams.broker.kafka_security``) and publishes deltas. A wrong password is
refused: aiokafka raises SaslAuthenticationFailed at once; kafka-python 3 only
times out (bounded by ``bootstrap_timeout_ms``) and logs the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.app import _credentials
from streams.broker import admin_client, ensure_topics, kafka_security, wait_committed
from streams.settings import Settings
from streams.tail import TopicTail, ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import spawn_worker, stop_worker
from tests.engine_fixtures import SaslKafka
from tests.test_pipeline_e2e import event_records, item_records, scenario

pytestmark = pytest.mark.broker

#: Mechanism -> the user that logs in with it (both users know every mechanism).
WORKER_LOGINS = {"PLAIN": "alice", "SCRAM-SHA-256": "bob"}


def sasl_settings(mechanism: str, user: str, password: str, **extra: Any) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"interest-stream-sasl-{run}",
        topic_prefix=f"sasl{run}-",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username=user,
        sasl_password=password,
        **extra,
    )


def aiokafka_login(address: str, settings: Settings, timeout: float = 10.0) -> None:
    """One aiokafka connection with the credentials Faust gets from ``settings``."""
    host, port = address.rsplit(":", 1)
    auth = credentials_to_aiokafka_auth(_credentials(settings))

    async def login() -> None:
        conn = await create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **auth)
        conn.close()

    asyncio.run(asyncio.wait_for(login(), timeout))


@pytest.fixture(params=sorted(WORKER_LOGINS), ids=str.lower)
def mechanism(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("login", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_every_user_logs_in_with_kafka_python_and_aiokafka(
    kafka_sasl_engine: SaslKafka, login: str
) -> None:
    for user, password in kafka_sasl_engine.users.items():
        settings = sasl_settings(login, user, password)
        admin = admin_client(kafka_sasl_engine.address, **kafka_security(settings))
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        aiokafka_login(kafka_sasl_engine.address, settings)


def test_worker_publishes_deltas_over_sasl(
    kafka_sasl_engine: SaslKafka,
    mechanism: str,
    encoder_artifact: Path,
    tmp_path: Path,
) -> None:
    user = WORKER_LOGINS[mechanism]
    address = kafka_sasl_engine.address
    settings = sasl_settings(
        mechanism,
        user,
        kafka_sasl_engine.users[user],
        data_dir=str(tmp_path),
        encoder_cache=str(encoder_artifact.parent),
        top_k=5,
    )
    security = kafka_security(settings)
    ensure_topics(address, settings.topics, **security)
    topics = settings.topics
    items, events = scenario(f"sasl-{mechanism.lower()}-", users=2, events=10)
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
                users = {e["user_id"] for e in events}
                got = tail.wait_for(
                    lambda recs: users <= {json.loads(r.value)["user_id"] for r in recs},
                    timeout=15,
                )
        finally:
            producer.close()
    deltas = [json.loads(r.value) for r in got]
    for user_id in users:
        mine = [d for d in deltas if d["user_id"] == user_id]
        assert mine, f"no deltas for {user_id}"
        assert all(d["added"] or d["reranked"] or d["removed"] for d in mine)


@pytest.mark.parametrize("refused", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_is_refused(kafka_sasl_engine: SaslKafka, refused: str) -> None:
    user = next(iter(kafka_sasl_engine.users))
    settings = sasl_settings(refused, user, "not-the-password")

    # Faust's client (aiokafka) gets the broker's refusal as a typed error.
    began = time.monotonic()
    with pytest.raises(SaslAuthenticationFailed, match=r"(?i)invalid"):
        aiokafka_login(kafka_sasl_engine.address, settings)
    assert time.monotonic() - began < 5

    # kafka-python 3 retries a refused login until its bootstrap timeout and
    # raises a bare timeout: bounded here, the cause is in the broker's log.
    began = time.monotonic()
    with pytest.raises(KafkaError, match="bootstrap"):
        admin_client(
            kafka_sasl_engine.address, **kafka_security(settings), bootstrap_timeout_ms=1500
        )
    assert time.monotonic() - began < 5
    server_log = kafka_sasl_engine.engine.home / "kafka" / "logs" / "server.log"
    assert "Failed authentication with /127.0.0.1" in server_log.read_text(errors="replace")


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
