"""What the reliability tests share: a seeded stream, workers to break, the reference.

Each reliability test (kill -9, rebalance and zombie, engine outages) does
the same four things around the failure it injects:

1. `seeded_stream`: a fixed synthetic workload (`streams.workload`);
2. `Rig`: worker processes of one app (one consumer group, one store) on
   real engines, a producer, and waits on the group's committed offsets;
3. `reference_states`: every user's state from an uninterrupted run, by
   replaying the same events per user, in partition order, through
   `models.core.step` against the catalogue the workers embedded;
4. `assert_same_states` and `assert_deltas_agree`: the stored states equal the
   reference, and a `streams.downstream.RecommendationView` fed with the whole
   deltas topic ends with exactly the stored lists.

**State equality** (`assert_same_states`), per user, between the stored state
and the reference: every field of `models.state.UserState` is equal except
``version`` (it counts micro-batches, which depend on timing: a restarted
worker cuts the stream into other batches), with

- the vectors (each interest's hidden vector, the long-term profile, a
  query's negatives): bit for bit (``np.array_equal`` on float32, same
  dtype). The time-decay update is applied one event at a time in float32
  in the same order whatever the batching, and states are stored as float32
  bytes, so a replay that applies each event once in partition order is
  exact; the interests' masses, times and event counts exactly;
- ``topics`` (the user's topic masses) is not compared: it depends on the
  shared topic model as it was when each event was applied, which moves as
  the item agent learns (a readable summary, not part of the guarantee);
- ``top_k``: the same items in the same order, each score within
  ``SCORE_ATOL`` = 1e-6 of the reference's (cosines in [-1, 1] computed by
  one BLAS mat-vec over a catalogue whose rows may sit elsewhere in memory;
  1e-6 is ~16 float32 ulps at 1.0);
- everything else (``updater``, ``last_event_ts``, ``gap_s``, ``window``, ``consumed``,
  ``recent_event_ids``, ``offsets``, ``pending``, ``events_applied``) exactly.

``events_applied`` equal to the number of the user's events and
``recent_event_ids`` holding each of them once mean no event was lost or
applied twice.

Worker logs are kept under the test's tmp dir and printed (tail) when a
check fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError

from models.behaviour import Behaviour, Position
from models.core import step
from models.state import UserState
from streams import codec
from streams.admin import CommitWatch, wait_committed
from streams.downstream import DeltaConsumer, RecommendationView
from streams.ports import free_port
from streams.processor import CatalogueSync
from streams.rebalance_watch import EXIT_REBALANCE_STUCK
from streams.settings import Settings
from streams.stores.base import Store
from streams.tail import ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import open_store, spawn_worker, stop_worker
from streams.workload import synthetic_workload, to_json_bytes

#: Processing clock of the reference replay (the workload's events are from 2023).
NOW = 1_750_000_000.0
#: Largest difference allowed between a stored and a reference score (see module doc).
SCORE_ATOL = 1e-6

Records = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Stream:
    """A fixed catalogue and event stream (``streams.workload.synthetic_workload``)."""

    items: list[dict]
    events: list[dict]

    @property
    def users(self) -> list[str]:
        return sorted({e["user_id"] for e in self.events})

    def item_records(self) -> Records:
        return [(i["item_id"].encode(), to_json_bytes(i)) for i in self.items]

    def event_records(self) -> Records:
        return [(e["user_id"].encode(), to_json_bytes(e)) for e in self.events]


def seeded_stream(users: int, events_per_user: int, seed: int, items_per_tag: int = 20) -> Stream:
    w = synthetic_workload(
        users=users, items_per_tag=items_per_tag, events_per_user=events_per_user, seed=seed
    )
    return Stream(w.items, w.events)


@dataclass
class Worker:
    """One worker process of a `Rig` and its log."""

    name: str
    proc: subprocess.Popen
    log: Path
    health_port: int
    #: Times the rig restarted it after it gave up on a stuck rebalance.
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class _RecordingView(RecommendationView):
    """A view that also keeps every delta it was fed, per user in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.by_user: dict[str, list[dict]] = defaultdict(list)

    def apply_bytes(self, value: bytes | None) -> str:
        outcome = super().apply_bytes(value)
        if outcome != "rejected":
            delta = json.loads(value)
            self.by_user[delta["user_id"]].append(delta)
        return outcome


