"""The Cassandra store without a Cassandra: schema text, options, driver wiring."""

from __future__ import annotations

import logging
from typing import Any, ClassVar
from unittest import mock

import pytest
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from streams.settings import load_settings
from streams.stores import cassandra as cs
from streams.stores.replication import replication_cql


def test_schema_file_substitutes_keyspace_and_replication() -> None:
    text = cs.SCHEMA_FILE.read_text()
    replication = replication_cql({"class": "NetworkTopologyStrategy", "dc1": 3})
    statements = cs.schema_statements(text, "ks_1", replication)
    assert statements[0] == (
        "CREATE KEYSPACE IF NOT EXISTS ks_1 WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': '3'}"
    )
    tables = [s.split()[5] for s in statements[1:]]
    assert tables == [
        "ks_1.user_states", "ks_1.items", "ks_1.item_changes", "ks_1.watches", "ks_1.blobs"
    ]  # fmt: skip
    assert all("IF NOT EXISTS" in s for s in statements)
    assert not any("{" in s for s in statements[1:]), "a placeholder was left"
    assert not any("--" in s for s in statements)


def test_replication_from_settings_json() -> None:
    json_map = '{"class": "SimpleStrategy", "replication_factor": 1}'
    assert replication_cql(json_map) == "{'class': 'SimpleStrategy', 'replication_factor': '1'}"


@pytest.mark.parametrize(
    "replication",
    [
        {"replication_factor": 1},
        {"class": "SimpleStrategy', 'x': '1'}; DROP KEYSPACE system_auth; --"},
        '["SimpleStrategy"]',
    ],
    ids=["no-class", "injection", "not-a-map"],
)
def test_bad_replication_is_refused(replication: Any) -> None:
    with pytest.raises(ValueError):
        replication_cql(replication)


def test_settings_refuse_what_the_store_would_refuse() -> None:
    """One check: a replication map that loads is one the store can create."""
    from streams.settings import SettingsError

    unsafe = "{\"class\": \"SimpleStrategy', 'x': '1'}; DROP KEYSPACE system_auth; --\"}"
    with pytest.raises(SettingsError, match="cassandra_replication"):
        load_settings(env={"INTEREST_STREAM_CASSANDRA_REPLICATION": unsafe})


@pytest.mark.parametrize("keyspace", ["", "1ks", "ks-1", "ks; DROP", "k" * 49])
def test_bad_keyspace_is_refused_before_connecting(keyspace: str) -> None:
    with mock.patch.object(cs, "Cluster") as cluster, pytest.raises(ValueError):
        cs.CassandraStore("127.0.0.1", 9042, keyspace)
    cluster.assert_not_called()


def test_bad_consistency_is_refused() -> None:
    with pytest.raises(ValueError, match="consistency"):
        cs.CassandraStore(read_consistency="MOST")
    with pytest.raises(ValueError, match="serial"):
        cs.CassandraStore(serial_consistency="QUORUM")


