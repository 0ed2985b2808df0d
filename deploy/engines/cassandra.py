"""Apache Cassandra 5.0 single node on loopback, from Maven Central jars.

    from deploy.engines import cassandra
    info = cassandra.start(home)      # EngineInfo; info.host / info.port for the driver
    cassandra.status(home)            # EngineInfo | None
    cassandra.stop(home)

Ports: native (CQL) 9042 unless ``port`` or ``INTEREST_STREAM_CASSANDRA_PORT``
says otherwise; the internode storage port is
``INTEREST_STREAM_CASSANDRA_STORAGE_PORT`` or a free one. No JMX port is opened
(``nodetool`` is not needed here). Ready means ``SELECT release_version FROM
system.local`` answered through cassandra-driver.

Startup is on CI's critical path, so the JVM skips what a one-node test
cluster never needs: waiting for gossip to settle, a long ring delay, the 2 s
pause after announcing shutdown to peers, and fsyncs of the system keyspace
(``cassandra.unsafesystem``: schema changes, which tests make a lot, flush
system tables; user data keeps its commit log). The initial heap is small
because Cassandra mlockall()s the JVM when it may (as root), which makes every
committed page resident: 256 MB initial heap gives ~650 MB resident instead of
~1.2 GB.

Optional security, as a production cluster has it::

    cassandra.start(home, users={"app": "app-secret"}, tls=tls.ensure(home / "tls"))

``users`` turns on ``PasswordAuthenticator`` and ``CassandraAuthorizer`` and
creates those login roles (allowed to create keyspaces; a role owns what it
creates); ``tls`` makes the native port TLS-only with that server key store
of :mod:`deploy.engines.tls` (shareable with Kafka; clients verify it with its
``ca.pem``, see :func:`ca_file`).
The readiness probe then logs in as Cassandra's default superuser
(``cassandra``/``cassandra``, created at once instead of after 10 s). The mode is
kept in ``HOME/cassandra/security.json``: a start asking for another mode
than the running node has is refused at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from deploy.engines import common
from deploy.engines.common import EngineError, EngineInfo
from deploy.engines.tls import TlsMaterial
from deploy.engines.tls import ensure as ensure_tls
from streams.ports import free_port

if TYPE_CHECKING:
    from cassandra.cluster import Session

VERSION = os.environ.get("INTEREST_STREAM_CASSANDRA_VERSION", "5.0.9")
DEFAULT_PORT = 9042
HEAP = os.environ.get("INTEREST_STREAM_CASSANDRA_HEAP", "768m")
DEPLOY = common.REPO_ROOT / "deploy" / "cassandra"

#: Cassandra's default superuser (made at first start under PasswordAuthenticator).
SUPERUSER = ("cassandra", "cassandra")
# Role names and passwords go inside CQL quotes: keep them to safe characters.
_ROLE_TEXT = re.compile(r"[A-Za-z0-9_.@:+-]+")

log = logging.getLogger("deploy.engines.cassandra")


@dataclass(frozen=True)
class Security:
    """How a local Cassandra guards its native port.

    ``users``: login roles (name -> password) besides the superuser; any
    means password authentication is on. ``tls``: the key store of a
    TLS-only native port, None for plain TCP.
    """

    users: Mapping[str, str] = field(default_factory=dict)
    tls: TlsMaterial | None = None

    @property
    def auth(self) -> bool:
        return bool(self.users)

    def mode(self) -> dict[str, bool]:
        return {"auth": self.auth, "tls": self.tls is not None}

    def yaml(self) -> str:
        """The cassandra.yaml lines for this mode."""
        lines = []
        if self.auth:
            lines += [
                "authenticator: PasswordAuthenticator",
                "authorizer: CassandraAuthorizer",
                "role_manager: CassandraRoleManager",
            ]
        if self.tls is not None:
            lines += [
                "client_encryption_options:",
                "  enabled: true",
                "  optional: false",
                f"  keystore: {self.tls.keystore}",
                f"  keystore_password: {self.tls.password}",
                "  store_type: PKCS12",
                "  require_client_auth: false",
            ]
        return "\n".join(lines)


class Cassandra(common.EngineSpec):
    name = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"
    ready_timeout = 180.0

    def __init__(self, version: str = VERSION, security: Security | None = None) -> None:
        self.version = version
        self.security = security or Security()
        for text in (*self.security.users, *self.security.users.values()):
            if not _ROLE_TEXT.fullmatch(text):
                raise EngineError(
                    f"cassandra role names and passwords may hold only letters, digits "
                    f"and _.@:+- (got {text!r})"
                )

    def mode_file(self, home: Path) -> Path:
        return self.dir(home) / "security.json"

    def ports(self, port: int | None) -> dict[str, int]:
        native = port or common.env_int("INTEREST_STREAM_CASSANDRA_PORT") or DEFAULT_PORT
        storage = common.env_int("INTEREST_STREAM_CASSANDRA_STORAGE_PORT") or free_port(
            avoid=[native]
        )
        return {"native": native, "storage": storage}

    def jars(self) -> Path:
        return common.ensure_jars(
            self.name, self.version, DEPLOY / "pom.xml", version_property="cassandra.version"
        )

    def prepare(self, home: Path, ports: Mapping[str, int], jars: Path) -> list[str]:
        conf = self.dir(home) / "conf"
        tmp = self.dir(home) / "tmp"  # JNA and snappy unpack native code here: must allow exec
        conf.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        yaml = conf / "cassandra.yaml"
        template = Template((DEPLOY / "cassandra.yaml").read_text())
        yaml.write_text(
            template.substitute(
                storage_port=ports["storage"],
                native_port=ports["native"],
                security=self.security.yaml(),
            )
        )
        folder = str(self.security.tls.folder) if self.security.tls else None
        self.mode_file(home).write_text(
            json.dumps({**self.security.mode(), "tls_folder": folder}) + "\n"
        )
        logs = self.logs(home)
        return [
            "java",
            *jvm_options(DEPLOY / "jvm17.options"),
            # A small initial heap: Cassandra mlockall()s the JVM when it can
            # (as root), which makes every committed page resident at once.
            "-Xms256m",
            f"-Xmx{HEAP}",
            f"-javaagent:{common.find_jar(jars, 'jamm-')}",
            f"-Dcassandra.config={yaml.as_uri()}",
            f"-Dcassandra.storagedir={self.data(home)}",
            f"-Dcassandra.logdir={logs}",
            f"-Dlogback.configurationFile={(DEPLOY / 'logback.xml').as_uri()}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            "-Dcassandra.unsafesystem=true",
            # Nobody to tell: the default waits 2 s after announcing shutdown.
            "-Dcassandra.shutdown_announce_in_ms=100",
            # The default superuser is made 10 s after startup unless told otherwise.
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Dchronicle.announcer.disable=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Djna.tmpdir={tmp}",
            f"-Djava.io.tmpdir={tmp}",
            f"-XX:ErrorFile={logs}/hs_err_%p.log",
            "-cp",
            f"{jars}/*",
            self.main_class,
        ]

    def probe(self, port: int, timeout: float) -> str | None:
        login = SUPERUSER if self.security.auth else None
        ca = self.security.tls.ca_pem if self.security.tls else None
        return query_release_version(common.LOOPBACK, port, timeout, login=login, ca_file=ca)

    def log_files(self, home: Path) -> list[Path]:
        logs = self.logs(home)
        return [logs / "system.log", logs / "cassandra.out"]


def jvm_options(path: Path) -> list[str]:
    """Options from a jvm*.options file: one per line, '#' comments, blank lines."""
    options = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            # "--add-opens a=b" is one option written with a space; java takes
            # it as two arguments or as "--add-opens=a=b".
            options.append(line.replace(" ", "=", 1) if line.startswith("--") else line)
    return options


def query_release_version(
    host: str,
    port: int,
    timeout: float,
    login: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> str | None:
    """``release_version`` from ``system.local`` through cassandra-driver, or None.

    ``login`` (user, password) and ``ca_file`` (TLS, verified) for a secured node.
    """
    if not common.port_answers(port, host):
        return None
    try:
        with _session(host, port, timeout, login, ca_file) as session:
            row = session.execute("SELECT release_version FROM system.local", timeout=timeout).one()
            return str(row.release_version) if row else None
    except Exception:  # any driver error means "not answering yet"
        return None


@contextlib.contextmanager
def _session(
    host: str,
    port: int,
    timeout: float,
    login: tuple[str, str] | None,
    ca_file: Path | None,
) -> Iterator[Session]:
    """A short-lived driver session, quiet while the node may still be starting."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    # The driver logs every failed connection attempt at WARNING/ERROR; while
    # waiting for a node to come up those are expected.
    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    cluster = Cluster(
        [host],
        port=port,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout
            )
        },
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        auth_provider=PlainTextAuthProvider(*login) if login else None,
        ssl_context=ssl.create_default_context(cafile=str(ca_file)) if ca_file else None,
        protocol_version=5,
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()
        driver_log.setLevel(level)


