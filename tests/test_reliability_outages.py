"""Issue 10, item 6: Apache Kafka and Apache Cassandra go away mid-stream and come back.

These tests stop engines, so they run on DEDICATED engines started here
(`dedicated_engines`: their own home under the session's temp dir, free
ports), never on the session engines other tests share. An engine is
stopped through `deploy.engines` (SIGTERM to its JVM, as an operator would)
and started again with the same home and ports, so its data survives.

While an engine is down the worker must pause and retry, not crash, not
commit past events it has not applied, report not-ready on ``GET /readyz``
(503 with a reason) and recover by itself (200 again) once the engine is
back; afterwards the same guarantee as the crash test holds
(`tests.reliability_fixtures`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.engines import cassandra, kafka
from deploy.engines.common import EngineError, EngineInfo
from streams.admin import ensure_topics
from streams.ports import free_port
from streams.settings import Settings
from streams.tail import ends_of
from streams.worker import open_store
from tests.reliability_fixtures import ReadinessLog, Rig, check_guarantee, seeded_stream

pytestmark = pytest.mark.broker

USERS, EVENTS_PER_USER = 100, 24  # 2,400 events
CASSANDRA_DOWN_S = 30.0
KAFKA_DOWN_S = 10.0
STORAGE_PORT_ENV = "INTEREST_STREAM_CASSANDRA_STORAGE_PORT"


@dataclass
class Engines:
    """The dedicated Kafka and Cassandra of this module, and how to bounce them."""

    home: Path
    kafka: EngineInfo
    cassandra: EngineInfo

    def stop_kafka(self) -> None:
        assert kafka.stop(self.home)

    def start_kafka(self) -> EngineInfo:
        info = kafka.start(
            self.home, port=self.kafka.port, controller_port=self.kafka.ports["controller"]
        )
        assert not info.reused
        return info

    def stop_cassandra(self) -> None:
        assert cassandra.stop(self.home)

    def start_cassandra(self) -> EngineInfo:
        with pytest.MonkeyPatch.context() as env:  # the same internode port as before
            env.setenv(STORAGE_PORT_ENV, str(self.cassandra.ports["storage"]))
            info = cassandra.start(self.home, port=self.cassandra.port)
        assert not info.reused
        return info


@pytest.fixture(scope="module")
def dedicated_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """A Kafka and a Cassandra for this module alone (started side by side)."""
    home = tmp_path_factory.mktemp("outage-engines")
    with pytest.MonkeyPatch.context() as env, ThreadPoolExecutor(2) as pool:
        env.setenv(STORAGE_PORT_ENV, str(free_port()))
        started_kafka = pool.submit(_start_on_free_ports, kafka.start, home)
        started_cassandra = pool.submit(_start_on_free_ports, cassandra.start, home)
        engines = Engines(home, started_kafka.result(), started_cassandra.result())
    try:
        yield engines
    finally:
        kafka.stop(home)
        cassandra.stop(home)


def _start_on_free_ports(start: Callable[..., EngineInfo], home: Path) -> EngineInfo:
    """``start(home, port)``, again on new ports when one was taken meanwhile.

    Two engines starting side by side pick free ports and bind them later; a
    port the other engine's JVM took in between (an ephemeral RMI port, say)
    is refused at launch, and a fresh pick is the fix.
    """
    for attempt in range(3):
        try:
            return start(home, free_port())
        except EngineError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _rig(engines: Engines, tmp_path: Path, encoder_artifact: Path) -> Rig:
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"interest-stream-outage-{run}",
        topic_prefix=f"o{run}-",
        data_dir=str(tmp_path),
        encoder_cache=str(encoder_artifact.parent),
        store="cassandra",
        cassandra_contact_points=engines.cassandra.host,
        cassandra_port=engines.cassandra.port,
        cassandra_keyspace=f"o{run}",
        top_k=10,
        batch_max=100,
        commit_interval_seconds=0.5,
        health_probe_seconds=1.0,
    )
    bootstrap = engines.kafka.address
    ensure_topics(bootstrap, settings.topics)
    open_store(settings).close()
    return Rig(settings, bootstrap, tmp_path)


def _ready(status: int, _: dict) -> bool:
    return status == 200


def _not_ready(status: int, reasons: dict) -> bool:
    return status == 503 and bool(reasons)


def test_cassandra_down_for_30_s_mid_stream(
    dedicated_engines: Engines, encoder_artifact: Path, tmp_path: Path
) -> None:
    """Cassandra is stopped for 30 s while events are published and applied.

    While it is down the worker stays up, /readyz answers 503 with a reason,
    and the group commits nothing new (the batch in flight is retried, not
    acked). Once Cassandra is back the worker turns ready by itself and
    catches up; then every state equals an uninterrupted run's and the
    downstream view equals the stored lists.
    """
    began = time.monotonic()
    rig = _rig(dedicated_engines, tmp_path, encoder_artifact)
    stream = seeded_stream(USERS, EVENTS_PER_USER, seed=31)
    records = stream.event_records()
    try:
        worker = rig.spawn()
        rig.publish_items(stream)
        with ReadinessLog(worker) as readyz:
            readyz.wait_for(_ready, timeout=60)
            # ~40 s of publishing: events keep arriving while the store is down
            publishing = rig.publish_async(records, rate=60)
            rig.wait_progress(0, timeout=60)
            dedicated_engines.stop_cassandra()
            down = time.monotonic()
            readyz.wait_for(_not_ready, timeout=30)
            time.sleep(3.0)  # a batch produced just before the stop may still commit
            frozen = rig.committed()
            time.sleep(max(0.0, down + CASSANDRA_DOWN_S - time.monotonic()))
            still = rig.committed()
            alive_while_down = worker.alive
            restarting = time.monotonic()  # Cassandra cannot answer before this
            dedicated_engines.start_cassandra()
            up = time.monotonic()
            ready_again = readyz.wait_for(_ready, timeout=180)
            positions = publishing.result(timeout=120)
            rig.wait_committed(rig.settings.topics.behaviours, ends_of(positions), timeout=180)
            processed = time.monotonic()
            during = readyz.between(down + 5.0, restarting)
        retries = rig.log_text().count("failed; retrying")
    finally:
        rig.close()
    try:
        assert alive_while_down, "the worker died while Cassandra was down"
        assert still == frozen, f"committed while the store was down: {frozen} -> {still}"
        assert during and all(_not_ready(s, r) for _, s, r in during), [
            (at - down, s, r) for at, s, r in during if not _not_ready(s, r)
        ][:5]
        counts = check_guarantee(rig, stream, positions)
    except AssertionError:
        print(rig.log_tail())
        raise
    reasons = sorted({name for _, _, r in during for name in r})
    print(
        f"\ncassandra outage: {len(records)} events, down {up - down:.0f} s "
        f"(restart included), ready {ready_again - up:.0f} s after it answered, "
        f"not-ready reasons {reasons}, e.g. {during[len(during) // 2][2]}, "
        f"{retries} retries logged, view {counts}, processed in {processed - began:.0f} s"
    )


def test_kafka_down_and_back_mid_stream(
    dedicated_engines: Engines, encoder_artifact: Path, tmp_path: Path
) -> None:
    """Kafka is stopped while the worker is behind on the first half of the
    stream and started again (same home, same ports) 10 s later; the second
    half is published after.

    While it is down the worker stays up and /readyz answers 503 with a
    reason; after it is back the worker turns ready by itself and processes
    everything; then the same guarantee as the crash test holds.
    """
    began = time.monotonic()
    rig = _rig(dedicated_engines, tmp_path, encoder_artifact)
    stream = seeded_stream(USERS, EVENTS_PER_USER, seed=32)
    records = stream.event_records()
    first, second = records[: len(records) // 2], records[len(records) // 2 :]
    try:
        worker = rig.spawn()
        rig.publish_items(stream)
        with ReadinessLog(worker) as readyz:
            readyz.wait_for(_ready, timeout=60)
            positions = rig.publish(first)  # unpaced: the worker is behind
            done = rig.wait_progress(len(first) // 5, timeout=90)
            dedicated_engines.stop_kafka()
            down = time.monotonic()
            readyz.wait_for(_not_ready, timeout=30)
            time.sleep(max(0.0, down + KAFKA_DOWN_S - time.monotonic()))
            alive_while_down = worker.alive
            restarting = time.monotonic()  # Kafka cannot answer before this; it may soon after
            dedicated_engines.start_kafka()
            up = time.monotonic()
            ready_again = readyz.wait_for(_ready, timeout=180)
            during = readyz.between(down + 3.0, restarting)
            positions += rig.publish(second)
            rig.wait_committed(rig.settings.topics.behaviours, ends_of(positions), timeout=180)
            processed = time.monotonic()
    finally:
        rig.close()
    try:
        assert alive_while_down, "the worker died while Kafka was down"
        assert done < len(first), "the worker was not behind when Kafka stopped"
        assert during and all(_not_ready(s, r) for _, s, r in during), [
            (at - down, s, r) for at, s, r in during if not _not_ready(s, r)
        ][:5]
        counts = check_guarantee(rig, stream, positions)
    except AssertionError:
        print(rig.log_tail())
        raise
    reasons = sorted({name for _, _, r in during for name in r})
    print(
        f"\nkafka outage: {len(records)} events, stopped at {done} committed, down "
        f"{up - down:.0f} s (restart included), ready {ready_again - up:.0f} s after it "
        f"answered, not-ready reasons {reasons}, e.g. {during[len(during) // 2][2]}, "
        f"view {counts}, processed in {processed - began:.0f} s"
    )
