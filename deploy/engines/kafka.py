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

Optional TLS: ``start(home, tls=tls.ensure(home / "tls"))`` adds
``SSL://127.0.0.1:<ssl port>`` (``info.ports["ssl"]``, ``ssl_address(info)``)
and, with ``sasl_users`` too, ``SASL_SSL://127.0.0.1:<sasl_ssl port>``
(``info.ports["sasl_ssl"]``, ``sasl_ssl_address(info)``; same mechanisms and
users as SASL_PLAINTEXT). The broker presents the PKCS12 key store of the
:class:`~deploy.engines.tls.TlsMaterial` (no client certificates asked);
clients trust its CA, ``ca_file(info)``, and may check the host name
(127.0.0.1 or localhost). Ports: ``ssl_port``/``sasl_ssl_port``,
``INTEREST_STREAM_KAFKA_SSL_PORT``/``INTEREST_STREAM_KAFKA_SASL_SSL_PORT`` or
free ports. ``start`` returns once a client trusting that CA completes the
TLS handshake on the SSL listener and every user logs in over SASL_SSL with
PLAIN and SCRAM-SHA-512.

Reusing a running Kafka: it must already have every listener asked for (on
the ports asked for, if any) and accept the users and the CA; otherwise
``start`` raises :class:`EngineError` saying to stop it first.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import ssl
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from deploy.engines import common
from deploy.engines.common import EngineError, EngineInfo
from deploy.engines.tls import TlsMaterial
from streams.ports import free_port

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
# Under HOME/kafka: which CA the TLS listeners' certificate chains to.
TLS_RECORD = "tls.json"

log = logging.getLogger("deploy.engines.kafka")


@dataclass(frozen=True)
class Listener:
    """An optional client listener besides PLAINTEXT.

    ``role`` is its key in ``info.ports``; ``protocol`` the Kafka security
    protocol, also used as the listener's name; it exists when ``start`` got
    users (``sasl``) and/or TLS material (``tls``), as it needs them.
    """

    role: str
    protocol: str
    sasl: bool
    tls: bool

    @property
    def env(self) -> str:
        """The environment variable that may fix its port."""
        return f"INTEREST_STREAM_KAFKA_{self.role.upper()}_PORT"

    @property
    def config_prefix(self) -> str:
        """Prefix of its per-listener settings in server.properties."""
        return f"listener.name.{self.protocol.lower()}"


SASL = Listener("sasl", "SASL_PLAINTEXT", sasl=True, tls=False)
SSL = Listener("ssl", "SSL", sasl=False, tls=True)
SASL_SSL = Listener("sasl_ssl", "SASL_SSL", sasl=True, tls=True)
LISTENERS = (SASL, SSL, SASL_SSL)


