"""Liveness and readiness: the registry, the HTTP endpoints, the probes, a real worker.

The end-to-end test runs a worker process on its own embedded broker, stops
the broker under it (readiness turns 503 with a broker reason, liveness stays
200), starts a new broker on the same port and checks that the worker turns
ready again and consumes, all by itself.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from streams import health as health_module
from streams.admin import BrokerError, ensure_topics, wait_committed
from streams.app import _retrying
from streams.embedded_broker import EmbeddedBroker
from streams.health import (
    Health,
    HealthError,
    HealthServer,
    Prober,
    TopicsMissing,
    broker_check,
    describe,
    worker_prober,
)
from streams.ports import free_port
from streams.rebalance_watch import EXIT_REBALANCE_STUCK
from streams.settings import Settings, SettingsError, load_settings
from streams.stores.sqlite import SqliteStore
from streams.tail import ends_of, publish
from streams.topics import Topics
from streams.worker import spawn_worker, stop_worker

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url``: the status and the JSON body, for 2xx and error statuses alike."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not {what} after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_the_module_doctest_runs() -> None:
    result = doctest.testmod(health_module)
    assert result.attempted > 0 and result.failed == 0


# -- the registry ------------------------------------------------------------


def test_ready_only_when_the_loop_runs_and_nothing_fails() -> None:
    clock = FakeClock()
    health = Health(stall_seconds=30, clock=clock)
    snap = health.snapshot()
    assert snap.alive and not snap.ready
    assert snap.reasons == {"loop": "starting: the event loop has not run yet"}
    health.beat()
    assert health.snapshot().ready and health.snapshot().reasons == {}
    health.ok("store")
    health.fail("broker", "BrokerUnreachable: no broker")
    snap = health.snapshot()
    assert (snap.alive, snap.ready) == (True, False)
    assert snap.reasons == {"broker": "BrokerUnreachable: no broker"}
    assert set(snap.since) == {"broker"} and set(snap.reported) == {"store", "broker"}
    health.ok("broker")
    snap = health.snapshot()
    assert snap.ready and snap.reasons == {} and snap.since == {}


def test_a_long_start_up_is_alive_until_its_own_limit_then_the_stall_limit_applies() -> None:
    """A large catalogue's load runs before the loop's first stamp: it gets
    ``startup_seconds``, and a start-up that hangs past it is still caught."""
    clock = FakeClock()
    health = Health(stall_seconds=10, startup_seconds=60, clock=clock)
    clock.now += 45
    snap = health.snapshot()
    assert snap.alive and snap.reasons == {"loop": "starting: the event loop has not run yet"}
    clock.now += 16
    snap = health.snapshot()
    assert not snap.alive
    assert snap.reasons["loop"] == (
        "stalled: the event loop has not started after 61.0s (health_startup_seconds=60)"
    )
    health.beat()
    clock.now += 10.5  # once started, the loop's own limit
    assert not health.snapshot().alive


def test_since_is_when_a_failure_began_and_the_reason_is_the_latest() -> None:
    clock, wall = FakeClock(), FakeClock()
    wall.now = 1_700_000_000.0
    health = Health(clock=clock, wall=wall)
    health.beat()
    health.fail("store", "NoHostAvailable: first")
    clock.now += 5
    wall.now += 5
    health.fail("store", "OperationTimedOut: second")
    snap = health.snapshot()
    assert snap.reasons == {"store": "OperationTimedOut: second"}
    assert snap.since == {"store": "2023-11-14T22:13:20.000Z"}
    assert snap.reported == {"store": "2023-11-14T22:13:25.000Z"}
    health.ok("store")
    wall.now += 5
    health.fail("store", "NoHostAvailable: again")
    assert health.snapshot().since == {"store": "2023-11-14T22:13:30.000Z"}


def test_a_stalled_loop_is_not_alive_and_not_ready() -> None:
    clock = FakeClock()
    health = Health(stall_seconds=10, clock=clock)
    clock.now += 10.5  # never stamped: counted from creation, a hung start-up too
    snap = health.snapshot()
    assert not snap.alive and not snap.ready and "stalled" in snap.reasons["loop"]
    health.beat()
    clock.now += 9.9
    assert health.snapshot().alive and health.snapshot().ready
    clock.now += 0.2
    snap = health.snapshot()
    assert not snap.alive and not snap.ready
    assert snap.reasons["loop"].startswith("stalled: the event loop has not run for 10.1s")
    assert "(health_stall_seconds=10)" in snap.reasons["loop"]
    assert snap.heartbeat_age_seconds == pytest.approx(10.1)
    health.beat()
    assert health.snapshot().alive


def test_reports_from_many_threads() -> None:
    health = Health()
    health.beat()

    def hammer(n: int) -> None:
        for i in range(2000):
            if i % 2:
                health.ok(f"c{n}")
            else:
                health.fail(f"c{n}", f"E: {i}")
            health.snapshot()

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = health.snapshot()
    assert snap.ready and set(snap.reported) == {f"c{n}" for n in range(8)}


def test_describe_names_the_exception_once_and_stays_short() -> None:
    from kafka.errors import KafkaTimeoutError

    assert describe(ConnectionError("down")) == "ConnectionError: down"
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(KafkaTimeoutError("slow")) == "KafkaTimeoutError: slow"
    long = describe(RuntimeError("x" * 5000))
    assert len(long) == health_module.MAX_REASON_CHARS and long.endswith("...")


# -- the HTTP endpoints ------------------------------------------------------


@pytest.fixture
def served() -> Any:
    health = Health(stall_seconds=0.4)
    with HealthServer(health, "127.0.0.1", 0) as server:
        yield health, server.url


def test_endpoints_answer_200_or_503_with_the_reasons(served: Any) -> None:
    health, url = served
    health.beat()
    assert get(url + "/livez")[0] == 200
    status, body = get(url + "/readyz")
    assert status == 200 and body["ready"] is True and body["reasons"] == {}
    health.fail("store", "NoHostAvailable: ('Unable to connect to any servers', {})")
    health.fail("behaviours.process", "OperationalError: disk I/O error")
    status, body = get(url + "/readyz")
    assert status == 503 and body["ready"] is False and body["alive"] is True
    assert body["reasons"] == {
        "store": "NoHostAvailable: ('Unable to connect to any servers', {})",
        "behaviours.process": "OperationalError: disk I/O error",
    }
    assert set(body["since"]) == {"store", "behaviours.process"}
    status, body = get(url + "/livez")
    assert status == 200 and body["alive"] is True  # an outage is not a reason to restart
    health.ok("store")
    health.ok("behaviours.process")
    health.beat()
    status, body = get(url + "/readyz")
    assert status == 200 and body["ready"] is True and body["reasons"] == {}


def test_livez_turns_503_when_the_loop_stalls(served: Any) -> None:
    health, url = served
    health.beat()
    assert get(url + "/livez")[0] == 200
    time.sleep(0.6)  # stall_seconds=0.4
    status, body = get(url + "/livez")
    assert status == 503 and body["alive"] is False
    assert body["reasons"]["loop"].startswith("stalled: the event loop has not run for")
    assert get(url + "/readyz")[0] == 503
    health.beat()
    assert get(url + "/livez")[0] == 200 and get(url + "/readyz")[0] == 200


def test_other_paths_and_head(served: Any) -> None:
    health, url = served
    health.beat()
    status, body = get(url + "/metrics")
    assert status == 404 and body["paths"] == ["/livez", "/readyz"]
    assert get(url + "/readyz/?verbose=1")[0] == 200
    request = urllib.request.Request(url + "/readyz", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200 and response.read() == b""


def test_a_taken_port_fails_clearly() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(HealthError, match=f"127.0.0.1:{port}.*health_port"):
            HealthServer(Health(), "127.0.0.1", port).start()


# -- probes ------------------------------------------------------------------


class FlakyStore(SqliteStore):
    """A real SQLite store whose ping fails while ``down`` is set, or hangs on ``hang``."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.down = threading.Event()
        self.hang = threading.Event()
        self.release = threading.Event()

    def ping(self, timeout: float = 5.0) -> None:
        if self.down.is_set():
            raise ConnectionError("store unreachable")
        if self.hang.is_set():
            self.release.wait(30)
        super().ping(timeout)


