"""Apache Kafka 4.x single node (KRaft, combined broker + controller) on loopback.

    from deploy.engines import kafka
    info = kafka.start(home)          # EngineInfo; info.address is the bootstrap server
    kafka.status(home)                # EngineInfo | None
    kafka.stop(home)

Ports: client 9092 and controller 9093 unless ``port``/``controller_port`` or
``INTEREST_STREAM_KAFKA_PORT``/``INTEREST_STREAM_KAFKA_CONTROLLER_PORT`` say
otherwise (with a non-default client port the controller gets a free port).
The storage under ``HOME/kafka/data`` is formatted once with Kafka's
StorageTool; the cluster id is kept in ``HOME/kafka/cluster.id`` so restarts
reuse the data. Ready means a metadata request (DescribeCluster) answered with
this broker in it.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from string import Template

from deploy.engines import common
from deploy.engines.common import EngineError, EngineInfo

VERSION = os.environ.get("INTEREST_STREAM_KAFKA_VERSION", "4.1.2")
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
HEAP = os.environ.get("INTEREST_STREAM_KAFKA_HEAP", "512m")
DEPLOY = common.REPO_ROOT / "deploy" / "kafka"

log = logging.getLogger("deploy.engines.kafka")


class Kafka(common.EngineSpec):
    name = "kafka"
    main_class = "kafka.Kafka"
    ready_timeout = 90.0

    def __init__(self, version: str = VERSION, controller_port: int | None = None) -> None:
        self.version = version
        self.controller_port = controller_port

    def ports(self, port: int | None) -> dict[str, int]:
        client = port or common.env_int("INTEREST_STREAM_KAFKA_PORT") or DEFAULT_PORT
        controller = self.controller_port or common.env_int("INTEREST_STREAM_KAFKA_CONTROLLER_PORT")
        if controller is None:
            controller = (
                DEFAULT_CONTROLLER_PORT
                if client == DEFAULT_PORT
                else common.free_port(avoid=[client])
            )
        if controller == client:
            raise EngineError(f"kafka client and controller ports are both {client}")
        return {"client": client, "controller": controller}

    def jars(self) -> Path:
        return common.ensure_jars(
            self.name, self.version, DEPLOY / "pom.xml", version_property="kafka.version"
        )

    def jvm(self, home: Path, jars: Path) -> list[str]:
        """The JVM and its options shared by the broker and the storage tool."""
        return [
            "java",
            f"-Xmx{HEAP}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dkafka.logs.dir={self.logs(home)}",
            f"-Dlog4j2.configurationFile={(DEPLOY / 'log4j2.properties').as_uri()}",
            f"-XX:ErrorFile={self.logs(home)}/hs_err_%p.log",
            "-cp",
            f"{jars}/*",
        ]

    def prepare(self, home: Path, ports: Mapping[str, int], jars: Path) -> list[str]:
        config = self.dir(home) / "server.properties"
        template = Template((DEPLOY / "server.properties").read_text())
        config.write_text(
            template.substitute(
                port=ports["client"],
                controller_port=ports["controller"],
                log_dirs=self.data(home),
            )
        )
        if not (self.data(home) / "meta.properties").exists():
            self._format(home, config, jars)
        return [*self.jvm(home, jars), self.main_class, str(config)]

    def _format(self, home: Path, config: Path, jars: Path) -> None:
        id_file = self.dir(home) / "cluster.id"
        if not id_file.exists():
            id_file.write_text(random_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        cmd = [
            *self.jvm(home, jars),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
            "--ignore-formatted",
        ]
        log.info("formatting kafka storage %s (cluster id %s)", self.data(home), cluster_id)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise EngineError(
                f"kafka StorageTool format failed (exit {proc.returncode}):\n"
                + (proc.stdout + proc.stderr).strip()[-3000:]
            )

    def probe(self, port: int, timeout: float) -> str | None:
        return self.version if broker_answers(common.LOOPBACK, port, timeout) else None

    def log_files(self, home: Path) -> list[Path]:
        logs = self.logs(home)
        return [logs / "server.log", logs / "kafka.out"]


def random_cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid()`` prints it.

    URL-safe base64 of 16 random bytes, no padding; Kafka avoids ids starting
    with '-' (they read as command-line options), so do we.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def broker_answers(host: str, port: int, timeout: float) -> bool:
    """True if the broker answers DescribeCluster and lists itself as a broker."""
    if not common.port_answers(port, host):
        return False
    from kafka.admin import KafkaAdminClient

    # kafka-python logs every refused connection; expected while waiting.
    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"{host}:{port}",
            client_id="interest-stream-engines-probe",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
        )
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except Exception:  # any client error means "not answering yet"
        return False
    finally:
        if admin is not None:
            admin.close()
        client_log.setLevel(level)


def _spec(controller_port: int | None = None) -> Kafka:
    return Kafka(controller_port=controller_port)


def start(
    home: Path,
    port: int | None = None,
    controller_port: int | None = None,
    timeout: float | None = None,
) -> EngineInfo:
    """Start Kafka under ``home`` (or reuse the one running there); see module doc."""
    return common.start(_spec(controller_port), home, port, timeout)


def stop(home: Path) -> bool:
    """Stop the Kafka of ``home``; False if none was running."""
    return common.stop(_spec(), home)


def status(home: Path) -> EngineInfo | None:
    """The running, answering Kafka of ``home``, or None."""
    return common.status(_spec(), home)


__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "VERSION",
    "EngineError",
    "EngineInfo",
    "start",
    "status",
    "stop",
]