def _ensure_roles(info: EngineInfo, security: Security) -> None:
    """Create the login roles (each may create keyspaces); check each logs in.

    A role left from an earlier start with another password gets the new one.
    The node allows one password change per 5 s and caches credentials for
    ~2 s, so that change is retried until the login works.
    """
    from cassandra.cluster import NoHostAvailable

    ca = security.tls.ca_pem if security.tls else None
    with _session(info.host, info.port, 30.0, SUPERUSER, ca) as session:
        for name, password in security.users.items():
            session.execute(
                f"CREATE ROLE IF NOT EXISTS '{name}' WITH PASSWORD = '{password}' AND LOGIN = true"
            )
            session.execute(f"GRANT CREATE ON ALL KEYSPACES TO '{name}'")
            deadline = time.monotonic() + 20.0
            while not _logs_in(info, (name, password), ca):
                if time.monotonic() > deadline:
                    raise EngineError(f"cassandra at {info.address} refuses role {name!r}")
                with contextlib.suppress(NoHostAvailable):  # "can only be changed every 5000ms"
                    session.execute(f"ALTER ROLE '{name}' WITH PASSWORD = '{password}'")
                time.sleep(1.0)


def _logs_in(info: EngineInfo, login: tuple[str, str], ca_file: Path | None) -> bool:
    from cassandra.cluster import NoHostAvailable

    try:
        with _session(info.host, info.port, 10.0, login, ca_file) as session:
            session.execute("SELECT release_version FROM system.local")
        return True
    except NoHostAvailable:  # the driver's wrapper of AuthenticationFailed
        return False