def test_probe_follows_a_store_outage_both_ways() -> None:
    store = FlakyStore()
    health = Health()
    health.beat()
    with Prober(health, {"store": lambda: store.ping(1.0)}, every=0.05, timeout=1.0):
        wait_until(lambda: health.snapshot().ready, 5, "ready")
        store.down.set()
        wait_until(lambda: not health.snapshot().ready, 5, "not ready")
        assert health.snapshot().reasons == {"store": "ConnectionError: store unreachable"}
        store.down.clear()
        wait_until(lambda: health.snapshot().ready, 5, "ready again")
    store.close()


def test_a_hanging_check_is_reported_and_not_piled_up() -> None:
    store = FlakyStore()
    health = Health()
    health.beat()
    calls = []

    def check() -> None:
        calls.append(time.monotonic())
        store.ping(1.0)

    with Prober(health, {"store": check}, every=0.05, timeout=0.3):
        wait_until(lambda: health.snapshot().ready, 5, "ready")
        store.hang.set()
        wait_until(lambda: "store" in health.snapshot().reasons, 5, "timed out")
        assert (
            health.snapshot()
            .reasons["store"]
            .startswith("TimeoutError: store has not answered for")
        )
        hung_calls = len(calls)
        time.sleep(0.3)
        assert len(calls) == hung_calls, "a check that hangs is not started again"
        store.hang.clear()
        store.release.set()
        wait_until(lambda: health.snapshot().ready, 5, "ready again")
    store.close()