class _FakeCluster:
    """Records how the store builds its Cluster; its session accepts everything."""

    instances: ClassVar[list[_FakeCluster]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.session = mock.MagicMock(name="session")
        self.session.prepare.side_effect = lambda cql: mock.MagicMock(name="prepared", cql=cql)
        self.control_connection = mock.MagicMock()
        self.shutdown = mock.MagicMock()
        _FakeCluster.instances.append(self)

    def connect(self) -> mock.MagicMock:
        return self.session


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> type[_FakeCluster]:
    _FakeCluster.instances = []
    monkeypatch.setattr(cs, "Cluster", _FakeCluster)
    return _FakeCluster


def test_from_settings_wires_the_driver(
    fake_cluster: type[_FakeCluster], caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        {},
        store="cassandra",
        cassandra_contact_points="10.0.0.1, 10.0.0.2",
        cassandra_port=9142,
        cassandra_keyspace="prod_ks",
        cassandra_local_dc="dc-east",
        cassandra_read_consistency="LOCAL_ONE",
        cassandra_write_consistency="LOCAL_QUORUM",
        cassandra_username="svc",
        cassandra_password="s3cret-pw",
        state_ttl_seconds=86400,
    )
    with caplog.at_level(logging.DEBUG):
        store = cs.CassandraStore.from_settings(settings)
    (cluster,) = fake_cluster.instances
    kw = cluster.kwargs
    assert kw["contact_points"] == ["10.0.0.1", "10.0.0.2"] and kw["port"] == 9142
    assert isinstance(kw["auth_provider"], PlainTextAuthProvider)
    assert kw["auth_provider"].username == "svc"
    assert kw["ssl_context"] is None
    profile = kw["execution_profiles"][EXEC_PROFILE_DEFAULT]
    policy = profile.load_balancing_policy
    assert isinstance(policy, TokenAwarePolicy)
    assert isinstance(policy._child_policy, DCAwareRoundRobinPolicy)
    assert policy._child_policy.local_dc == "dc-east"
    assert profile.consistency_level == ConsistencyLevel.LOCAL_ONE
    assert profile.serial_consistency_level == ConsistencyLevel.LOCAL_SERIAL
    # the CAS runs at the write level, its Paxos phase at LOCAL_SERIAL; reads at the read level
    assert store._update_state.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert store._update_state.serial_consistency_level == ConsistencyLevel.LOCAL_SERIAL
    assert store._get_state.consistency_level == ConsistencyLevel.LOCAL_ONE
    bound, _ = store._fence_read("u1", serial=True)
    assert bound.consistency_level == ConsistencyLevel.LOCAL_SERIAL
    # the item feed is global: SERIAL even when user states are fenced per DC
    assert store._feed_move.serial_consistency_level == ConsistencyLevel.SERIAL
    assert store._feed_since.consistency_level == ConsistencyLevel.SERIAL
    assert store.ttl_seconds == 86400
    # prepared once, at start-up
    prepared = [c.args[0] for c in cluster.session.prepare.call_args_list]
    assert len(prepared) == len(set(prepared))
    assert any("IF version < ? AND write_clock = ?" in cql for cql in prepared)
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(store)
    assert "svc" in caplog.text
    store.close()
    cluster.shutdown.assert_called_once()


def test_global_writes_use_serial(fake_cluster: type[_FakeCluster]) -> None:
    store = cs.CassandraStore(write_consistency="QUORUM", ssl_ca_file="")
    assert store._update_state.serial_consistency_level == ConsistencyLevel.SERIAL
    kw = fake_cluster.instances[0].kwargs
    assert kw["auth_provider"] is None
    assert (
        kw["execution_profiles"][EXEC_PROFILE_DEFAULT].load_balancing_policy._child_policy.local_dc
        == ""
    )


def test_tls_uses_the_ca_file(fake_cluster: type[_FakeCluster], tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(Exception, match=r"(?i)pem|ssl|certificate|lib"):
        cs.CassandraStore(ssl_ca_file=str(ca))  # the file is read, not ignored
    with mock.patch.object(cs.ssl, "create_default_context") as ctx:
        cs.CassandraStore(ssl_ca_file=str(ca))
    ctx.assert_called_once_with(cafile=str(ca))
    assert fake_cluster.instances[-1].kwargs["ssl_context"] is ctx.return_value


def test_connection_failure_shuts_the_cluster_down(fake_cluster: type[_FakeCluster]) -> None:
    def fail(self: _FakeCluster) -> None:
        raise OSError("no route")

    with mock.patch.object(_FakeCluster, "connect", fail), pytest.raises(OSError):
        cs.CassandraStore()
    fake_cluster.instances[-1].shutdown.assert_called_once()


def test_open_store_picks_cassandra(fake_cluster: type[_FakeCluster]) -> None:
    from streams.worker import open_store

    store = open_store(load_settings({}, store="cassandra", cassandra_keyspace="ks_w"))
    assert isinstance(store, cs.CassandraStore) and store.keyspace == "ks_w"
