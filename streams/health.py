"""Liveness and readiness of a worker, over HTTP for Kubernetes probes.

Three parts, all off the hot path:

- `Health`, a thread-safe registry. Components report ``ok(name)`` or
  ``fail(name, reason)``; the event loop stamps ``beat()``. A snapshot says
  whether the worker is alive (the loop stamped within ``stall_seconds``) and
  ready (alive, started, and no component failing), with every current
  reason and since when.
- `Prober`, a thread that checks the store (``Store.ping``) and the broker (a
  metadata request over the configured security settings) every few seconds
  and reports into the registry, so readiness follows an outage both ways
  without anyone restarting anything.
- `HealthServer`, a small HTTP server in a daemon thread: ``GET /livez`` and
  ``GET /readyz``, 200 or 503 with the snapshot as JSON. Handlers only read
  the registry, so a probe never waits on Kafka or Cassandra.

Liveness is deliberately narrow: an unreachable broker or store makes a worker
not ready, never not alive, because restarting the pod cannot fix either; only
a stuck event loop (or a dead process) should get it restarted.

>>> health = Health(stall_seconds=30)
>>> health.beat(); health.ok("store"); health.fail("broker", "BrokerError: gone")
>>> snap = health.snapshot()
>>> snap.alive, snap.ready, snap.reasons
(True, False, {'broker': 'BrokerError: gone'})
>>> health.ok("broker"); health.snapshot().ready
True
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from mode import Service

from streams.admin import admin_client
from streams.rebalance_watch import RebalanceWatch, rebalance_check
from streams.security import kafka_security
from streams.settings import Settings
from streams.stores.base import Store

log = logging.getLogger("interest_stream.health")

#: Longest reason kept: a stack of nested driver errors is not a probe's business.
MAX_REASON_CHARS = 500
#: The reason of the derived ``loop`` component.
LOOP = "loop"


def describe(exc: BaseException) -> str:
    """``"ExcType: message"``, shortened: how a failure reads in /readyz."""
    kind, text = type(exc).__name__, str(exc)
    if not text:
        reason = kind
    elif text.startswith(f"{kind}:"):  # kafka-python's errors name their class already
        reason = text
    else:
        reason = f"{kind}: {text}"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


def _iso(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class Snapshot:
    """The worker's health at one moment; `to_json` is the body both endpoints serve."""

    alive: bool
    ready: bool
    #: Component -> why it is failing ("ExcType: message"); empty when ready.
    reasons: dict[str, str]
    #: Component -> when (UTC, ISO-8601) its current failure began.
    since: dict[str, str]
    #: Component -> when it last reported, ok or not.
    reported: dict[str, str]
    #: Seconds since the event loop last stamped; None before its first stamp.
    heartbeat_age_seconds: float | None
    stall_seconds: float
    #: Totals since start of what the agents counted (events, dead_letters,
    #: internal_errors, state_unreadable, fenced, ...), per agent.
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per agent: seconds spent per stage since start (`models.stages`, plus the
    #: agent's queue, thread_hop, recheck and produce; ``consumer``: commit),
    #: and the batches and records they cover (``interest-stream bench`` reads it).
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        age = self.heartbeat_age_seconds
        return {
            "ready": self.ready,
            "alive": self.alive,
            "reasons": self.reasons,
            "since": self.since,
            "reported": self.reported,
            "heartbeat_age_seconds": None if age is None else round(age, 3),
            "stall_seconds": self.stall_seconds,
            "counters": self.counters,
            "stages": self.stages,
        }


@dataclass
class _Status:
    reason: str | None  # None: ok
    since_wall: float
    since_mono: float
    reported_wall: float


@dataclass
class Health:
    """The registry: what each component last reported, and the loop's last stamp.

    Parameters
    ----------
    stall_seconds
        The loop counts as stalled (not alive) when it has not stamped for this
        long.
    startup_seconds
        Before the loop's first stamp: how long the start-up (store, encoder,
        the catalogue read and its index build) may take, counted from the
        registry's creation, so a start-up that hangs is caught too (as a
        Kubernetes startupProbe would). None: ``stall_seconds``. A 100,000-item
        catalogue takes 25 to 60 s to load on a 2-core machine.
    clock, wall
        Monotonic and wall clocks, replaceable in tests.
    """

    stall_seconds: float = 30.0
    startup_seconds: float | None = None
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _status: dict[str, _Status] = field(default_factory=dict, init=False, repr=False)
    _created: float = field(default=0.0, init=False, repr=False)
    _beat: float | None = field(default=None, init=False, repr=False)
    _counters: dict[str, dict[str, int]] = field(default_factory=dict, init=False, repr=False)
    _stages: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._created = self.clock()

    def beat(self) -> None:
        """The event loop is running (called from a task on the loop)."""
        now = self.clock()
        with self._lock:
            self._beat = now

    def count(self, agent: str, counts: dict[str, int]) -> None:
        """Add one batch's counters to ``agent``'s totals (served with the health JSON)."""
        with self._lock:
            totals = self._counters.setdefault(agent, {})
            for name, n in counts.items():
                totals[name] = totals.get(name, 0) + n

    def time(self, agent: str, seconds: Mapping[str, float], records: int) -> None:
        """Add one batch's seconds per stage (over ``records`` records) to ``agent``'s totals."""
        with self._lock:
            totals = self._stages.setdefault(agent, {"seconds": {}, "batches": 0, "records": 0})
            for name, s in seconds.items():
                totals["seconds"][name] = totals["seconds"].get(name, 0.0) + s
            totals["batches"] += 1
            totals["records"] += records

    def ok(self, name: str) -> None:
        """``name`` works (again)."""
        self._report(name, None)

    def fail(self, name: str, reason: str) -> None:
        """``name`` is failing; ``reason`` is shown in /readyz until it reports ok."""
        self._report(name, reason[:MAX_REASON_CHARS] or "failing")

    def _report(self, name: str, reason: str | None) -> None:
        mono, wall = self.clock(), self.wall()
        with self._lock:
            old = self._status.get(name)
            if old is not None and (old.reason is None) == (reason is None):
                old.reason, old.reported_wall = reason, wall  # same state: keep its start
                return
            self._status[name] = _Status(reason, wall, mono, wall)
        if reason is not None:
            log.warning("not ready: %s: %s", name, reason)
        elif old is not None:
            log.info("%s recovered after %.1fs", name, mono - old.since_mono)

    def ok_since(self, *names: str) -> float | None:
        """The clock's time since which all of ``names`` have been ok; None while one is not.

        None too while one has not reported yet.
        """
        with self._lock:
            statuses = [self._status.get(name) for name in names]
        if any(s is None or s.reason is not None for s in statuses):
            return None
        return max((s.since_mono for s in statuses if s is not None), default=None)

    def snapshot(self) -> Snapshot:
        now, wall = self.clock(), self.wall()
        with self._lock:
            beat = self._beat
            reasons = {n: s.reason for n, s in self._status.items() if s.reason is not None}
            since = {n: _iso(s.since_wall) for n, s in self._status.items() if s.reason is not None}
            reported = {n: _iso(s.reported_wall) for n, s in self._status.items()}
            counters = {agent: dict(totals) for agent, totals in self._counters.items()}
            stages = {
                agent: {**t, "seconds": {k: round(v, 6) for k, v in t["seconds"].items()}}
                for agent, t in self._stages.items()
            }
        age = now - (self._created if beat is None else beat)
        if beat is None and self.startup_seconds is not None:
            limit, setting = self.startup_seconds, "health_startup_seconds"
        else:
            limit, setting = self.stall_seconds, "health_stall_seconds"
        alive = age <= limit
        if not alive:
            what = "has not run for" if beat is not None else "has not started after"
            reasons[LOOP] = f"stalled: the event loop {what} {age:.1f}s ({setting}={limit:g})"
            since[LOOP] = _iso(wall - age)
        elif beat is None:
            reasons[LOOP] = "starting: the event loop has not run yet"
            since[LOOP] = _iso(wall - age)
        return Snapshot(
            alive=alive,
            ready=not reasons,
            reasons=reasons,
            since=since,
            reported=reported,
            heartbeat_age_seconds=None if beat is None else now - beat,
            stall_seconds=self.stall_seconds,
            counters=counters,
            stages=stages,
        )


class Heartbeat(Service):
    """Stamps `Health.beat` from the worker's event loop every ``interval`` seconds.

    A mode service handed to ``faust.Worker``: it starts before the app, so
    the loop is shown alive while the consumer is still joining its group.
    """

    def __init__(self, health: Health, interval: float, **kwargs: Any) -> None:
        self.health = health
        self.interval = interval
        super().__init__(**kwargs)

    @Service.task
    async def _stamp(self) -> None:
        while not self.should_stop:
            self.health.beat()
            await self.sleep(self.interval)


def heartbeat_interval(stall_seconds: float) -> float:
    """Stamp several times per stall window, at most once a second."""
    return min(1.0, stall_seconds / 4)


Check = Callable[[], None]


class Prober:
    """Runs named checks every ``every`` seconds and reports them into ``health``.

    Each run of a check gets its own daemon thread, so one that hangs (a
    broker that accepts connections and never answers) neither delays the
    other checks nor blocks the process from exiting; it is reported failing
    once it has run for longer than ``timeout`` and is not started again
    until it returns. Until a check first passes it reports "not checked yet".
    """

    def __init__(
        self, health: Health, checks: Mapping[str, Check], every: float, timeout: float
    ) -> None:
        self.health = health
        self.checks = dict(checks)
        self.every = every
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # check name -> monotonic start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for name in self.checks:
            health.fail(name, "not checked yet")

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self._loop, name="health-prober", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def probe(self) -> None:
        """One round: start every check that is not still running."""
        now = time.monotonic()
        for name, check in self.checks.items():
            with self._lock:
                started = self._running.get(name)
                if started is None:
                    self._running[name] = now
            if started is None:
                threading.Thread(
                    target=self._run, args=(name, check), name=f"health-{name}", daemon=True
                ).start()
            elif now - started > self.timeout:
                self.health.fail(
                    name, f"TimeoutError: {name} has not answered for {now - started:.1f}s"
                )

    def _run(self, name: str, check: Check) -> None:
        try:
            check()
        except Exception as exc:  # any failure of a check is the reason, never a crash
            self.health.fail(name, describe(exc))
        else:
            self.health.ok(name)
        finally:
            with self._lock:
                self._running.pop(name, None)

    def _loop(self) -> None:
        while True:
            self.probe()
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class TopicsMissing(RuntimeError):
    """The broker answers but lacks topics the worker needs (a fresh in-memory broker)."""


def broker_check(
    bootstrap: str, security: Mapping[str, object], topics: Iterable[str], timeout: float
) -> Check:
    """A check that a metadata request answers and lists every one of ``topics``.

    A fresh admin client each time: the check walks the whole path a
    restarted worker would (bootstrap, TLS, SASL login, metadata), and holds
    no connection between checks (`streams.admin.admin_client` closes what
    a failed bootstrap leaves behind).
    """
    wanted = sorted(set(topics))
    timeout_ms = max(100, int(timeout * 1000))

    def check() -> None:
        # admin_client closes the half-made clients of a failed bootstrap itself.
        admin = admin_client(
            bootstrap,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            reconnect_backoff_ms=250,  # a few attempts per check, not dozens
            **security,
        )
        try:
            present = set(admin.list_topics())
        finally:
            admin.close()
        missing = [t for t in wanted if t not in present]
        if missing:
            raise TopicsMissing(f"{bootstrap} has no topic {', '.join(missing)}")

    return check


def worker_prober(
    settings: Settings,
    bootstrap: str,
    store: Store,
    health: Health,
    rebalances: RebalanceWatch | None = None,
) -> Prober:
    """The store and broker checks of a worker, every ``health_probe_seconds``.

    With ``rebalances`` (and ``rebalance_stuck_seconds`` > 0) also the check
    that exits a worker stuck in a rebalance (`streams.rebalance_watch`).
    """
    every = settings.health_probe_seconds
    timeout = max(2.0, min(5.0, 2 * every))
    # After start-up only the probe uses kafka-python in a worker (Faust has
    # aiokafka): a dozen INFO lines and a few retry warnings for every client
    # it makes would drown the worker's log. Its errors (refused connection,
    # failed login) still show.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    topics = [name for name, _, _ in settings.topics.specs()]
    checks = {
        "store": lambda: store.ping(timeout),
        "broker": broker_check(bootstrap, kafka_security(settings), topics, timeout),
    }
    if rebalances is not None and settings.rebalance_stuck_seconds > 0:
        checks["rebalance"] = rebalance_check(
            rebalances, lambda: health.ok_since("broker", "store"), settings.rebalance_stuck_seconds
        )
    return Prober(health, checks, every=every, timeout=timeout)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    #: A client that connects and sends nothing does not hold a thread for long.
    timeout = 5.0

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path in ("/livez", "/readyz"):
            snap = self.server.health.snapshot()
            good = snap.alive if path == "/livez" else snap.ready
            status = HTTPStatus.OK if good else HTTPStatus.SERVICE_UNAVAILABLE
            payload = snap.to_json()
        else:
            status = HTTPStatus.NOT_FOUND
            payload = {"error": f"no such path {path or '/'}", "paths": ["/livez", "/readyz"]}
        data = json.dumps(payload, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: Health) -> None:
        self.health = health
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class HealthError(OSError):
    """The health server cannot listen where the settings say."""


class HealthServer:
    """``GET /livez`` and ``GET /readyz`` on ``host:port`` (0: a free port), in a daemon thread.

    ``/livez``: 200 while the loop stamps, 503 once it stalls. ``/readyz``: 200
    when ready, else 503. Both bodies are `Snapshot.to_json`.
    """

    def __init__(self, health: Health, host: str = "127.0.0.1", port: int = 0) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        try:
            self._server = _Server((self.host, self.port), self.health)
        except OSError as exc:
            raise HealthError(
                f"cannot serve health endpoints on {self.host}:{self.port}: {exc}; "
                "set health_port (0 turns the health server off)"
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )
        self._thread.start()
        log.info("health endpoints on http://%s:%d/livez and /readyz", self.host, self.port)
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
