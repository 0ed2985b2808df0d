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

Optional SASL: ``start(home, sasl_users={"alice": "alice-secret"})`` adds a
second listener ``SASL_PLAINTEXT://127.0.0.1:<sasl port>`` (``sasl_port``,
``INTEREST_STREAM_KAFKA_SASL_PORT`` or a free port; ``info.ports["sasl"]``,
``sasl_address(info)``) accepting PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for
those users. PLAINTEXT stays the default client and inter-broker listener.
PLAIN users live in the listener's JAAS config, rewritten at every start.
SCRAM credentials live in the cluster metadata: written by StorageTool
``--add-scram`` when the storage is formatted, and upserted through the Admin
API (AlterUserScramCredentials, over PLAINTEXT) when the storage was
formatted earlier without them. ``start`` returns once every user
authenticates on the SASL listener with PLAIN and SCRAM-SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import subprocess
import time
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
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Names and passwords go unquoted into StorageTool's --add-scram and inside
# double quotes into the JAAS config: keep them to characters safe in both.
_SASL_TEXT = re.compile(r"[A-Za-z0-9_.@:+-]+")

log = logging.getLogger("deploy.engines.kafka")


class Kafka(common.EngineSpec):
    name = "kafka"
    main_class = "kafka.Kafka"
    ready_timeout = 90.0

    def __init__(
        self,
        version: str = VERSION,
        controller_port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
        sasl_port: int | None = None,
    ) -> None:
        self.version = version
        self.controller_port = controller_port
        self.sasl_users = dict(sasl_users or {})
        self.sasl_port = sasl_port
        for text in (*self.sasl_users, *self.sasl_users.values()):
            if not _SASL_TEXT.fullmatch(text):
                raise EngineError(
                    f"kafka SASL user names and passwords may hold only letters, digits "
                    f"and _.@:+- (got {text!r})"
                )

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
        ports = {"client": client, "controller": controller}
        if self.sasl_users:
            sasl = (
                self.sasl_port
                or common.env_int("INTEREST_STREAM_KAFKA_SASL_PORT")
                or common.free_port(avoid=[client, controller])
            )
            if sasl in (client, controller):
                raise EngineError(f"kafka SASL port {sasl} is also its client or controller port")
            ports["sasl"] = sasl
        return ports

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
                **self._sasl_template(ports.get("sasl")),
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
        for name, password in self.sasl_users.items():
            for mechanism in SCRAM_MECHANISMS:
                cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        log.info("formatting kafka storage %s (cluster id %s)", self.data(home), cluster_id)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise EngineError(
                f"kafka StorageTool format failed (exit {proc.returncode}):\n"
                + (proc.stdout + proc.stderr).strip()[-3000:]
            )

    def _sasl_template(self, port: int | None) -> dict[str, str]:
        """The SASL placeholders of server.properties: empty without a SASL port."""
        if port is None:
            return {"sasl_listener": "", "sasl_protocol": "", "sasl_config": ""}
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.sasl_users.items())
        prefix = "listener.name.sasl_plaintext"
        lines = [
            "# SASL_PLAINTEXT listener for clients (start(sasl_users=...)); brokers and",
            "# the controller keep talking PLAINTEXT, so no broker-side credentials.",
            f"{prefix}.sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}",
            f"{prefix}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        ]
        lines += [
            f"{prefix}.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for m in SCRAM_MECHANISMS
        ]
        return {
            "sasl_listener": f",SASL_PLAINTEXT://{common.LOOPBACK}:{port}",
            "sasl_protocol": ",SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl_config": "\n" + "\n".join(lines),
        }

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


def sasl_authenticates(
    address: str, mechanism: str, username: str, password: str, timeout: float = 5.0
) -> bool:
    """True if ``username``/``password`` pass ``mechanism`` on the SASL listener.

    False if the broker refuses the login; :class:`EngineError` if the listener
    does not answer within ``timeout``. One aiokafka connection, not a
    kafka-python client: kafka-python 3 retries a refused login until its
    bootstrap timeout and then raises a bare ``KafkaTimeoutError``, while
    aiokafka's connection raises ``SaslAuthenticationFailed`` at once.
    """
    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed

    host, port = address.rsplit(":", 1)

    async def login() -> None:
        conn = await create_conn(
            host,
            int(port),
            client_id="interest-stream-engines-sasl-probe",
            request_timeout_ms=int(timeout * 1000),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username=username,
            sasl_plain_password=password,
        )
        conn.close()

    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.ERROR)  # "credentials in the clear" is the point here
    try:
        asyncio.run(asyncio.wait_for(login(), timeout))
        return True
    except SaslAuthenticationFailed:
        return False
    except (TimeoutError, OSError, RuntimeError) as exc:  # aiokafka.errors.KafkaError too
        raise EngineError(f"kafka SASL listener {address} does not answer: {exc!r}") from exc
    finally:
        client_log.setLevel(level)


