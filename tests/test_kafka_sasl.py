"""Tier 3: SASL_PLAINTEXT against the session's Apache Kafka, PLAIN and SCRAM.

A real worker authenticates with the settings' credentials (Faust/aiokafka via
``streams.app._credentials``; topics, commits and the tail via kafka-python and
``streams.security.kafka_security``) and publishes exactly the deltas an offline
replay gives (``tests/secure_kafka.py``, shared with ``test_kafka_tls.py``). A
wrong password is refused: aiokafka raises SaslAuthenticationFailed at once;
kafka-python 3 only times out (bounded by ``bootstrap_timeout_ms``) and logs
the refusal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import SaslAuthenticationFailed
from kafka.errors import KafkaError

from streams.admin import admin_client
from streams.security import kafka_security
from streams.settings import Settings
from tests.engine_fixtures import SaslKafka
from tests.secure_kafka import (
    aiokafka_connect,
    assert_worker_publishes_exact_deltas,
    secure_settings,
)

pytestmark = pytest.mark.broker

#: Mechanism -> the user that logs in with it (both users know every mechanism).
WORKER_LOGINS = {"PLAIN": "alice", "SCRAM-SHA-256": "bob"}


def sasl_settings(mechanism: str, user: str, password: str, **extra: Any) -> Settings:
    return secure_settings(
        "SASL_PLAINTEXT", mechanism=mechanism, user=user, password=password, **extra
    )


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
        aiokafka_connect(kafka_sasl_engine.address, settings)


def test_worker_publishes_deltas_over_sasl(
    kafka_sasl_engine: SaslKafka,
    mechanism: str,
    encoder_artifact: Path,
    tmp_path: Path,
) -> None:
    user = WORKER_LOGINS[mechanism]
    settings = sasl_settings(mechanism, user, kafka_sasl_engine.users[user])
    assert_worker_publishes_exact_deltas(
        kafka_sasl_engine.address, settings, encoder_artifact, tmp_path, f"sasl-{mechanism.lower()}"
    )


@pytest.mark.parametrize("refused", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_is_refused(kafka_sasl_engine: SaslKafka, refused: str) -> None:
    user = next(iter(kafka_sasl_engine.users))
    settings = sasl_settings(refused, user, "not-the-password")

    # Faust's client (aiokafka) gets the broker's refusal as a typed error.
    began = time.monotonic()
    with pytest.raises(SaslAuthenticationFailed, match=r"(?i)invalid"):
        aiokafka_connect(kafka_sasl_engine.address, settings)
    assert time.monotonic() - began < 5

    # kafka-python 3 retries a refused login until its bootstrap timeout and
    # raises a bare timeout: bounded here, the cause is in the broker's log.
    began = time.monotonic()
    with pytest.raises(KafkaError, match="bootstrap") as caught:
        admin_client(
            kafka_sasl_engine.address, **kafka_security(settings), bootstrap_timeout_ms=1500
        )
    message = str(caught.value)
    assert f"sasl_mechanism={refused}, user={user}" in message and "credentials" in message
    assert "not-the-password" not in message
    assert time.monotonic() - began < 5
    server_log = kafka_sasl_engine.engine.home / "kafka" / "logs" / "server.log"
    assert "Failed authentication with /127.0.0.1" in server_log.read_text(errors="replace")