class Kafka(common.EngineSpec):
    name = "kafka"
    main_class = "kafka.Kafka"
    ready_timeout = 90.0

    def __init__(
        self,
        version: str = VERSION,
        controller_port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
        tls: TlsMaterial | None = None,
        listener_ports: Mapping[str, int | None] | None = None,
    ) -> None:
        """``listener_ports``: role (``"sasl"``, ``"ssl"``, ``"sasl_ssl"``) -> port asked for."""
        self.version = version
        self.controller_port = controller_port
        self.sasl_users = dict(sasl_users or {})
        self.tls = tls
        self.listener_ports = {k: v for k, v in (listener_ports or {}).items() if v is not None}
        for text in (*self.sasl_users, *self.sasl_users.values()):
            if not _SASL_TEXT.fullmatch(text):
                raise EngineError(
                    f"kafka SASL user names and passwords may hold only letters, digits "
                    f"and _.@:+- (got {text!r})"
                )
        unused = set(self.listener_ports) - {x.role for x in self.listeners}
        if unused:
            raise EngineError(
                f"kafka {', '.join(sorted(unused))} port(s) given without the listener: "
                "SASL listeners need sasl_users, TLS listeners need tls"
            )

    def ports(self, port: int | None) -> dict[str, int]:
        client = port or common.env_int("INTEREST_STREAM_KAFKA_PORT") or DEFAULT_PORT
        controller = self.controller_port or common.env_int("INTEREST_STREAM_KAFKA_CONTROLLER_PORT")
        if controller is None:
            controller = (
                DEFAULT_CONTROLLER_PORT if client == DEFAULT_PORT else free_port(avoid=[client])
            )
        if controller == client:
            raise EngineError(f"kafka client and controller ports are both {client}")
        ports = {"client": client, "controller": controller}
        for listener in self.listeners:
            taken = list(ports.values())
            port = (
                self.listener_ports.get(listener.role)
                or common.env_int(listener.env)
                or free_port(avoid=taken)
            )
            if port in taken:
                raise EngineError(
                    f"kafka {listener.protocol} port {port} is also another of its ports"
                )
            ports[listener.role] = port
        return ports

    @property
    def listeners(self) -> list[Listener]:
        """The optional listeners this start has users and TLS material for."""
        return [
            listener
            for listener in LISTENERS
            if (self.sasl_users or not listener.sasl) and (self.tls or not listener.tls)
        ]

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
                **self._listener_template(ports),
            )
        )
        self._record_ca(home)
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

    def _listener_template(self, ports: Mapping[str, int]) -> dict[str, str]:
        """The optional listeners' placeholders of server.properties (empty without any)."""
        listeners = self.listeners
        lines = _tls_lines(self.tls) if self.tls else []
        for listener in listeners:
            if listener.sasl:
                lines += self._sasl_lines(listener)
        return {
            "extra_listeners": "".join(
                f",{x.protocol}://{common.LOOPBACK}:{ports[x.role]}" for x in listeners
            ),
            "extra_protocols": "".join(f",{x.protocol}:{x.protocol}" for x in listeners),
            "extra_config": "\n".join(["", *lines]) if lines else "",
        }

    def _sasl_lines(self, listener: Listener) -> list[str]:
        """PLAIN users in the listener's JAAS config; SCRAM users live in the metadata."""
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.sasl_users.items())
        prefix = listener.config_prefix
        lines = [
            f"# {listener.protocol} listener for clients (start(sasl_users=...)); brokers and",
            "# the controller keep talking PLAINTEXT, so no broker-side credentials.",
            f"{prefix}.sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}",
            f"{prefix}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        ]
        return lines + [
            f"{prefix}.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for m in SCRAM_MECHANISMS
        ]

    def _record_ca(self, home: Path) -> None:
        """Note the CA clients must trust in ``HOME/kafka/tls.json`` (see :func:`ca_file`)."""
        record = self.dir(home) / TLS_RECORD
        if self.tls is None:
            record.unlink(missing_ok=True)
        else:
            record.write_text(json.dumps({"ca_file": str(self.tls.ca_pem.resolve())}) + "\n")

    def probe(self, port: int, timeout: float) -> str | None:
        return self.version if broker_answers(common.LOOPBACK, port, timeout) else None

    def log_files(self, home: Path) -> list[Path]:
        logs = self.logs(home)
        return [logs / "server.log", logs / "kafka.out"]


def _tls_lines(material: TlsMaterial) -> list[str]:
    """The key store every TLS listener presents (start(tls=...)); no client certs.

    An absolute path: the broker runs in ``HOME/kafka``, not in our directory.
    """
    return [
        "# Key store of the SSL and SASL_SSL listeners (start(tls=...)).",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={material.keystore.resolve()}",
        f"ssl.keystore.password={material.password}",
        f"ssl.key.password={material.password}",
        "ssl.client.auth=none",
    ]


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


def client_ssl_context(ca_file: Path | str) -> ssl.SSLContext:
    """A client TLS context trusting only ``ca_file``, checking the host name."""
    return ssl.create_default_context(cafile=str(ca_file))


def _connect(address: str, timeout: float, **options: Any) -> None:
    """One aiokafka connection, closed again: TCP, the TLS handshake if asked,
    ApiVersions, and the SASL login if asked (``options`` as ``create_conn``'s).

    aiokafka, not kafka-python: kafka-python 3 retries a refused login or
    handshake until its bootstrap timeout and then raises a bare
    ``KafkaTimeoutError``, while aiokafka's connection raises the cause at once.
    """
    from aiokafka.conn import create_conn

    host, port = address.rsplit(":", 1)

    async def connect() -> None:
        conn = await create_conn(
            host,
            int(port),
            client_id="interest-stream-engines-probe",
            request_timeout_ms=int(timeout * 1000),
            **options,
        )
        conn.close()

    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.ERROR)  # "credentials in the clear" is the point of SASL_PLAINTEXT
    try:
        asyncio.run(asyncio.wait_for(connect(), timeout))
    finally:
        client_log.setLevel(level)


