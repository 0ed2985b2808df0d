"""Session fixtures for the real engines: Apache Kafka and Apache Cassandra.

Each engine starts once per test session through :mod:`deploy.engines`, in a
home under the session's temp dir and on free ports, so it never clashes with
an engine a developer runs from ``.engines/`` on the default ports. It is
stopped at the end of the session only if the fixture started it.

Set ``INTEREST_STREAM_ENGINE_TIMES`` to a file path to get the measured
start-to-ready times as JSON (CI reports them), e.g.
``{"kafka": {"ready_seconds": 6.1, ...}, "cassandra": {...}}``.

Load with ``pytest_plugins = ["tests.engine_fixtures"]`` (or ``-p tests.engine_fixtures``).
Tests share one engine: use a fresh topic name or keyspace per test.

The session's Kafka also listens with SASL_PLAINTEXT for the users of
:data:`KAFKA_SASL_USERS` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); the
``kafka_sasl_engine`` fixture gives that listener's address. Same JVM, so no
second start: the extra listener and the SCRAM users cost ~0.1 s.

When a selected test uses ``kafka_tls_engine``, the session's Kafka also gets
the SSL and SASL_SSL listeners (same users), presenting a certificate of a CA
made under the session's engine home (``deploy.engines.tls``); the fixture
gives their addresses and the CA file. Still one JVM: the listeners cost
~0.4 s of start, making the CA and key store with keytool ~2.5 s, paid only
by sessions that run a TLS test.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.engines import cassandra, kafka, tls
from deploy.engines.common import EngineInfo
from streams.ports import free_port
from tests.paths import ROOT

log = logging.getLogger("tests.engine_fixtures")

TIMES_ENV = "INTEREST_STREAM_ENGINE_TIMES"

#: Users of the session Kafka's SASL_PLAINTEXT listener, name -> password.
KAFKA_SASL_USERS: Mapping[str, str] = {"alice": "alice-secret", "bob": "bob-secret"}


@dataclass(frozen=True)
class SaslKafka:
    """The session's Kafka as a SASL_PLAINTEXT client sees it."""

    engine: EngineInfo
    address: str
    users: Mapping[str, str]


#: The fixture whose use in a selected test gives the session's Kafka TLS listeners.
KAFKA_TLS_FIXTURE = "kafka_tls_engine"


@dataclass(frozen=True)
class TlsKafka:
    """The session's Kafka as a TLS client sees it: SSL and SASL_SSL listeners.

    Clients trust ``ca_file`` and may check the host name (127.0.0.1 or
    localhost); ``users`` log in on ``sasl_ssl_address`` with any mechanism.
    """

    engine: EngineInfo
    ssl_address: str
    sasl_ssl_address: str
    ca_file: Path
    users: Mapping[str, str]


def _record_time(info: EngineInfo, key: str) -> None:
    """Merge this engine's ready time into the JSON file CI asked for, if any."""
    target = os.environ.get(TIMES_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            times = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            times = {}
        times[key] = {
            "ready_seconds": info.ready_seconds,
            "version": info.version,
            "reused": info.reused,
            "address": info.address,
        }
        path.write_text(json.dumps(times, indent=2) + "\n")


def cli_status(engine: str, home: Path) -> dict[str, object]:
    """``python -m deploy.engines ENGINE status --json`` run as users run it, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "deploy.engines", engine, "status", "--json", "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _engine(
    start: Callable[[Path, int], EngineInfo],
    stop: Callable[[Path], bool],
    home: Path,
    config: pytest.Config,
    key: str | None = None,
) -> Iterator[EngineInfo]:
    info = start(home, free_port())
    message = info.describe()
    log.info(message)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[engines] {message}")
    _record_time(info, key or info.name)
    try:
        yield info
    finally:
        if not info.reused:
            stop(home)


@pytest.fixture(scope="session")
def engines_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launcher home for the session's engines (data, logs, pid files)."""
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def kafka_engine(
    engines_home: Path, pytestconfig: pytest.Config, request: pytest.FixtureRequest
) -> Iterator[EngineInfo]:
    """A running Apache Kafka; ``kafka_engine.address`` is the bootstrap server."""
    material = _kafka_tls_material(engines_home, request.session)
    yield from _engine(
        lambda home, port: kafka.start(home, port=port, sasl_users=KAFKA_SASL_USERS, tls=material),
        kafka.stop,
        engines_home,
        pytestconfig,
    )


def _kafka_tls_material(home: Path, session: pytest.Session) -> tls.TlsMaterial | None:
    """The session Kafka's CA and key store, if a selected test uses its TLS listeners."""
    if not any(KAFKA_TLS_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        return None
    began = time.monotonic()
    material = tls.ensure(home / "tls")
    log.info("TLS material for kafka in %s (%.1f s)", material.folder, time.monotonic() - began)
    return material


@pytest.fixture(scope="session")
def kafka_sasl_engine(kafka_engine: EngineInfo) -> SaslKafka:
    """``kafka_engine``'s SASL_PLAINTEXT listener and the users it accepts."""
    return SaslKafka(kafka_engine, kafka.sasl_address(kafka_engine), KAFKA_SASL_USERS)


@pytest.fixture(scope="session")
def kafka_tls_engine(kafka_engine: EngineInfo) -> TlsKafka:
    """``kafka_engine``'s SSL and SASL_SSL listeners, their CA file and users."""
    return TlsKafka(
        kafka_engine,
        kafka.ssl_address(kafka_engine),
        kafka.sasl_ssl_address(kafka_engine),
        kafka.ca_file(kafka_engine),
        KAFKA_SASL_USERS,
    )


@pytest.fixture(scope="session")
def cassandra_engine(engines_home: Path, pytestconfig: pytest.Config) -> Iterator[EngineInfo]:
    """A running Apache Cassandra; connect to ``cassandra_engine.host``/``.port``."""
    yield from _engine(
        lambda home, port: cassandra.start(home, port=port),
        cassandra.stop,
        engines_home,
        pytestconfig,
    )


#: The login role of the secured Cassandra: not a superuser, it may create
#: keyspaces and owns those it creates.
CASSANDRA_ROLE = ("interest_stream", "interest-stream-secret")


@dataclass(frozen=True)
class SecureCassandra:
    """A Cassandra with password authentication and a TLS-only native port."""

    engine: EngineInfo
    username: str
    password: str
    ca_file: Path


@pytest.fixture(scope="session")
def cassandra_secure_engine(
    engines_home: Path, pytestconfig: pytest.Config
) -> Iterator[SecureCassandra]:
    """A second Cassandra (its own home: a node's security mode is fixed while it
    runs) with ``PasswordAuthenticator``, ``CassandraAuthorizer`` and client TLS,
    its certificate from the session's CA (``engines_home/tls``, shared with Kafka).
    Started on first use; its ready time is recorded as ``cassandra-secure``."""
    home = engines_home / "secure"
    name, password = CASSANDRA_ROLE
    material = tls.ensure(engines_home / "tls")
    for info in _engine(
        lambda home, port: cassandra.start(home, port=port, users={name: password}, tls=material),
        cassandra.stop,
        home,
        pytestconfig,
        key="cassandra-secure",
    ):
        yield SecureCassandra(info, name, password, material.ca_pem)