def sasl_address(info: EngineInfo) -> str:
    """``host:port`` of the SASL_PLAINTEXT listener of a Kafka started with ``sasl_users``."""
    port = info.ports.get("sasl")
    if port is None:
        raise EngineError(f"kafka at {info.address} has no SASL listener; start it with sasl_users")
    return f"{info.host}:{port}"


def _ensure_sasl_users(
    info: EngineInfo, users: Mapping[str, str], sasl_port: int | None, timeout: float
) -> None:
    """Check every user logs in on the SASL listener; add missing SCRAM credentials.

    SCRAM users are missing when the storage was formatted earlier without
    them (or for other users); they are then upserted over PLAINTEXT, which
    needs no credentials, and the login retried until the broker has them.
    """
    if "sasl" not in info.ports:
        raise EngineError(
            f"kafka already runs for {info.home / 'kafka'} (pid {info.pid}) without a SASL "
            "listener; stop it first or use another --home"
        )
    if sasl_port is not None and sasl_port != info.ports["sasl"]:
        raise EngineError(
            f"kafka already runs for {info.home / 'kafka'} with its SASL listener on port "
            f"{info.ports['sasl']}, not on the {sasl_port} asked for; stop it first"
        )
    address = sasl_address(info)
    for name, password in users.items():
        if not sasl_authenticates(address, "PLAIN", name, password):
            raise EngineError(
                f"kafka at {address} refuses PLAIN user {name!r}: PLAIN users are fixed when "
                "Kafka starts; stop it and start again with these users"
            )
    missing = [
        name
        for name, password in users.items()
        if not sasl_authenticates(address, "SCRAM-SHA-256", name, password)
    ]
    if not missing:
        return
    log.info("adding SCRAM credentials for %s to the formatted storage", ", ".join(missing))
    _upsert_scram(info.address, {name: users[name] for name in missing})
    deadline = time.monotonic() + timeout
    for name in missing:
        while not sasl_authenticates(address, "SCRAM-SHA-256", name, users[name]):
            if time.monotonic() > deadline:
                raise EngineError(f"kafka at {address} still refuses SCRAM user {name!r}")
            time.sleep(0.2)


def _upsert_scram(bootstrap: str, users: Mapping[str, str]) -> None:
    from kafka.admin import KafkaAdminClient, UserScramCredentialUpsertion

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interest-stream-engines")
    failed: dict[str, str] = {}
    try:
        # One request per mechanism: Kafka refuses a user altered twice in one request.
        for mechanism in SCRAM_MECHANISMS:
            errors = admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(n, mechanism, p) for n, p in users.items()]
            )
            failed.update({f"{user} ({mechanism})": e for user, e in errors.items() if e})
    finally:
        admin.close()
    if failed:
        raise EngineError(f"kafka refused SCRAM credentials: {failed}")


def _spec(
    controller_port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    sasl_port: int | None = None,
) -> Kafka:
    return Kafka(controller_port=controller_port, sasl_users=sasl_users, sasl_port=sasl_port)


def start(
    home: Path,
    port: int | None = None,
    controller_port: int | None = None,
    timeout: float | None = None,
    sasl_users: Mapping[str, str] | None = None,
    sasl_port: int | None = None,
) -> EngineInfo:
    """Start Kafka under ``home`` (or reuse the one running there); see module doc.

    ``sasl_users`` (name -> password) adds the SASL_PLAINTEXT listener, on
    ``sasl_port`` or a free port; :func:`sasl_address` gives its address.
    """
    spec = _spec(controller_port, sasl_users, sasl_port)
    info = common.start(spec, home, port, timeout)
    if spec.sasl_users:
        began = time.monotonic()
        try:
            _ensure_sasl_users(info, spec.sasl_users, sasl_port, timeout or spec.ready_timeout)
        except BaseException:
            if not info.reused:  # half set up: leave nothing running, as a failed start does
                common.stop(spec, home)
            raise
        log.info(
            "kafka SASL listener %s accepts %d user(s) (checked in %.1f s)",
            sasl_address(info),
            len(spec.sasl_users),
            time.monotonic() - began,
        )
    return info


def stop(home: Path) -> bool:
    """Stop the Kafka of ``home``; False if none was running."""
    return common.stop(_spec(), home)


def status(home: Path) -> EngineInfo | None:
    """The running, answering Kafka of ``home``, or None."""
    return common.status(_spec(), home)


__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "SASL_MECHANISMS",
    "VERSION",
    "EngineError",
    "EngineInfo",
    "sasl_address",
    "sasl_authenticates",
    "start",
    "status",
    "stop",
]