def sasl_authenticates(
    address: str,
    mechanism: str,
    username: str,
    password: str,
    timeout: float = 5.0,
    ca_file: Path | str | None = None,
) -> bool:
    """True if ``username``/``password`` pass ``mechanism`` on a SASL listener.

    SASL_PLAINTEXT, or SASL_SSL trusting ``ca_file`` when given. False if the
    broker refuses the login; :class:`EngineError` if the listener does not
    answer within ``timeout`` or the TLS handshake fails.
    """
    from aiokafka.errors import SaslAuthenticationFailed

    tls: dict[str, Any] = (
        {"security_protocol": "SASL_PLAINTEXT"}
        if ca_file is None
        else {"security_protocol": "SASL_SSL", "ssl_context": client_ssl_context(ca_file)}
    )
    try:
        _connect(
            address,
            timeout,
            sasl_mechanism=mechanism,
            sasl_plain_username=username,
            sasl_plain_password=password,
            **tls,
        )
        return True
    except SaslAuthenticationFailed:
        return False
    except ssl.SSLError as exc:
        raise EngineError(f"kafka TLS handshake with {address} failed: {exc}") from exc
    except (TimeoutError, OSError, RuntimeError) as exc:  # aiokafka.errors.KafkaError too
        raise EngineError(f"kafka SASL listener {address} does not answer: {exc!r}") from exc


def tls_handshakes(address: str, ca_file: Path | str, timeout: float = 5.0) -> bool:
    """True if the SSL listener's certificate verifies against ``ca_file`` (host
    name included) and Kafka answers over TLS; False if verification fails;
    :class:`EngineError` if the listener does not answer within ``timeout``.
    """
    try:
        _connect(address, timeout, security_protocol="SSL", ssl_context=client_ssl_context(ca_file))
        return True
    except ssl.SSLCertVerificationError:
        return False
    except (TimeoutError, OSError, RuntimeError) as exc:  # ssl.SSLError and KafkaError too
        raise EngineError(f"kafka SSL listener {address} does not answer: {exc!r}") from exc


def _address(info: EngineInfo, listener: Listener, hint: str) -> str:
    port = info.ports.get(listener.role)
    if port is None:
        raise EngineError(
            f"kafka at {info.address} has no {listener.protocol} listener; start it with {hint}"
        )
    return f"{info.host}:{port}"


def sasl_address(info: EngineInfo) -> str:
    """``host:port`` of the SASL_PLAINTEXT listener of a Kafka started with ``sasl_users``."""
    return _address(info, SASL, "sasl_users")


def ssl_address(info: EngineInfo) -> str:
    """``host:port`` of the SSL listener of a Kafka started with ``tls``."""
    return _address(info, SSL, "tls")


def sasl_ssl_address(info: EngineInfo) -> str:
    """``host:port`` of the SASL_SSL listener of a Kafka started with ``sasl_users`` and ``tls``."""
    return _address(info, SASL_SSL, "sasl_users and tls")


def ca_file(info: EngineInfo) -> Path:
    """The CA file clients of ``info``'s TLS listeners trust (recorded at start)."""
    ssl_address(info)  # raises if there is no TLS listener
    record = info.home / "kafka" / TLS_RECORD
    try:
        return Path(json.loads(record.read_text())["ca_file"])
    except (OSError, ValueError, KeyError) as exc:
        raise EngineError(f"kafka at {info.address}: cannot read {record}: {exc}") from exc


def _require_listeners(info: EngineInfo, spec: Kafka) -> None:
    """A reused Kafka must have every listener asked for, on the port asked for."""
    for listener in spec.listeners:
        running = info.ports.get(listener.role)
        if running is None:
            raise EngineError(
                f"kafka already runs for {info.home / 'kafka'} (pid {info.pid}) but has no "
                f"{listener.protocol} listener; stop it first or use another --home"
            )
        asked = spec.listener_ports.get(listener.role)
        if asked is not None and asked != running:
            raise EngineError(
                f"kafka already runs for {info.home / 'kafka'} with its {listener.protocol} "
                f"listener on port {running}, not on the {asked} asked for; stop it first"
            )


def _wait_login(
    address: str,
    mechanism: str,
    name: str,
    password: str,
    deadline: float,
    ca_file: Path | None = None,
) -> None:
    """Retry a login until the broker knows the user (new SCRAM credentials) or ``deadline``."""
    while not sasl_authenticates(address, mechanism, name, password, ca_file=ca_file):
        if time.monotonic() > deadline:
            raise EngineError(f"kafka at {address} still refuses {mechanism} user {name!r}")
        time.sleep(0.2)


