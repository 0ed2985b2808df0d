"""The engine launchers in deploy/engines against the real Kafka and Cassandra.

The engines come from the session fixtures (started once); the tests that
need an engine of their own (port refusal) use a separate home.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.engines import cassandra, common, kafka
from deploy.engines.common import EngineError, EngineInfo
from streams.ports import free_port
from tests.engine_fixtures import cli_status
from tests.paths import ROOT

pytestmark = pytest.mark.broker


def _java_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


# --- pure parts ---------------------------------------------------------------------


def test_engine_info_address_and_json_round_trip(tmp_path: Path) -> None:
    info = EngineInfo(
        name="kafka",
        host="127.0.0.1",
        port=9092,
        pid=42,
        version="4.1.2",
        ready_seconds=3.5,
        reused=False,
        home=tmp_path,
        ports={"client": 9092, "controller": 9093},
    )
    assert info.address == "127.0.0.1:9092"
    assert EngineInfo.from_json(json.loads(json.dumps(info.to_json()))) == info


def test_cluster_id_is_kafka_shaped() -> None:
    ids = {kafka.random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineError, match=r"`java` not found on PATH: install a Java 17"):
        common.require_tool("java")
    with pytest.raises(EngineError, match=r"`mvn` not found on PATH: install Apache Maven"):
        common.require_tool("mvn")


def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka" / "kafka.pid"
    pid_file.parent.mkdir(parents=True)
    # Our own pid: alive, but not a Kafka of this home.
    pid_file.write_text(f"{os.getpid()}\n")
    assert kafka.status(tmp_path) is None
    assert not pid_file.exists()
    assert kafka.stop(tmp_path) is False


# --- Kafka ----------------------------------------------------------------------------


def test_kafka_is_ready_and_described(kafka_engine: EngineInfo) -> None:
    assert kafka_engine.name == "kafka"
    assert kafka_engine.version.startswith("4.")
    assert kafka_engine.ready_seconds > 0
    recorded = json.loads((kafka_engine.home / "kafka" / "info.json").read_text())
    assert recorded["address"] == kafka_engine.address
    assert recorded["pid"] == kafka_engine.pid


def test_kafka_topic_produce_consume_round_trip(kafka_engine: EngineInfo) -> None:
    topic = f"engines-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_engine.address)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_engine.address, acks="all")
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]
    for key, value in sent:
        producer.send(topic, key=key, value=value, partition=0)
    producer.flush(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_engine.address, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got: list[tuple[bytes, bytes]] = []
        for _ in range(20):
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend((r.key, r.value) for r in records)
            if len(got) >= len(sent):
                break
    finally:
        consumer.close()
    assert got == sent


def test_kafka_second_start_reuses(kafka_engine: EngineInfo) -> None:
    again = kafka.start(kafka_engine.home, port=kafka_engine.port)
    assert again.reused is True
    assert again.pid == kafka_engine.pid
    assert again.address == kafka_engine.address


def test_kafka_start_on_another_port_of_a_running_home_is_refused(
    kafka_engine: EngineInfo,
) -> None:
    with pytest.raises(EngineError, match="already runs"):
        kafka.start(kafka_engine.home, port=free_port())


def test_kafka_status_via_cli(kafka_engine: EngineInfo) -> None:
    assert kafka.status(kafka_engine.home) == kafka_engine
    shown = cli_status("kafka", kafka_engine.home)
    assert shown["address"] == kafka_engine.address
    assert shown["pid"] == kafka_engine.pid


def test_kafka_refuses_a_port_held_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(EngineError, match=rf"port 127.0.0.1:{port} is already in use"):
            kafka.start(tmp_path, port=port)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert not _java_processes(str(tmp_path))


def test_readiness_timeout_names_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(
        EngineError, match=r"did not answer on 127\.0\.0\.1:\d+ within 0 s .*logs under"
    ):
        kafka.start(tmp_path, port=free_port(), timeout=0.2)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert not _java_processes(str(tmp_path))


def test_maven_failure_shows_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEREST_STREAM_JAR_CACHE", str(tmp_path / "jars"))
    with pytest.raises(EngineError, match=r"(?s)Maven could not fetch.*0\.0\.1-missing"):
        common.ensure_jars(
            "kafka", "0.0.1-missing", ROOT / "deploy" / "kafka" / "pom.xml", "kafka.version"
        )
    assert not (tmp_path / "jars" / "kafka-0.0.1-missing" / common.MARKER).exists()


def test_stop_of_nothing_is_a_no_op(tmp_path: Path) -> None:
    assert kafka.stop(tmp_path) is False
    assert cassandra.stop(tmp_path) is False


# --- Cassandra --------------------------------------------------------------------------


def test_cassandra_answers_release_version(cassandra_engine: EngineInfo) -> None:
    cluster = Cluster(
        [cassandra_engine.host],
        port=cassandra_engine.port,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
        },
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
    finally:
        cluster.shutdown()
    assert row.release_version.startswith("5.0")
    assert cassandra_engine.version == row.release_version


def test_cassandra_second_start_reuses(cassandra_engine: EngineInfo) -> None:
    again = cassandra.start(cassandra_engine.home, port=cassandra_engine.port)
    assert again.reused is True
    assert again.pid == cassandra_engine.pid
    assert cassandra.status(cassandra_engine.home) == cassandra_engine