def test_unchecked_components_are_not_ready() -> None:
    health = Health()
    health.beat()
    Prober(health, {"store": lambda: None, "broker": lambda: None}, every=1, timeout=1)
    assert health.snapshot().reasons == {"store": "not checked yet", "broker": "not checked yet"}


def test_sqlite_ping_raises_once_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite")
    store.ping()
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.ping()


def test_cassandra_ping_raises_once_shut_down(request: pytest.FixtureRequest) -> None:
    from streams.stores.cassandra import CassandraStore

    engine = request.getfixturevalue("cassandra_engine")
    store = CassandraStore(engine.host, engine.port, f"health_{uuid.uuid4().hex[:12]}")
    store.ping(timeout=2.0)
    store.drop_keyspace()
    store.close()
    with pytest.raises(Exception):  # noqa: B017 (the driver raises RuntimeError, not a subclass)
        store.ping(timeout=2.0)


def test_broker_check_on_the_embedded_broker(embedded_broker: EmbeddedBroker) -> None:
    topics = Topics(partitions=1).prefixed(f"h{uuid.uuid4().hex[:8]}-")
    names = [name for name, _, _ in topics.specs()]
    check = broker_check(embedded_broker.bootstrap, {}, names, timeout=5)
    with pytest.raises(TopicsMissing, match=names[0]):
        check()
    ensure_topics(embedded_broker.bootstrap, topics)
    check()


def test_broker_check_fails_fast_and_leaks_no_threads() -> None:
    check = broker_check(f"127.0.0.1:{free_port()}", {}, [], timeout=0.5)
    # The threads themselves, not a count: a straggler of an earlier test
    # (a client's IO thread winding down) changes the count either way.
    before = set(threading.enumerate())
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(Exception, match="no Kafka broker answered"):
            check()
        assert time.monotonic() - started < 3
    new = [t for t in threading.enumerate() if t not in before]
    for t in new:
        t.join(2.0)  # one that is closing gets a moment to end
    assert [t.name for t in new if t.is_alive()] == []


def test_worker_prober_checks_store_and_broker(embedded_broker: EmbeddedBroker) -> None:
    settings = Settings(topic_prefix=f"h{uuid.uuid4().hex[:8]}-", health_probe_seconds=0.1)
    ensure_topics(embedded_broker.bootstrap, settings.topics)
    store = FlakyStore()
    health = Health()
    health.beat()
    with worker_prober(settings, embedded_broker.bootstrap, store, health) as prober:
        assert set(prober.checks) == {"store", "broker"}
        wait_until(lambda: health.snapshot().ready, 15, "ready")
        store.down.set()
        wait_until(lambda: "store" in health.snapshot().reasons, 5, "store failing")
        store.down.clear()
        wait_until(lambda: health.snapshot().ready, 5, "ready again")
    store.close()


