"""Tier 3: the Cassandra store against a node with password authentication and TLS.

The node (``cassandra_secure_engine``) is started by ``deploy.engines`` with
``PasswordAuthenticator``, ``CassandraAuthorizer`` and a TLS-only native
port; the store logs in as a non-superuser role. The store contract suite
and the pipeline's end-to-end tests also run against it
(``test_store_contract.py``); here: a real worker with every security
setting on at once (Kafka over SASL_SSL with SCRAM-SHA-512, Cassandra with a
password over TLS), what must be refused, and the launcher's refusal to reuse
a node in another mode.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable

from deploy.engines import cassandra, tls
from deploy.engines.common import EngineError
from streams.settings import Settings
from streams.stores import StoreUnreachable
from streams.stores.cassandra import CassandraStore
from streams.worker import open_store
from tests.engine_fixtures import SecureCassandra, TlsKafka
from tests.secure_kafka import assert_worker_publishes_exact_deltas, secure_settings

pytestmark = pytest.mark.broker


def cassandra_fields(secure: SecureCassandra) -> dict[str, Any]:
    """Settings for the secured node: its role, password and CA, a fresh keyspace."""
    return {
        "store": "cassandra",
        "cassandra_contact_points": secure.engine.host,
        "cassandra_port": secure.engine.port,
        "cassandra_keyspace": f"sec_{uuid.uuid4().hex[:12]}",
        "cassandra_username": secure.username,
        "cassandra_password": secure.password,
        "cassandra_ssl_ca_file": str(secure.ca_file),
    }


def connect(secure: SecureCassandra, **overrides: Any) -> CassandraStore:
    options: dict[str, Any] = {
        "username": secure.username,
        "password": secure.password,
        "ssl_ca_file": str(secure.ca_file),
        "connect_timeout": 5.0,
        **overrides,
    }
    keyspace = f"sec_{uuid.uuid4().hex[:12]}"
    return CassandraStore(secure.engine.host, secure.engine.port, keyspace, **options)


def refused(secure: SecureCassandra, **overrides: Any) -> str:
    """Connect with ``overrides``; the driver's error text (it must fail, and fast)."""
    began = time.monotonic()
    with pytest.raises(StoreUnreachable) as caught:
        connect(secure, **overrides).close()
    assert time.monotonic() - began < 10
    assert isinstance(caught.value.__cause__, NoHostAvailable)
    assert str(caught.value).startswith("could not connect to Cassandra at ")
    return str(caught.value)


def test_settings_reach_the_store(cassandra_secure_engine: SecureCassandra) -> None:
    secure = cassandra_secure_engine
    settings = Settings(**cassandra_fields(secure))
    assert secure.password not in repr(settings)
    store = open_store(settings)
    assert isinstance(store, CassandraStore)
    try:
        assert store.get_states(["nobody"]) == {}
    finally:
        store.drop_keyspace()
        store.close()


def test_worker_on_kafka_sasl_ssl_and_cassandra_auth_tls(
    kafka_tls_engine: TlsKafka,
    cassandra_secure_engine: SecureCassandra,
    encoder_artifact: Path,
    tmp_path: Path,
) -> None:
    secure = cassandra_secure_engine
    settings = secure_settings(
        "SASL_SSL",
        mechanism="SCRAM-SHA-512",
        user="alice",
        password=kafka_tls_engine.users["alice"],
        ca_file=kafka_tls_engine.ca_file,
        **cassandra_fields(secure),
    )
    schema = open_store(settings)  # the keyspace exists before the worker's agents start
    assert isinstance(schema, CassandraStore)
    try:
        assert_worker_publishes_exact_deltas(
            kafka_tls_engine.sasl_ssl_address, settings, encoder_artifact, tmp_path, "all-secure"
        )
    finally:
        schema.drop_keyspace()
        schema.close()


def test_wrong_password_is_refused(cassandra_secure_engine: SecureCassandra) -> None:
    assert "Bad credentials" in refused(cassandra_secure_engine, password="not-the-password")


def test_plain_tcp_is_refused(cassandra_secure_engine: SecureCassandra) -> None:
    refused(cassandra_secure_engine, ssl_ca_file="")


def test_a_server_signed_by_another_ca_is_refused(
    cassandra_secure_engine: SecureCassandra, tmp_path: Path
) -> None:
    other = tls.ensure(tmp_path / "other-ca")
    assert "CERTIFICATE_VERIFY_FAILED" in refused(
        cassandra_secure_engine, ssl_ca_file=str(other.ca_pem)
    )


def test_a_start_in_another_mode_is_refused_at_once(
    cassandra_secure_engine: SecureCassandra,
) -> None:
    home = cassandra_secure_engine.engine.home
    began = time.monotonic()
    with pytest.raises(EngineError, match=r"already runs .* with \{'auth': True, 'tls': True\}"):
        cassandra.start(home)
    assert time.monotonic() - began < 5
    assert cassandra.status(home) == cassandra_secure_engine.engine


def test_cli_status_names_the_ca_file(
    cassandra_secure_engine: SecureCassandra, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy.engines.__main__ import main

    home = cassandra_secure_engine.engine.home
    assert main(["cassandra", "status", "--home", str(home), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["port"] == cassandra_secure_engine.engine.port
    assert Path(shown["ca_file"]) == cassandra_secure_engine.ca_file


def test_cli_wants_name_and_password_for_a_role() -> None:
    from deploy.engines.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["cassandra", "start", "--cassandra-user", "app"])
    args = parse_args(["cassandra", "start", "--cassandra-user", "app=s3cret", "--cassandra-tls"])
    assert args.cassandra_users == {"app": "s3cret"}
    assert args.cassandra_tls
