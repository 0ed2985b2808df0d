"""The production manifests cannot run here; check what can be checked.

YAML parses; every container that runs our image runs a real CLI command
with options the CLI accepts; every INTEREST_STREAM_* variable is a setting
and the whole environment loads as valid settings; the topic replication
fits the Kafka cluster; GPU encoder workers ask for a GPU and run only the
items role under their own consumer group; every container requests
resources; the Cassandra datacenter agrees across settings and servers.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from streams.cli import main
from streams.settings import ENV_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
IMAGE = "interest-stream:"


def _k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _pod_spec(doc: dict) -> dict | None:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return template["spec"] if template else None


def _k8s_containers() -> Iterator[tuple[dict, dict]]:
    for doc in _k8s_docs():
        pod = _pod_spec(doc)
        for container in (pod or {}).get("containers", []):
            yield doc, container


def _k8s_env(container: dict) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its own env entries."""
    maps = {d["metadata"]["name"]: d["data"] for d in _k8s_docs() if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return env


def _compose_ours() -> dict[str, dict]:
    return {
        name: svc for name, svc in _compose()["services"].items() if svc["image"].startswith(IMAGE)
    }


def _assert_cli_accepts(args: list[str]) -> None:
    """Parse ``interest-stream ARGS`` with the real CLI, without running it."""
    ctx = click.Context(main, info_name="interest-stream")
    command = main.get_command(ctx, args[0])
    assert command is not None, f"unknown command {args[0]}"
    try:
        command.make_context(args[0], list(args[1:]), parent=ctx)
    except click.UsageError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"interest-stream {shlex.join(args)}: {exc}")


def _settings_from(env: dict[str, str]) -> Settings:
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    known = {ENV_PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    assert set(ours) <= known, f"not settings: {sorted(set(ours) - known)}"
    return load_settings(ours)


def test_everything_parses() -> None:
    kinds = {d["kind"] for d in _k8s_docs()}
    assert {"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Job", "Service"} <= kinds
    assert set(_compose()["services"]) == {"kafka", "cassandra", "init", "worker", "encoder"}


def test_k8s_containers_run_real_commands_with_valid_settings() -> None:
    ours = [(d, c) for d, c in _k8s_containers() if c["image"].startswith(IMAGE)]
    assert {d["metadata"]["name"] for d, _ in ours} == {
        "interest-stream-init", "interest-stream-worker", "interest-stream-encoder",
    }  # fmt: skip
    for _doc, container in ours:
        _assert_cli_accepts(container["args"])
        settings = _settings_from(_k8s_env(container))
        assert settings.store == "cassandra"
        assert settings.bootstrap_servers, "workers must not start an embedded broker"


def test_compose_services_run_real_commands_with_valid_settings() -> None:
    for svc in _compose_ours().values():
        _assert_cli_accepts(svc["command"])
        settings = _settings_from(svc["environment"])
        assert settings.bootstrap_servers.split(":")[0] == "kafka"
        assert settings.cassandra_contact_points == "cassandra"


def _by_name(kind: str, name: str) -> dict:
    return next(d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_topic_replication_fits_the_kafka_cluster() -> None:
    kafka = _by_name("StatefulSet", "kafka")
    settings = _settings_from(_by_name("ConfigMap", "interest-stream-settings")["data"])
    assert settings.replication_factor <= kafka["spec"]["replicas"]
    assert len(settings.bootstrap_servers.split(",")) == kafka["spec"]["replicas"]
    worker = _by_name("Deployment", "interest-stream-worker")
    assert worker["spec"]["replicas"] <= settings.partitions, "idle workers beyond partitions"
    compose_kafka = _compose()["services"]["kafka"]["environment"]
    for svc in _compose_ours().values():
        assert int(svc["environment"]["INTEREST_STREAM_REPLICATION_FACTOR"]) == 1
    assert compose_kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_cassandra_datacenter_agrees() -> None:
    cassandra = _by_name("StatefulSet", "cassandra")
    server_env = {e["name"]: e["value"] for e in cassandra["spec"]["template"]["spec"][
        "containers"][0]["env"]}  # fmt: skip
    settings = _settings_from(_by_name("ConfigMap", "interest-stream-settings")["data"])
    replication = json.loads(settings.cassandra_replication)
    assert settings.cassandra_local_dc == server_env["CASSANDRA_DC"]
    assert replication["class"] == "NetworkTopologyStrategy"
    assert 1 <= replication[settings.cassandra_local_dc] <= cassandra["spec"]["replicas"]
    compose = _compose()["services"]
    for svc in _compose_ours().values():
        assert svc["environment"]["INTEREST_STREAM_CASSANDRA_LOCAL_DC"] == compose["cassandra"][
            "environment"]["CASSANDRA_DC"]  # fmt: skip


def test_gpu_encoder_workers() -> None:
    encoder = next(c for d, c in _k8s_containers() if d["metadata"]["name"].endswith("encoder"))
    settings = _settings_from(_k8s_env(encoder))
    assert encoder["image"].endswith("-gpu")
    assert encoder["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings.encoder_device == "cuda"
    assert encoder["args"][-2:] == ["--roles", "items"]
    worker = next(c for d, c in _k8s_containers() if d["metadata"]["name"].endswith("worker"))
    assert worker["args"][-2:] == ["--roles", "behaviours"]
    assert settings.app_id != _settings_from(_k8s_env(worker)).app_id, "own consumer group"
    compose = _compose()["services"]["encoder"]
    assert compose["build"]["args"]["EXTRA"] == "gpu"
    assert compose["environment"]["INTEREST_STREAM_ENCODER_DEVICE"] == "cuda"
    assert compose["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_every_container_requests_resources() -> None:
    for doc, container in _k8s_containers():
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(requests), doc["metadata"]["name"]
        assert "memory" in container["resources"].get("limits", {}), doc["metadata"]["name"]


def test_image_carries_the_encoder_and_schema_the_settings_name() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["interest-stream"]' in dockerfile
    assert "models export --out /opt/interest-stream/encoder" in dockerfile
    env = dict(
        line.strip().rstrip("\\").strip().split("=", 1)
        for line in dockerfile.split("ENV ", 1)[1].split("\n\n")[0].splitlines()
        if "=" in line
    )
    settings = _settings_from(env)
    assert settings.encoder_cache == "/opt/interest-stream/encoder"
    # The image installs the wheel, which carries the Cassandra schema itself.
    assert settings.cassandra_schema_file == "", "the packaged schema is the default"