# -- the agents' retries -----------------------------------------------------


def test_an_action_stuck_retrying_makes_the_worker_not_ready() -> None:
    health = Health()
    health.beat()
    failures = [OSError("disk I/O error"), OSError("disk I/O error")]
    seen: list[dict[str, str]] = []

    async def write() -> str:
        seen.append(health.snapshot().reasons)
        if failures:
            raise failures.pop()
        return "written"

    result = asyncio.run(_retrying("process", write, health=health, component="behaviours.process"))
    assert result == "written"
    stuck = {"behaviours.process": "OSError: disk I/O error"}
    assert seen == [{}, stuck, stuck]  # not ready while it kept failing
    assert health.snapshot().ready  # ready again once it succeeded


def test_a_cancelled_retry_leaves_no_reason_behind() -> None:
    health = Health()
    health.beat()

    async def scenario() -> None:
        async def broken() -> None:
            raise ConnectionError("broker gone")

        task = asyncio.create_task(_retrying("produce", broken, health=health))
        while "produce" not in health.snapshot().reasons:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert health.snapshot().ready


# -- settings and manifests --------------------------------------------------


def test_health_settings() -> None:
    s = load_settings(env={})
    assert (s.health_host, s.health_port) == ("0.0.0.0", 6066)
    assert (s.health_probe_seconds, s.health_stall_seconds) == (2.0, 30.0)
    env = {
        "INTEREST_STREAM_HEALTH_PORT": "0",
        "INTEREST_STREAM_HEALTH_HOST": "127.0.0.1",
        "INTEREST_STREAM_HEALTH_PROBE_SECONDS": "0.5",
        "INTEREST_STREAM_HEALTH_STALL_SECONDS": "12",
    }
    s = load_settings(env=env)
    assert (s.health_host, s.health_port, s.health_probe_seconds) == ("127.0.0.1", 0, 0.5)
    assert s.health_stall_seconds == 12.0
    for bad, match in [
        ({"health_port": 70000}, "health_port"),
        ({"health_port": -1}, "health_port"),
        ({"health_host": ""}, "health_host"),
        ({"health_probe_seconds": 0.0}, "health_probe_seconds"),
        ({"health_stall_seconds": -1.0}, "health_stall_seconds"),
        ({"health_stall_seconds": float("nan")}, "health_stall_seconds"),
        ({"health_startup_seconds": 0.0}, "health_startup_seconds"),
    ]:
        with pytest.raises(SettingsError, match=match):
            Settings(**bad)


def test_manifests_probe_the_health_port() -> None:
    settings_map = next(
        d
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "10-settings.yaml").read_text())
        if d and d["kind"] == "ConfigMap"
    )
    port = load_settings(env=settings_map["data"]).health_port
    assert port == 6066
    for name in ("50-workers.yaml", "60-encoder.yaml"):
        deployment = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in [
            ("startupProbe", "/livez"),
            ("livenessProbe", "/livez"),
            ("readinessProbe", "/readyz"),
        ]:
            get_ = container[probe]["httpGet"]
            assert get_["path"] == path and ports[get_["port"]] == port, (name, probe)
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in ("worker", "encoder"):
        svc = compose["services"][service]
        assert int(svc["environment"]["INTEREST_STREAM_HEALTH_PORT"]) == port
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(svc["healthcheck"]["test"])


# -- a real worker -----------------------------------------------------------


