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
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.engines import cassandra, kafka
from deploy.engines.common import EngineInfo, free_port

log = logging.getLogger("tests.engine_fixtures")

TIMES_ENV = "INTEREST_STREAM_ENGINE_TIMES"


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
        lambda home, port: kafka.start(home, port=port), kafka.stop, engines_home, pytestconfig
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
