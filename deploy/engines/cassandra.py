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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from string import Template

from deploy.engines import common
from deploy.engines.common import EngineError, EngineInfo

VERSION = os.environ.get("INTEREST_STREAM_CASSANDRA_VERSION", "5.0.9")
DEFAULT_PORT = 9042
HEAP = os.environ.get("INTEREST_STREAM_CASSANDRA_HEAP", "768m")
DEPLOY = common.REPO_ROOT / "deploy" / "cassandra"

log = logging.getLogger("deploy.engines.cassandra")


class Cassandra(common.EngineSpec):
    name = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"
    ready_timeout = 180.0

    def __init__(self, version: str = VERSION) -> None:
        self.version = version

    def ports(self, port: int | None) -> dict[str, int]:
        native = port or common.env_int("INTEREST_STREAM_CASSANDRA_PORT") or DEFAULT_PORT
        storage = common.env_int("INTEREST_STREAM_CASSANDRA_STORAGE_PORT") or common.free_port(
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
            template.substitute(storage_port=ports["storage"], native_port=ports["native"])
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
        return query_release_version(common.LOOPBACK, port, timeout)

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


def query_release_version(host: str, port: int, timeout: float) -> str | None:
    """``release_version`` from ``system.local`` through cassandra-driver, or None."""
    if not common.port_answers(port, host):
        return None
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
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=timeout).one()
        return str(row.release_version) if row else None
    except Exception:  # any driver error means "not answering yet"
        return None
    finally:
        cluster.shutdown()
        driver_log.setLevel(level)


SPEC = Cassandra()


def start(home: Path, port: int | None = None, timeout: float | None = None) -> EngineInfo:
    """Start Cassandra under ``home`` (or reuse the one running there); see module doc."""
    return common.start(SPEC, home, port, timeout)


def stop(home: Path) -> bool:
    """Stop the Cassandra of ``home``; False if none was running."""
    return common.stop(SPEC, home)


def status(home: Path) -> EngineInfo | None:
    """The running, answering Cassandra of ``home``, or None."""
    return common.status(SPEC, home)


__all__ = ["DEFAULT_PORT", "VERSION", "EngineError", "EngineInfo", "start", "status", "stop"]