@dataclass
class Rig:
    """Workers of one app on real engines: spawn, break, and wait for them.

    ``settings`` is the app's (one consumer group ``app_id``, one store,
    its own topics); every worker gets them with a health port of its own.
    The rig plays supervisor for one case: a worker that exits with
    `EXIT_REBALANCE_STUCK` (Faust stuck in a rebalance, `streams.rebalance_watch`)
    is started again in place, same name, log and health port, as
    Kubernetes or compose would; its ``restarts`` counts it. Any other exit
    is the test's to see.
    """

    settings: Settings
    bootstrap: str
    folder: Path
    workers: list[Worker] = field(default_factory=list)
    _producer: KafkaProducer | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    _closing: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    _watch: CommitWatch | None = None

    @property
    def group(self) -> str:
        return self.settings.app_id

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, max_request_size=MAX_MESSAGE_BYTES
            )
        return self._producer

    def spawn(self, name: str | None = None) -> Worker:
        """Start a worker process (``worker-N.log`` under ``folder``)."""
        name = name or f"worker-{len(self.workers) + 1}"
        port = free_port()
        log = self.folder / f"{name}.log"
        proc = spawn_worker(self._worker_settings(port), self.bootstrap, log)
        worker = Worker(name, proc, log, port)
        self.workers.append(worker)
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="rig", daemon=True)
            self._supervisor.start()
        return worker

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            for worker in list(self.workers):
                if worker.proc.poll() == EXIT_REBALANCE_STUCK and not self._closing.is_set():
                    settings = self._worker_settings(worker.health_port)
                    worker.restarts += 1
                    worker.proc = spawn_worker(settings, self.bootstrap, worker.log)

    def _worker_settings(self, health_port: int) -> Settings:
        """A worker's: its own health port, and every batch logged (`wait_batch` and the
        rebalance test read the batch lines)."""
        return self.settings.replace(
            health_port=health_port, health_host="127.0.0.1", batch_log_seconds=0.0
        )

    def kill(self, worker: Worker, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for SIGKILL also reap the process."""
        worker.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            worker.proc.wait(30)

    def stop(self, worker: Worker) -> None:
        """SIGTERM, as an orchestrator stops a pod (Faust commits and leaves)."""
        stop_worker(worker.proc, timeout=60)

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    # -- the stream ----------------------------------------------------------------

    def publish_items(self, stream: Stream, timeout: float = 120) -> None:
        """Publish the catalogue and wait until the group committed all of it."""
        positions = publish(self.producer, self.settings.topics.items, stream.item_records())
        self.wait_committed(self.settings.topics.items, ends_of(positions), timeout)

    def publish_async(self, records: Records, rate: float) -> Future[list[tuple[int, int]]]:
        """Publish ``records`` on `behaviours` in a thread, paced at ``rate``/s."""
        topic = self.settings.topics.behaviours
        return self._pool.submit(publish, self.producer, topic, records, rate=rate)

    def publish(self, records: Records, rate: float = 0.0) -> list[tuple[int, int]]:
        return publish(self.producer, self.settings.topics.behaviours, records, rate=rate)

    def committed(self, topic: str | None = None) -> dict[int, int]:
        """The group's committed offsets (none while a coordinator is elected)."""
        if self._watch is None:  # one admin client for every look (`CommitWatch`)
            self._watch = CommitWatch(self.bootstrap, self.group)
        try:
            return self._watch.offsets(topic or self.settings.topics.behaviours)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            return {}

    def committed_total(self) -> int:
        return sum(self.committed().values())

    def wait_committed(self, topic: str, ends: dict[int, int], timeout: float) -> None:
        wait_committed(
            self.bootstrap,
            self.group,
            topic,
            ends,
            timeout=timeout,
            alive=lambda: any(w.alive for w in self.workers),
        )

    def wait_progress(self, above: int, timeout: float) -> int:
        """Block until the group committed more than ``above`` behaviours; the new total."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.committed_total()
            if done > above:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.group} stuck at {done} committed for {timeout}s")
            # A look costs ~0.5 ms of CPU over the kept client (a fresh one
            # ~5-7 ms: at 20 looks a second that took ~13% of a core from the
            # worker under test).
            time.sleep(0.2)

    def wait_batch_written(self, worker: Worker, timeout: float) -> None:
        """Block until ``worker`` logs its next processed batch.

        The line comes once the batch's states are written and its outputs
        are on the broker, before Faust commits its offsets (every
        ``commit_interval_seconds``): a kill right after it lands between a
        state write and its commit.
        """
        seen = self._batches_logged(worker)
        deadline = time.monotonic() + timeout
        while self._batches_logged(worker) == seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{worker.name} logged no batch for {timeout}s")
            time.sleep(0.005)

    @staticmethod
    def _batches_logged(worker: Worker) -> int:
        if not worker.log.exists():
            return 0
        return worker.log.read_text(errors="replace").count("ms produce=")

    # -- outputs and logs -------------------------------------------------------------

    def read_deltas(
        self, timeout: float = 60.0
    ) -> tuple[RecommendationView, dict[str, list[dict]]]:
        """One pass over the whole deltas topic through a `DeltaConsumer`.

        Returns the `RecommendationView` it fed and every delta, per user in
        partition (= publication) order.
        """
        view = _RecordingView()
        with DeltaConsumer(view, self.bootstrap, self.settings.topics.deltas) as feed:
            feed.catch_up(timeout)
        return view, view.by_user

    def log_text(self) -> str:
        return "\n".join(
            f"===== {w.name} =====\n{w.log.read_text(errors='replace')}"
            for w in self.workers
            if w.log.exists()
        )

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(
            f"===== {w.name} (tail) =====\n{w.log.read_text(errors='replace')[-chars:]}"
            for w in self.workers
            if w.log.exists()
        )

    def close(self) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.proc.pid, signal.SIGCONT)  # a stopped worker cannot exit
                stop_worker(worker.proc, timeout=30)
        if self._producer is not None:
            self._producer.close(5)
        if self._watch is not None:
            self._watch.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- the reference ---------------------------------------------------------------


def reference_states(
    store: Store,
    settings: Settings,
    stream: Stream,
    positions: Sequence[tuple[int, int]],
) -> dict[str, UserState]:
    """Each user's state after an uninterrupted run of ``stream`` through `models.core.step`.

    ``positions`` are the (partition, offset) each event was written at, so
    every event carries the position the workers saw and each user's events
    are replayed in partition order. The catalogue is the workers' own: the
    store's item change feed read through `CatalogueSync`, as a worker reads
    it (the vectors the ONNX encoder made, in the same order).
    """
    first = next(iter(store.get_items([stream.items[0]["item_id"]]).values()))
    sync = CatalogueSync(store, int(first.vector.shape[0]))
    sync.refresh()
    topic = settings.topics.behaviours
    params = settings.core_params()
    per_user: dict[str, list[tuple[tuple[int, int], Behaviour]]] = defaultdict(list)
    for event, (partition, offset) in zip(stream.events, positions, strict=True):
        decoded = codec.decode_behaviour(
            None, to_json_bytes(event), Position(topic, partition, offset), NOW
        )
        assert isinstance(decoded, Behaviour), decoded
        per_user[event["user_id"]].append(((partition, offset), decoded))
    states = {}
    for user, pairs in per_user.items():
        ordered = [b for _, b in sorted(pairs, key=lambda p: p[0])]
        result = step(None, ordered, sync.catalogue, NOW, params)
        assert result.state is not None and not result.parked, user
        states[user] = result.state
    return states


def assert_same_states(
    stored: dict[str, object], reference: dict[str, UserState], stream: Stream
) -> None:
    """Stored states equal the reference as the module doc defines it; each event once."""
    problems = []
    events_of: dict[str, list[str]] = defaultdict(list)
    for e in stream.events:
        events_of[e["user_id"]].append(e["event_id"])
    assert sorted(stored) == sorted(reference), "users with a state differ"
    for user, want in reference.items():
        got = stored[user]
        if not isinstance(got, UserState):
            problems.append(f"{user}: stored state unreadable: {got}")
            continue
        ids = events_of[user]
        if got.events_applied != len(ids) or sorted(got.recent_event_ids) != sorted(ids):
            problems.append(
                f"{user}: {got.events_applied} events applied, {len(ids)} published; "
                f"ids twice: {sorted({i for i in got.recent_event_ids if got.recent_event_ids.count(i) > 1})}, "  # noqa: E501
                f"missing: {sorted(set(ids) - set(got.recent_event_ids))[:5]}"
            )
        for f in fields(UserState):
            if f.name in ("version", "interests", "long_term", "query", "topics", "top_k"):
                continue
            if getattr(got, f.name) != getattr(want, f.name):
                problems.append(f"{user}: {f.name} differs")
        problems += _vector_problems(user, got, want)
        if [i for i, _ in got.top_k] != [i for i, _ in want.top_k]:
            problems.append(f"{user}: top_k items {got.top_k} != {want.top_k}")
        elif not np.allclose(
            [s for _, s in got.top_k], [s for _, s in want.top_k], rtol=0, atol=SCORE_ATOL
        ):
            problems.append(f"{user}: top_k scores differ beyond {SCORE_ATOL}")
        if got.version < 1:
            problems.append(f"{user}: version {got.version}")
    assert not problems, f"{len(problems)} problems, first: " + "\n".join(problems[:15])


def _vector_problems(user: str, got: UserState, want: UserState) -> list[str]:
    """The state's vectors bit for bit; the interests' weights and counts exactly."""
    problems = []
    g, w = got.vectors(), want.vectors()
    if len(g) != len(w):
        return [f"{user}: {len(g)} vectors stored, {len(w)} in the reference"]
    for n, (a, b) in enumerate(zip(g, w, strict=True)):
        if a.dtype != b.dtype or not np.array_equal(a, b):
            diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
            problems.append(f"{user}: vector {n} differs (max abs diff {diff:.3g})")
    meta = [(i.hidden_ts, i.mass, i.mass_ts, i.events) for i in got.interests]
    if meta != [(i.hidden_ts, i.mass, i.mass_ts, i.events) for i in want.interests]:
        problems.append(f"{user}: interests' weights or counts differ")
    if (got.query is None) != (want.query is None) or (
        got.query is not None and got.query.phrases != want.query.phrases
    ):
        problems.append(f"{user}: query differs")
    return problems


def assert_deltas_agree(
    rig: Rig, stored: dict[str, object], *, published_late: Collection[tuple[str, int]] = ()
) -> dict[str, int]:
    """Downstream ends with exactly the stored lists; no event in two deltas of a user.

    A `RecommendationView` fed with every delta on the topic must hold, for
    every user, the stored state's top-K items in order (scores are those of
    the last delta: a batch that moved no rank publishes nothing) at a version
    no newer than the stored one, with no conflicting restatement. The
    ``events`` deltas of one user never name an event twice (a batch applied
    after a crash is restated as ``replay``, never re-applied), and, in
    partition order, a non-replay delta's version is above every earlier
    delta's of its user, unless the worker logged it as published late
    (``published_late``: (user, version) pairs, from the lines of
    `BehaviourProcessor.published_superseded`), and then the view must have
    dropped it as ``stale``. Returns the view's counters.
    """
    view, in_order = rig.read_deltas()
    counts = view.counts()
    problems = []
    behind = 0
    for user, state in stored.items():
        assert isinstance(state, UserState)
        if view.items(user) != [i for i, _ in state.top_k]:
            problems.append(f"{user}: view {view.items(user)} != stored {state.top_k}")
        if view.version(user) > state.version:
            problems.append(f"{user}: view at v{view.version(user)} > stored v{state.version}")
    if counts["conflict"] or counts["rejected"]:
        problems.append(f"view counters {counts}")
    for user, deltas in in_order.items():
        applied = [
            i for d in deltas if d["cause"]["kind"] == "events" for i in d["cause"]["event_ids"]
        ]
        twice = {i for i in applied if applied.count(i) > 1}
        if twice:
            problems.append(f"{user}: events in two deltas: {sorted(twice)[:5]}")
        top = -1
        for d in deltas:
            if d["cause"]["kind"] != "replay" and d["version"] < top:
                if (user, d["version"]) in published_late:
                    behind += 1
                else:
                    problems.append(f"{user}: delta v{d['version']} after v{top} ({d['cause']})")
            top = max(top, d["version"])
    if counts["stale"] < behind:
        problems.append(f"{behind} deltas published late, the view dropped {counts['stale']}")
    assert not problems, f"{len(problems)} problems, first: " + "\n".join(problems[:15])
    return counts


def stored_states(settings: Settings, users: Iterable[str]) -> dict[str, object]:
    store = open_store(settings)
    try:
        return dict(store.get_states(list(users)))
    finally:
        store.close()


def check_guarantee(
    rig: Rig,
    stream: Stream,
    positions: Sequence[tuple[int, int]],
    *,
    published_late: Collection[tuple[str, int]] = (),
) -> dict[str, int]:
    """The whole guarantee after a run: states equal the reference, downstream agrees."""
    store = open_store(rig.settings)
    try:
        stored = dict(store.get_states(stream.users))
        reference = reference_states(store, rig.settings, stream, positions)
    finally:
        store.close()
    assert_same_states(stored, reference, stream)
    return assert_deltas_agree(rig, stored, published_late=published_late)


def readiness(worker: Worker, timeout: float = 3.0) -> tuple[int, dict]:
    """``GET /readyz`` of a worker: (status, body); (0, {}) if nothing answers."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{worker.health_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


class ReadinessLog:
    """Polls a worker's /readyz in a thread: every (monotonic time, status, reasons)."""

    def __init__(self, worker: Worker, every: float = 0.5) -> None:
        self.worker = worker
        self.every = every
        self.samples: list[tuple[float, int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readyz", daemon=True)

    def __enter__(self) -> ReadinessLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = readiness(self.worker)
            self.samples.append((time.monotonic(), status, body.get("reasons", {})))
            self._stop.wait(self.every)

    def between(self, start: float, end: float) -> list[tuple[float, int, dict]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def wait_for(self, ok: Callable[[int, dict], bool], timeout: float) -> float:
        """Block until a sample taken from now on satisfies ``ok(status, reasons)``; its time."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            for at, status, reasons in self.samples:
                if at >= start and ok(status, reasons):
                    return at
            time.sleep(0.1)
        last = self.samples[-3:]
        raise TimeoutError(f"/readyz of {self.worker.name} never matched; last: {last}")
