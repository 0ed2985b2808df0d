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
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.engines import cassandra, kafka
from deploy.engines.common import EngineInfo, free_port

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


def _record_time(info: EngineInfo) -> None:
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
        times[info.name] = {
            "ready_seconds": info.ready_seconds,
            "version": info.version,
            "reused": info.reused,
            "address": info.address,
        }
        path.write_text(json.dumps(times, indent=2) + "\n")


def _engine(
    start: Callable[[Path, int], EngineInfo],
    stop: Callable[[Path], bool],
    home: Path,
    config: pytest.Config,
) -> Iterator[EngineInfo]:
    info = start(home, free_port())
    message = info.describe()
    log.info(message)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[engines] {message}")
    _record_time(info)
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
def kafka_engine(engines_home: Path, pytestconfig: pytest.Config) -> Iterator[EngineInfo]:
    """A running Apache Kafka; ``kafka_engine.address`` is the bootstrap server."""
    yield from _engine(
        lambda home, port: kafka.start(home, port=port, sasl_users=KAFKA_SASL_USERS),
        kafka.stop,
        engines_home,
        pytestconfig,
    )


@pytest.fixture(scope="session")
def kafka_sasl_engine(kafka_engine: EngineInfo) -> SaslKafka:
    """``kafka_engine``'s SASL_PLAINTEXT listener and the users it accepts."""
    return SaslKafka(kafka_engine, kafka.sasl_address(kafka_engine), KAFKA_SASL_USERS)


@pytest.fixture(scope="session")
def cassandra_engine(engines_home: Path, pytestconfig: pytest.Config) -> Iterator[EngineInfo]:
    """A running Apache Cassandra; connect to ``cassandra_engine.host``/``.port``."""
    yield from _engine(
        lambda home, port: cassandra.start(home, port=port),
        cassandra.stop,
        engines_home,
        pytestconfig,
    )
