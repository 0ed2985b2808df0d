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
