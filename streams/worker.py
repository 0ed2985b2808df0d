"""Wiring a worker process: store, encoder, topics, Faust worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import faust
from threadpoolctl import threadpool_info, threadpool_limits

from models.encoder import OnnxEncoder, ensure_exported
from models.encoder.base import Encoder
from models.stages import StageClock, measuring
from streams.admin import ensure_topics
from streams.app import build_runtime, create_app
from streams.health import Health, HealthServer, Heartbeat, heartbeat_interval, worker_prober
from streams.rebalance_watch import RebalanceWatch
from streams.security import kafka_security
from streams.settings import Settings
from streams.stores import open_store

log = logging.getLogger("interest_stream.worker")


def open_encoder(settings: Settings) -> Encoder:
    """The ONNX encoder, exported once into the cache if it is not there yet."""
    cache = Path(settings.encoder_cache) if settings.encoder_cache else None
    artifact = ensure_exported(cache)
    return OnnxEncoder(
        artifact,
        device=settings.encoder_device,
        precision=settings.encoder_precision,
        batch_size=settings.encoder_batch_size,
    )


NO_MODEL = (
    "NO LEARNED MODEL: this worker runs the time-decayed rule (updater=time-decay), which "
    "ranks far below a trained model (MovieLens-100K NDCG@10 0.015 against the learned "
    "cell's 0.12). Train one with `interest-stream train --data DIR --out OUT --seeds 0 "
    "--model learned-gru` (minutes on a CPU) and set INTEREST_STREAM_UPDATER="
    "OUT/learned-gru-seed0."
)


def announce_updater(settings: Settings) -> None:
    """Say which updater this worker runs; loudly (a warning) when it has no learned model."""
    if settings.updater == "time-decay":
        log.warning(NO_MODEL)
    else:
        log.info("updater: the learned model in %s", settings.updater)


def limit_blas_threads(threads: int) -> list[int]:
    """Cap the threads of every BLAS numpy loaded (0: leave them); their counts after.

    For the rest of the process, not a scope: the worker calls it once at start.
    """
    if threads:
        threadpool_limits(limits=threads, user_api="blas")
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Run a Faust worker until it is stopped (SIGTERM / Ctrl-C).

    With ``health_port`` set, /livez and /readyz answer from the start (not
    ready until the store, the broker and the Faust app are up), the store and
    broker are probed every ``health_probe_seconds``, and the worker's loop
    stamps the heartbeat; all of it stops after the Faust worker.
    """
    log.info("starting worker with %s on %s", settings, bootstrap)
    announce_updater(settings)
    log.info("BLAS threads: %s (blas_threads=%d)", limit_blas_threads(settings.blas_threads),
             settings.blas_threads)  # fmt: skip
    health = Health(settings.health_stall_seconds, settings.health_startup_seconds)
    server = None
    if settings.health_port:
        server = HealthServer(health, settings.health_host, settings.health_port).start()
    try:
        store = open_store(settings)
        try:
            encoder = open_encoder(settings)
            ensure_topics(bootstrap, settings.topics, **kafka_security(settings))
            runtime = build_runtime(settings, store, encoder, health)
            with measuring(StageClock()) as clock:
                runtime.behaviours.warm()
            # /livez "stages" -> "startup": the catalogue load and index build, over its items.
            health.time("startup", clock.seconds, len(runtime.behaviours.sync.catalogue))
            app = create_app(settings, bootstrap, runtime)
            rebalances = RebalanceWatch()
            app.sensors.add(rebalances)
            heartbeat = Heartbeat(health, heartbeat_interval(settings.health_stall_seconds))
            worker = faust.Worker(app, heartbeat, loglevel=settings.log_level, quiet=True)
            prober = None
            if server is not None:
                prober = worker_prober(settings, bootstrap, store, health, rebalances)
                prober.start()
            try:
                worker.execute_from_commandline()
            finally:
                if prober is not None:
                    prober.stop()
                runtime.behaviours.close()
        finally:
            store.close()
    finally:
        if server is not None:
            server.stop()


def spawn_worker(
    settings: Settings,
    bootstrap: str,
    log_path: Path,
    module_args: tuple[str, ...] = ("streams.cli", "worker"),
) -> subprocess.Popen:
    """Start `interest-stream worker` (or ``python -m`` ``module_args``) as a child process.

    ``settings`` reach it as environment variables, with ``bootstrap`` as
    its broker; its output goes to ``log_path`` (appended).
    """
    env = {**os.environ, **settings.replace(bootstrap_servers=bootstrap).to_env()}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", *module_args],
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