def _spec_of(home: Path) -> Cassandra:
    """The spec matching the mode this home's node was started in."""
    mode_file = Cassandra().mode_file(Path(home).resolve())
    try:
        mode = json.loads(mode_file.read_text())
    except (OSError, ValueError):
        return Cassandra()
    folder = mode.get("tls_folder")
    material = ensure_tls(Path(folder)) if mode.get("tls") and folder else None
    # The superuser is enough to probe; the roles themselves live in the node.
    return Cassandra(security=Security(dict([SUPERUSER]) if mode.get("auth") else {}, material))


def start(
    home: Path,
    port: int | None = None,
    timeout: float | None = None,
    *,
    users: Mapping[str, str] | None = None,
    tls: TlsMaterial | None = None,
) -> EngineInfo:
    """Start Cassandra under ``home`` (or reuse the one running there); see module doc.

    ``users`` turns on password authentication with these login roles;
    ``tls`` (e.g. ``tls.ensure(home / "tls")``) makes the native port
    TLS-only with its key store (clients trust ``tls.ca_pem``; :func:`ca_file`).
    """
    home = Path(home).resolve()
    spec = Cassandra(security=Security(dict(users or {}), tls))
    running = _spec_of(home).security.mode()
    if common.running_pid(spec, home) is not None and running != spec.security.mode():
        raise EngineError(
            f"cassandra already runs for {spec.dir(home)} with {running}, "
            f"not {spec.security.mode()} as asked; stop it first or use another --home"
        )
    info = common.start(spec, home, port, timeout)
    if spec.security.auth:
        try:
            _ensure_roles(info, spec.security)
        except BaseException:
            if not info.reused:  # half set up: leave nothing running, as a failed start does
                common.stop(spec, home)
            raise
    return info


def ca_file(home: Path) -> Path | None:
    """The CA certificate clients verify the node of ``home`` with; None without TLS."""
    material = _spec_of(home).security.tls
    return material.ca_pem if material else None


def stop(home: Path) -> bool:
    """Stop the Cassandra of ``home``; False if none was running."""
    return common.stop(Cassandra(), home)


def status(home: Path) -> EngineInfo | None:
    """The running, answering Cassandra of ``home``, or None."""
    return common.status(_spec_of(home), home)


__all__ = [
    "DEFAULT_PORT",
    "SUPERUSER",
    "VERSION",
    "EngineError",
    "EngineInfo",
    "Security",
    "ca_file",
    "start",
    "status",
    "stop",
]