@pytest.mark.broker
def test_worker_readiness_follows_a_broker_outage(encoder_artifact: Path, tmp_path: Path) -> None:
    broker_port = free_port()
    broker = EmbeddedBroker(port=broker_port, log_dir=tmp_path / "tansu-1").start()
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"health-{run}",
        topic_prefix=f"h{run}-",
        data_dir=str(tmp_path / "worker"),
        encoder_cache=str(encoder_artifact.parent),
        health_host="127.0.0.1",
        health_port=free_port(),
        health_probe_seconds=0.5,
        # Faust can stay stuck in the rebalance after the outage (it did once
        # in CI): the worker then exits with 75 and this test restarts it, as
        # its supervisor would (streams.rebalance_watch).
        rebalance_stuck_seconds=15.0,
    )
    ensure_topics(broker.bootstrap, settings.topics)
    log_path = tmp_path / "worker.log"
    worker = spawn_worker(settings, broker.bootstrap, log_path)
    url = f"http://127.0.0.1:{settings.health_port}"

    def status(path: str) -> tuple[int, dict[str, Any]]:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
        try:
            return get(url + path)
        except OSError:  # not listening yet
            return 0, {}

    second: EmbeddedBroker | None = None
    try:
        wait_until(lambda: status("/readyz")[0] == 200, 120, "ready")
        assert status("/readyz")[1]["reasons"] == {}

        stopping = time.monotonic()
        broker.stop()
        stopped = time.monotonic() - stopping

        def broker_reason() -> bool:
            code, body = status("/readyz")
            return code == 503 and "broker" in body["reasons"]

        took = stopped + wait_until(broker_reason, 10 - stopped, "not ready for the broker")
        reasons = status("/readyz")[1]["reasons"]
        assert "no Kafka broker answered" in reasons["broker"], reasons
        print(
            f"not ready {took:.1f}s after stopping the broker ({stopped:.1f}s to stop): {reasons}"
        )
        for _ in range(10):  # the outage is no reason to restart the worker
            assert status("/livez")[0] == 200
            time.sleep(0.5)
        assert status("/readyz")[0] == 503

        second = EmbeddedBroker(port=broker_port, log_dir=tmp_path / "tansu-2").start()
        ensure_topics(second.bootstrap, settings.topics)  # tansu forgot everything
        took = wait_until(lambda: status("/readyz")[0] == 200, 30, "ready again")
        print(f"ready {took:.1f}s after the new broker had its topics")
        assert status("/livez")[0] == 200

        producer = KafkaProducer(bootstrap_servers=second.bootstrap)
        item = {"item_id": "i1", "title": "after the outage", "tags": ["x"]}
        positions = publish(producer, settings.topics.items, [(b"i1", json.dumps(item).encode())])
        producer.close()

        def consumed() -> None:
            wait_committed(
                second.bootstrap, settings.app_id, settings.topics.items, ends_of(positions),
                timeout=60, alive=lambda: worker.poll() is None,
            )  # fmt: skip

        try:
            consumed()
            # The watch saw both rebalances end: the start-up's and the one after the outage.
            assert "consumer group rebalance 2 completed" in log_path.read_text(errors="replace")
        except BrokerError:
            if worker.poll() != EXIT_REBALANCE_STUCK:
                raise
            assert "rebalance has not completed" in log_path.read_text(errors="replace")
            print("the rebalance after the outage got stuck: the worker exited; restarted")
            worker = spawn_worker(settings, second.bootstrap, log_path)
            consumed()
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_worker(worker)  # before the broker: Faust's shutdown waits for it
        broker.stop()
        if second is not None:
            second.stop()


def test_counters_add_up_per_agent_and_are_served() -> None:
    health = Health()
    health.count("behaviours", {"events": 3, "internal_errors": 1})
    health.count("behaviours", {"events": 2, "dead_letters": 1})
    health.count("items", {"items": 4})
    body = health.snapshot().to_json()
    assert body["counters"] == {
        "behaviours": {"events": 5, "internal_errors": 1, "dead_letters": 1},
        "items": {"items": 4},
    }


def test_stage_seconds_add_up_per_agent_and_are_served() -> None:
    health = Health()
    health.time("behaviours", {"decode": 0.25, "rank": 0.5}, 10)
    health.time("behaviours", {"decode": 0.25, "produce": 1.0}, 5)
    health.time("consumer", {"commit": 0.125}, 0)
    body = health.snapshot().to_json()
    assert body["stages"] == {
        "behaviours": {
            "seconds": {"decode": 0.5, "rank": 0.5, "produce": 1.0},
            "batches": 2,
            "records": 15,
        },
        "consumer": {"seconds": {"commit": 0.125}, "batches": 1, "records": 0},
    }