def _ensure_sasl_users(info: EngineInfo, users: Mapping[str, str], timeout: float) -> None:
    """Check every user logs in on the SASL listener; add missing SCRAM credentials.

    SCRAM users are missing when the storage was formatted earlier without
    them (or for other users); they are then upserted over PLAINTEXT, which
    needs no credentials, and the login retried until the broker has them.
    """
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
        _wait_login(address, "SCRAM-SHA-256", name, users[name], deadline)


def _check_tls(
    info: EngineInfo, material: TlsMaterial, users: Mapping[str, str], timeout: float
) -> None:
    """A client trusting ``material``'s CA gets through the SSL listener's handshake,
    and every user logs in over SASL_SSL with PLAIN and SCRAM-SHA-512."""
    address = ssl_address(info)
    if not tls_handshakes(address, material.ca_pem):
        raise EngineError(
            f"kafka at {address} presents a certificate that {material.ca_pem} does not "
            "verify: it runs with other TLS material; stop it and start again"
        )
    if not users:
        return
    address = sasl_ssl_address(info)
    deadline = time.monotonic() + timeout
    for name, password in users.items():
        if not sasl_authenticates(address, "PLAIN", name, password, ca_file=material.ca_pem):
            raise EngineError(f"kafka at {address} refuses PLAIN user {name!r} over SASL_SSL")
        # SCRAM-SHA-512 may have been upserted a moment ago (see _ensure_sasl_users).
        _wait_login(address, "SCRAM-SHA-512", name, password, deadline, material.ca_pem)


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


def start(
    home: Path,
    port: int | None = None,
    controller_port: int | None = None,
    timeout: float | None = None,
    sasl_users: Mapping[str, str] | None = None,
    sasl_port: int | None = None,
    tls: TlsMaterial | None = None,
    ssl_port: int | None = None,
    sasl_ssl_port: int | None = None,
) -> EngineInfo:
    """Start Kafka under ``home`` (or reuse the one running there); see module doc.

    ``sasl_users`` (name -> password) adds the SASL_PLAINTEXT listener, on
    ``sasl_port`` or a free port; :func:`sasl_address` gives its address.
    ``tls`` (e.g. ``tls.ensure(home / "tls")``) adds the SSL listener
    (``ssl_port``, :func:`ssl_address`) and, with ``sasl_users``, the SASL_SSL
    one (``sasl_ssl_port``, :func:`sasl_ssl_address`); :func:`ca_file` names
    the CA their clients trust.
    """
    ports = {"sasl": sasl_port, "ssl": ssl_port, "sasl_ssl": sasl_ssl_port}
    spec = Kafka(
        controller_port=controller_port, sasl_users=sasl_users, tls=tls, listener_ports=ports
    )
    info = common.start(spec, home, port, timeout)
    if spec.listeners:
        began = time.monotonic()
        try:
            _check_listeners(info, spec, timeout or spec.ready_timeout)
        except BaseException:
            if not info.reused:  # half set up: leave nothing running, as a failed start does
                common.stop(spec, home)
            raise
        log.info(
            "kafka %s accept(s) %d user(s)%s (checked in %.2f s)",
            ", ".join(f"{x.protocol} :{info.ports[x.role]}" for x in spec.listeners),
            len(spec.sasl_users),
            f", TLS trusting {spec.tls.ca_pem}" if spec.tls else "",
            time.monotonic() - began,
        )
    return info


def _check_listeners(info: EngineInfo, spec: Kafka, timeout: float) -> None:
    """The optional listeners exist and accept the users and the CA of ``spec``."""
    _require_listeners(info, spec)
    if spec.sasl_users:
        _ensure_sasl_users(info, spec.sasl_users, timeout)
    if spec.tls is not None:
        _check_tls(info, spec.tls, spec.sasl_users, timeout)


def stop(home: Path) -> bool:
    """Stop the Kafka of ``home``; False if none was running."""
    return common.stop(Kafka(), home)


def status(home: Path) -> EngineInfo | None:
    """The running, answering Kafka of ``home``, or None."""
    return common.status(Kafka(), home)


__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "LISTENERS",
    "SASL_MECHANISMS",
    "VERSION",
    "EngineError",
    "EngineInfo",
    "Listener",
    "TlsMaterial",
    "ca_file",
    "client_ssl_context",
    "sasl_address",
    "sasl_authenticates",
    "sasl_ssl_address",
    "ssl_address",
    "start",
    "status",
    "stop",
    "tls_handshakes",
]
