"""Wiring a worker process: store, encoder, topics, Faust worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import faust

from models.encoder import OnnxEncoder, ensure_exported
from models.encoder.base import Encoder
from streams.app import build_runtime, create_app
from streams.broker import ensure_topics, kafka_security
from streams.settings import Settings
from streams.stores.base import Store
from streams.stores.sqlite import SqliteStore

log = logging.getLogger("interest_stream.worker")


def open_store(settings: Settings) -> Store:
    if settings.store == "sqlite":
        return SqliteStore(settings.state_path)
    if settings.store == "cassandra":
        # Imported here: the embedded default never loads the driver.
        from streams.stores.cassandra import CassandraStore

        return CassandraStore.from_settings(settings)
    raise ValueError(f"unknown store {settings.store!r}")


def open_encoder(settings: Settings) -> Encoder:
    """The ONNX encoder, exported once into the cache if it is not there yet."""
    cache = Path(settings.encoder_cache) if settings.encoder_cache else None
    artifact = ensure_exported(cache)
    return OnnxEncoder(
        artifact, device=settings.encoder_device, batch_size=settings.encoder_batch_size
    )


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Run a Faust worker until it is stopped (SIGTERM / Ctrl-C)."""
    log.info("starting worker with %s on %s", settings, bootstrap)
    store = open_store(settings)
    encoder = open_encoder(settings)
    ensure_topics(bootstrap, settings.topics, **kafka_security(settings))
    app = create_app(settings, bootstrap, build_runtime(settings, store, encoder))
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        store.close()


def spawn_worker(settings: Settings, bootstrap: str, log_path: Path) -> subprocess.Popen:
    """Start `interest-stream worker` as a child process with ``settings``."""
    env = {**os.environ, **settings.replace(bootstrap_servers=bootstrap).to_env()}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_worker(worker: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (Faust commits and leaves the group), SIGKILL if it hangs."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)
