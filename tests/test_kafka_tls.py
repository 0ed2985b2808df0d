"""Tier 3: TLS against the session's Apache Kafka: SSL and SASL_SSL listeners.

The launcher gives the session's Kafka (one JVM) an SSL and a SASL_SSL
listener presenting a certificate of a throwaway CA (``deploy.engines.tls``)
for 127.0.0.1 and localhost. Clients configured only through the settings
(``security_protocol``, ``ssl_ca_file``, SASL fields; Faust/aiokafka via
``streams.app._credentials``, kafka-python via ``streams.security.kafka_security``)
verify that CA and the host name; a real worker runs over SASL_SSL with
SCRAM-SHA-512 and publishes exactly the deltas an offline replay gives. A client
that does not trust the CA is refused: aiokafka raises the certificate error
at once; kafka-python 3 logs it and times out (bounded by ``bootstrap_timeout_ms``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from pathlib import Path

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from deploy.engines import kafka, tls
from deploy.engines.__main__ import parse_args
from deploy.engines.common import EngineError, EngineInfo
from streams.admin import admin_client, ensure_topics
from streams.app import _credentials
from streams.security import kafka_security, ssl_context
from tests.engine_fixtures import TlsKafka, cli_status
from tests.secure_kafka import (
    aiokafka_connect,
    assert_worker_publishes_exact_deltas,
    secure_settings,
)

#: Stands in for TLS material in tests that never start a JVM with it.
FAKE_TLS = tls.TlsMaterial(Path("/nowhere"), Path("/nowhere/ca.pem"), Path("/nowhere/s.p12"), "pw")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- settings and launcher, no broker -------------------------------------------------


def test_ssl_settings_reach_faust_and_kafka_python() -> None:
    settings = secure_settings("SSL", ca_file=certifi.where())
    client = kafka_security(settings)
    assert set(client) == {"security_protocol", "ssl_context"}  # no SASL keys
    assert client["security_protocol"] == "SSL"
    context = client["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    faust_auth = credentials_to_aiokafka_auth(_credentials(settings))
    assert faust_auth["security_protocol"] == "SSL"
    assert faust_auth["ssl_context"].check_hostname
    assert "sasl_mechanism" not in faust_auth

    scram = secure_settings(
        "SASL_SSL", mechanism="SCRAM-SHA-512", user="bob", password="pw", ca_file=certifi.where()
    )
    faust_auth = credentials_to_aiokafka_auth(_credentials(scram))
    assert faust_auth["security_protocol"] == "SASL_SSL"
    assert faust_auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert faust_auth["sasl_plain_username"] == "bob"
    assert faust_auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_listeners_follow_users_and_tls() -> None:
    users = {"alice": "pw"}
    assert kafka.Kafka().listeners == []
    assert kafka.Kafka(sasl_users=users).listeners == [kafka.SASL]
    assert kafka.Kafka(tls=FAKE_TLS).listeners == [kafka.SSL]
    spec = kafka.Kafka(sasl_users=users, tls=FAKE_TLS, listener_ports={"ssl": 29094})
    assert spec.listeners == [kafka.SASL, kafka.SSL, kafka.SASL_SSL]
    ports = spec.ports(29092)
    assert list(ports) == ["client", "controller", "sasl", "ssl", "sasl_ssl"]
    assert ports["ssl"] == 29094 and len(set(ports.values())) == len(ports)
    config = spec._listener_template(ports)
    assert config["extra_listeners"].endswith(f",SASL_SSL://127.0.0.1:{ports['sasl_ssl']}")
    assert config["extra_protocols"] == ",SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL"
    lines = config["extra_config"].splitlines()
    assert "ssl.keystore.type=PKCS12" in lines
    assert "ssl.keystore.location=/nowhere/s.p12" in lines
    mechanisms = ",".join(kafka.SASL_MECHANISMS)
    assert f"listener.name.sasl_ssl.sasl.enabled.mechanisms={mechanisms}" in lines
    with pytest.raises(EngineError, match="ssl port"):
        kafka.Kafka(sasl_users=users, listener_ports={"ssl": 29094})
    assert kafka.Kafka()._listener_template({}) == {
        "extra_listeners": "",
        "extra_protocols": "",
        "extra_config": "",
    }


def test_reusing_a_kafka_without_the_tls_listeners_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = EngineInfo(
        name="kafka", host="127.0.0.1", port=1, pid=2, version="4.1.2", ready_seconds=1.0,
        reused=True, home=tmp_path, ports={"client": 1, "controller": 3, "sasl": 4},
    )  # fmt: skip
    monkeypatch.setattr(kafka.common, "start", lambda *args: running)
    stopped: list[object] = []
    monkeypatch.setattr(kafka.common, "stop", lambda *args: stopped.append(args))
    with pytest.raises(EngineError, match=r"already runs .* but has no SSL listener; stop it"):
        kafka.start(tmp_path, tls=FAKE_TLS)
    assert not stopped, "a reused Kafka is left running"
    with pytest.raises(EngineError, match="no SSL listener; start it with tls"):
        kafka.ssl_address(running)


def test_cli_wants_kafka_tls_for_its_ports() -> None:
    with pytest.raises(SystemExit):
        parse_args(["kafka", "start", "--kafka-ssl-port", "9094"])
    with pytest.raises(SystemExit):
        parse_args(["kafka", "start", "--kafka-tls", "--kafka-sasl-ssl-port", "9095"])
    args = parse_args(["kafka", "start", "--kafka-tls", "--kafka-ssl-port", "9094"])
    assert args.kafka_tls and args.kafka_ssl_port == 9094


# --- the session's Kafka --------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_ssl_clients_verify_the_ca_and_host_name(kafka_tls_engine: TlsKafka, host: str) -> None:
    address = f"{host}:{_port(kafka_tls_engine.ssl_address)}"
    settings = secure_settings("SSL", ca_file=kafka_tls_engine.ca_file)
    security = kafka_security(settings)
    aiokafka_connect(address, settings)  # Faust's client
    ensure_topics(address, settings.topics, **security)
    topic = settings.topics.items
    producer = KafkaProducer(bootstrap_servers=address, **security)
    try:
        sent = producer.send(topic, key=b"k", value=b"over tls", partition=0).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=address, auto_offset_reset="earliest", **security)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.offset, r.value) for r in records)
    finally:
        consumer.close()
    assert got == [(sent.offset, b"over tls")]


@pytest.mark.broker
def test_the_certificate_names_only_the_loopback_host(kafka_tls_engine: TlsKafka) -> None:
    context = ssl_context(secure_settings("SSL", ca_file=kafka_tls_engine.ca_file))
    assert context is not None
    port = _port(kafka_tls_engine.ssl_address)

    def handshake(server_name: str) -> None:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as conn,
        ):
            assert conn.version() in ("TLSv1.2", "TLSv1.3")

    handshake("127.0.0.1")
    handshake("localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname mismatch"):
        handshake("kafka.invalid")


@pytest.mark.broker
@pytest.mark.parametrize("login", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_every_user_logs_in_over_sasl_ssl(kafka_tls_engine: TlsKafka, login: str) -> None:
    address = kafka_tls_engine.sasl_ssl_address
    for user, password in kafka_tls_engine.users.items():
        settings = secure_settings(
            "SASL_SSL", mechanism=login, user=user, password=password,
            ca_file=kafka_tls_engine.ca_file,
        )  # fmt: skip
        admin = admin_client(address, **kafka_security(settings))
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        aiokafka_connect(address, settings)


@pytest.mark.broker
def test_worker_publishes_exact_deltas_over_sasl_ssl_with_scram_sha_512(
    kafka_tls_engine: TlsKafka, encoder_artifact: Path, tmp_path: Path
) -> None:
    settings = secure_settings(
        "SASL_SSL",
        mechanism="SCRAM-SHA-512",
        user="bob",
        password=kafka_tls_engine.users["bob"],
        ca_file=kafka_tls_engine.ca_file,
    )
    assert_worker_publishes_exact_deltas(
        kafka_tls_engine.sasl_ssl_address, settings, encoder_artifact, tmp_path, "sasl-ssl"
    )


@pytest.mark.broker
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_a_client_without_the_ca_is_refused(
    kafka_tls_engine: TlsKafka, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    # No ssl_ca_file: the system's trust store, which does not know the local CA.
    address = (
        kafka_tls_engine.ssl_address if protocol == "SSL" else kafka_tls_engine.sasl_ssl_address
    )
    settings = secure_settings(protocol, mechanism="SCRAM-SHA-512", user="alice", password="x")

    # Faust's client (aiokafka) fails the handshake at once with the cause.
    began = time.monotonic()
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        aiokafka_connect(address, settings, timeout=5)
    assert time.monotonic() - began < 3

    # kafka-python 3 retries until its bootstrap timeout; the cause is in its log.
    began = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="kafka"),
        pytest.raises(KafkaError, match="bootstrap") as caught,
    ):
        admin_client(address, **kafka_security(settings), bootstrap_timeout_ms=1500)
    assert f"security_protocol={protocol}" in str(caught.value)
    assert "CA file" in str(caught.value)
    assert time.monotonic() - began < 5
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


@pytest.mark.broker
def test_reuse_checks_the_listeners_against_the_ca(kafka_tls_engine: TlsKafka) -> None:
    engine = kafka_tls_engine.engine
    material = tls.ensure(engine.home / "tls")
    assert material.ca_pem == kafka_tls_engine.ca_file
    again = kafka.start(
        engine.home, port=engine.port, sasl_users=kafka_tls_engine.users, tls=material
    )
    assert again.reused and again.pid == engine.pid and again.ports == engine.ports

    # Another CA (the public ones) does not verify the running broker's certificate.
    assert not kafka.tls_handshakes(kafka_tls_engine.ssl_address, certifi.where())
    foreign = tls.TlsMaterial(material.folder, Path(certifi.where()), material.keystore, "x")
    with pytest.raises(EngineError, match="does not verify: it runs with other TLS material"):
        kafka.start(engine.home, tls=foreign)
    assert kafka.status(engine.home) is not None, "a reused Kafka is left running"


@pytest.mark.broker
def test_cli_status_names_the_ca_file(kafka_tls_engine: TlsKafka) -> None:
    shown = cli_status("kafka", kafka_tls_engine.engine.home)
    assert shown["ca_file"] == str(kafka_tls_engine.ca_file)
    assert f"127.0.0.1:{shown['ports']['ssl']}" == kafka_tls_engine.ssl_address
    assert f"127.0.0.1:{shown['ports']['sasl_ssl']}" == kafka_tls_engine.sasl_ssl_address
