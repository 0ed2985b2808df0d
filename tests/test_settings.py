"""The one settings object: sources, validation, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings, SettingsError, load_settings


def test_defaults_mean_embedded_engines() -> None:
    s = load_settings(env={})
    assert s.bootstrap_servers == "" and s.store == "sqlite"
    assert s.topics.behaviours == "behaviours" and s.topics.partitions == 4


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('top_k = 7\npartitions = 2\ntopic_prefix = "x-"\n')
    env = {"INTEREST_STREAM_CONFIG": str(conf), "INTEREST_STREAM_TOP_K": "9"}
    s = load_settings(env=env, partitions=None, batch_max=5)
    assert (s.top_k, s.partitions, s.batch_max) == (9, 2, 5)
    assert s.topics.deltas == "x-recommendation-deltas"
    assert s.core_params().k == 9


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"INTEREST_STREAM_TOP_K": "many"}, "top_k"),
        ({"INTEREST_STREAM_PARTITIONS": "0"}, "partitions"),
        ({"INTEREST_STREAM_STORE": "redis"}, "unknown store"),
        ({"INTEREST_STREAM_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
        ({"INTEREST_STREAM_CONFIG": "/nonexistent.toml"}, "cannot read"),
        ({"INTEREST_STREAM_SHIFT_THRESHOLD": "-1"}, "interest structure: threshold"),
        ({"INTEREST_STREAM_INTEREST_COMPOSE": "average"}, "interest structure: mode"),
        ({"INTEREST_STREAM_QUERY_NEGATIVE_MARGIN": "-0.5"}, "query_negative_margin"),
        ({"INTEREST_STREAM_QUERY_NEGATIVE_MARGIN": "nan"}, "query_negative_margin"),
        # 0 would leave Faust's take without a timeout: the agent stalls.
        ({"INTEREST_STREAM_BATCH_WITHIN_SECONDS": "0"}, "batch_within_seconds"),
        ({"INTEREST_STREAM_BATCH_WITHIN_SECONDS": "inf"}, "batch_within_seconds"),
        ({"INTEREST_STREAM_FETCH_MAX_WAIT_MS": "-1"}, "fetch_max_wait_ms"),
        ({"INTEREST_STREAM_GROUP_INSTANCE_ID": "pod 1"}, "group_instance_id"),
        ({"INTEREST_STREAM_BLAS_THREADS": "-1"}, "blas_threads"),
        ({"INTEREST_STREAM_GROUP_INSTANCE_ID": "x" * 250}, "group_instance_id"),
        # At or under the rebalance timeout it would exit workers in a healthy rebalance.
        ({"INTEREST_STREAM_REBALANCE_STUCK_SECONDS": "6"}, "rebalance_stuck_seconds"),
        ({"INTEREST_STREAM_REBALANCE_STUCK_SECONDS": "-1"}, "rebalance_stuck_seconds"),
        ({"INTEREST_STREAM_REBALANCE_STUCK_SECONDS": "inf"}, "rebalance_stuck_seconds"),
        ({"INTEREST_STREAM_BATCH_LOG_SECONDS": "-1"}, "batch_log_seconds"),
        ({"INTEREST_STREAM_BATCH_LOG_SECONDS": "nan"}, "batch_log_seconds"),
    ],
)
def test_bad_settings_fail_clearly(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(env=env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("topk = 3\n")
    with pytest.raises(SettingsError, match="unknown settings: topk"):
        load_settings(env={"INTEREST_STREAM_CONFIG": str(conf)})


def test_secrets_are_masked() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_username="me", sasl_password="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "sasl_password=***" in repr(s) and "sasl_username='me'" in repr(s)


def test_security_reaches_faust_and_kafka_python() -> None:
    import certifi

    from streams.app import _credentials
    from streams.security import kafka_security

    assert _credentials(Settings()) is None
    assert kafka_security(Settings()) == {"security_protocol": "PLAINTEXT"}

    scram = Settings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="me", sasl_password="pw", ssl_ca_file=certifi.where(),
    )  # fmt: skip
    creds = _credentials(scram)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "me" and creds.password == "pw" and creds.ssl_context is not None
    kp = kafka_security(scram)
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kp["sasl_plain_username"] == "me" and kp["ssl_context"] is not None

    plain = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="me", sasl_password="pw")
    assert _credentials(plain).protocol.value == "SASL_PLAINTEXT"
    assert "ssl_context" not in kafka_security(plain)

    tls = _credentials(Settings(security_protocol="SSL", ssl_ca_file=certifi.where()))
    assert tls.protocol.value == "SSL"
    with pytest.raises(SettingsError, match="sasl_mechanism"):
        Settings(security_protocol="SASL_SSL", sasl_username="me", sasl_mechanism="GSSAPI")


def test_group_instance_id_reaches_faust_as_static_membership() -> None:
    import faust

    from streams.app import app_config

    assert Settings().group_instance_id == ""
    dynamic = faust.App("t", **app_config(Settings(), "127.0.0.1:9092"))
    assert dynamic.conf.consumer_group_instance_id is None
    static = load_settings(env={"INTEREST_STREAM_GROUP_INSTANCE_ID": "worker-0.pod_a"})
    app = faust.App("t", **app_config(static, "127.0.0.1:9092"))
    assert app.conf.consumer_group_instance_id == "worker-0.pod_a"


def test_a_worker_caps_the_blas_threads_under_numpy() -> None:
    import numpy as np  # loads the BLAS threadpoolctl finds
    from threadpoolctl import threadpool_info, threadpool_limits

    from streams.worker import limit_blas_threads

    assert Settings().blas_threads == 1
    original = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert original, "numpy has no BLAS threadpoolctl can see"
    try:
        assert limit_blas_threads(0) == original  # 0: left as the library has them
        assert limit_blas_threads(1) == [1] * len(original)
        assert np.allclose(np.eye(3) @ np.ones((3, 2)), 1.0)  # still computes
    finally:
        threadpool_limits(limits=max(original), user_api="blas")
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == original


def test_roles_choose_the_agents() -> None:
    from unittest.mock import MagicMock

    from streams.app import create_app

    def agents(roles: str) -> set[str]:
        settings = Settings(roles=roles, app_id=f"roles-{roles.replace(',', '-')}")
        app = create_app(settings, "127.0.0.1:9", MagicMock())
        return {agent.name for agent in app.agents.values()}

    assert agents("behaviours,items") == {"behaviours", "items"}
    assert agents("items") == {"items"}
    assert agents("behaviours") == {"behaviours"}
    with pytest.raises(SettingsError, match="roles"):
        Settings(roles="encoder")
