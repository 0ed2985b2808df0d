"""``interest-stream bench``: the maximum sustainable rate, pipeline against a bare pass-through.

    interest-stream bench [--quick] [--out benchmarks/results/bench.json]
        [--bootstrap HOST:PORT] [--cassandra HOST:PORT] [--set KEY=VALUE ...]
        [--catalogue-size N]

One run, one broker, the same topic and consumer settings for both workers:

- **pass-through**: a bare Faust agent (`streams.loadtest.run_passthrough_worker`)
  that forwards every behaviour unchanged to the deltas topic, with the
  pipeline's batching, fetch and commit settings;
- **pipeline**: `interest-stream worker` (decode, state read, core update,
  ranking, state write, produce, commit).

**Load.** An open-loop producer (`streams.loadtest.OpenLoopProducer`)
offers behaviours at a fixed target rate whatever the worker consumes: a
worker that falls behind shows as lag and latency, never as a slower
producer. The workload is `streams.workload.synthetic_workload` (500 users,
60 events each, the demo's 480-item catalogue), replayed with fresh user and
event ids per cycle.

**A bigger catalogue.** ``--catalogue-size N`` ranks against N items: the
workload's 480 and N - 480 generated ones (`streams.workload.catalogue_items`,
seeded by ``--seed``), which the events never touch but every ranking
scores. Past ``ann_min_items`` (10,000) the pipeline ranks through its
approximate index (`models.ann`). The generated items are encoded once here,
with the export and precision the workers run (`streams.loadtest.encode_items`;
fp32 vectors cached on disk, so a second run reads them), and written into
the pipeline's store before it starts, with the content hash its items
agent keys its embedding cache on, as that agent would have left them
(`streams.loadtest.write_preload`): the worker loads them and builds the
index at start, as a restarted worker does, instead of encoding 100,000 texts
at ~170 items/s. The workload's own items still come through the items
topic. The result's ``catalogue`` says how big it was, how long each part
of the load took, and whether the index ranked: the worker's ``ann_search``
stage (`models.core`) over the whole run.

**A step** offers one rate for ``--step-seconds``. It is *sustainable* when
all four hold:

1. the producer stayed within 0.25 s of its schedule and every send succeeded
   (else the load generator, not the worker, was the limit);
2. the event-to-delta latency p99 of the step's deltas is at most
   ``--p99-limit-ms`` (default 500 ms; 1000 ms with ``--quick``): the time
   from the newest input record's produce (``cause.source_ts_ms``; the
   pass-through keeps each record's own timestamp) to this reader receiving
   the delta;
3. the group committed the step's last offset within 2 s + the commit
   interval (``commit_interval_seconds``, 1 s by default) after the last
   record was sent: the lag stayed bounded;
4. deltas came back.

**Ramp.** From ``--start-rate`` (25/s) the rate doubles until a step fails,
then ``--bisections`` (3) halve the interval between the last sustainable
rate and the first failing one; the maximum sustainable rate is the highest
rate that passed. Steps run back to back on one worker per mode, its topics
and group kept: a worker's start (encoder load, group join) costs more than
a step, and a long-lived worker with a warm store and caches is what is
being measured. Each step begins with nothing outstanding (the previous step
was committed, or drained before it starts) and with fresh users.

**At half the pipeline's maximum** the pipeline runs once more for
``--measure-seconds``: throughput, event-to-delta latency p50/p95/p99/max,
the consumer lag sampled every 0.25 s, and the time per stage
(`models.stages`, summed by the worker's `streams.health.Health` and read
from its ``/livez`` JSON before and after: decode, state read, encode, core
update, ranking, state write, produce, commit and the rest), each as a
share of the worker's measured time.

Embedded tansu broker and SQLite store by default; ``--bootstrap`` and
``--cassandra`` target a cluster (each worker gets its own topics, group
and keyspace, deleted topics after). Prints a table, writes ``--out`` (JSON)
and three PNG plots beside it: ``-latency`` (percentiles against offered
rate, both workers), ``-lag`` (lag over time at half maximum) and ``-stages``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.loadtest import Preload, WorkerRun
    from streams.workload import Workload

#: Settings the benchmark sets itself for each worker; ``--set`` may not change them.
OWN_SETTINGS = frozenset(
    {"app_id", "topic_prefix", "data_dir", "encoder_cache", "health_host", "health_port",
     "bootstrap_servers", "roles"}
)  # fmt: skip
LAG_SAMPLE_S = 0.25
SHARED_NOTE = "a shared machine: other sessions' CPU use is not controlled"
#: Stages in the order the table and the bar chart show them (others follow).
STAGE_ORDER = (
    "queue_wait", "decode", "state_read", "encode", "core", "rank", "ann_search", "summary",
    "state_write",
    "serialise", "produce", "commit", "catalogue_sync", "online_part", "thread_hop", "recheck",
    "other",
)  # fmt: skip
STAGE_LABELS = {"core": "core update", "rank": "ranking", "ann_search": "index search",
                "state_read": "state read", "state_write": "state write",
                "thread_hop": "thread hop"}  # fmt: skip


# -- the decision: pure, tested with fake steps -----------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What a step must hold to count as sustainable (see the module docstring)."""

    p99_ms: float = 500.0
    behind_s: float = 0.25
    commit_grace_s: float = 2.0
    commit_interval_s: float = 1.0

    @property
    def commit_within_s(self) -> float:
        return self.commit_grace_s + self.commit_interval_s


@dataclass
class Step:
    """What one step at one offered rate measured."""

    rate: float
    seconds: float
    sent: int
    errors: int
    behind_max_s: float
    #: Seconds from the first send to the last one flushed.
    producing_s: float
    #: Seconds from the last send to the group committing it; None: not within the limit.
    commit_s: float | None
    deltas: int
    latency_ms: dict[str, float | None]
    lag_max: int
    drained: bool = True
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def judge(step: Step, limits: Limits) -> list[str]:
    """Why ``step`` is not sustainable under ``limits``; empty: it is.

    >>> fine = Step(100, 10, 1000, 0, 0.01, 10.0, 1.2, 990, {"p99": 80.0}, 40)
    >>> judge(fine, Limits())
    []
    >>> for reason in judge(Step(100, 10, 1000, 0, 0.4, 10.4, None, 0, {"p99": None}, 9), Limits()):
    ...     print(reason)
    producer 0.40 s behind schedule (limit 0.25 s)
    last offset not committed within 3 s of the last send
    no deltas came back
    """
    reasons = []
    if step.errors:
        reasons.append(f"{step.errors} sends failed")
    if step.behind_max_s > limits.behind_s:
        reasons.append(
            f"producer {step.behind_max_s:.2f} s behind schedule (limit {limits.behind_s:g} s)"
        )
    p99 = step.latency_ms.get("p99")
    if p99 is not None and p99 > limits.p99_ms:
        reasons.append(f"p99 {p99:.0f} ms > {limits.p99_ms:g} ms")
    if step.commit_s is None or step.commit_s > limits.commit_within_s:
        reasons.append(
            f"last offset not committed within {limits.commit_within_s:g} s of the last send"
        )
    if step.deltas == 0 or p99 is None:
        reasons.append("no deltas came back")
    return reasons


@dataclass
class Ramp:
    """The rates a ramp tried, in order, and the highest sustainable one (0: none)."""

    max_rate: float
    tried: list[tuple[float, bool]]
    #: True when the doubling reached ``ceiling`` without a failing step.
    capped: bool = False


def ramp(
    sustainable: Callable[[float], bool],
    *,
    start: float,
    bisections: int,
    ceiling: float = 1_000_000.0,
) -> Ramp:
    """Double from ``start`` until a step fails, then bisect ``bisections`` times.

    ``sustainable(rate)`` runs one step. The result is the highest rate that
    passed; with no failing step below ``ceiling`` the ramp stops there.

    >>> ramp(lambda r: r <= 130, start=25, bisections=3).max_rate
    125.0
    >>> [r for r, _ in ramp(lambda r: r <= 130, start=25, bisections=3).tried]
    [25, 50, 100, 200, 150.0, 125.0, 137.5]
    """
    if start <= 0 or bisections < 0:
        raise ValueError("start must be > 0 and bisections >= 0")
    tried: list[tuple[float, bool]] = []

    def attempt(rate: float) -> bool:
        ok = sustainable(rate)
        tried.append((rate, ok))
        return ok

    good, rate = 0.0, start
    while attempt(rate):
        good = rate
        if rate * 2 > ceiling:
            return Ramp(good, tried, capped=True)
        rate *= 2
    bad = rate
    for _ in range(bisections):
        mid = (good + bad) / 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return Ramp(float(good), tried)


def percentiles(values_ms: np.ndarray) -> dict[str, float | None]:
    """p50, p95, p99 and max of ``values_ms``, 0.1 ms; None each when there are none."""
    if not values_ms.size:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1),
            "p99": round(float(p99), 1), "max": round(float(values_ms.max()), 1)}  # fmt: skip


def stage_shares(
    before: Mapping[str, Any], after: Mapping[str, Any], events: int
) -> dict[str, dict[str, float]]:
    """Per stage: seconds between two ``/livez`` ``stages`` snapshots, share, µs per event.

    ``queue`` (the records' summed wait from broker timestamp to batch, per
    record) is waiting, not work: it is shown as ``queue_wait``, the mean
    wait per record, and left out of the shares, which cover the worker's
    measured time (the behaviours agent's stages and the consumer's commits).

    >>> b = {"behaviours": {"seconds": {"core": 1.0, "queue": 5.0}, "records": 10}}
    >>> a = {"behaviours": {"seconds": {"core": 3.0, "decode": 2.0, "queue": 9.0}, "records": 20},
    ...      "consumer": {"seconds": {"commit": 0.5}}}
    >>> s = stage_shares(b, a, events=10)
    >>> s["core"]["share"], s["commit"]["share"], s["queue_wait"]["ms_per_record"]
    (0.444, 0.111, 400.0)

    ``gc_pause`` (garbage-collector pauses, `streams.gc_pauses`) happens
    inside the other stages, so it is shown beside the shares too.

    >>> a["gc"] = {"seconds": {"pause": 0.02}, "records": 3}
    >>> stage_shares(b, a, events=10)["gc_pause"]
    {'seconds': 0.02, 'collections': 3, 'us_per_event': 2000.0}
    """

    def seconds(snap: Mapping[str, Any], agent: str) -> dict[str, float]:
        return dict((snap.get(agent) or {}).get("seconds") or {})

    spent = {
        name: s - seconds(before, "behaviours").get(name, 0.0)
        for name, s in seconds(after, "behaviours").items()
    }
    spent["commit"] = seconds(after, "consumer").get("commit", 0.0) - seconds(
        before, "consumer"
    ).get("commit", 0.0)
    queued = spent.pop("queue", 0.0)
    records = (after.get("behaviours") or {}).get("records", 0) - (
        before.get("behaviours") or {}
    ).get("records", 0)
    total = sum(max(0.0, s) for s in spent.values()) or 1.0
    out = {
        name: {"seconds": round(s, 4), "share": round(max(0.0, s) / total, 3),
               "us_per_event": round(1e6 * s / events, 1) if events else 0.0}
        for name, s in spent.items()
    }  # fmt: skip
    out["queue_wait"] = {"ms_per_record": round(1000 * queued / records, 1) if records else 0.0}
    # Collector pauses happen inside the stages above (any thread's): beside the shares.
    gc_s = seconds(after, "gc").get("pause", 0.0) - seconds(before, "gc").get("pause", 0.0)
    collections = (after.get("gc") or {}).get("records", 0) - (before.get("gc") or {}).get(
        "records", 0
    )
    per_event = round(1e6 * gc_s / events, 1) if events else 0.0
    out["gc_pause"] = {"seconds": round(gc_s, 4), "collections": collections,
                       "us_per_event": per_event}  # fmt: skip
    order = {n: i for i, n in enumerate(STAGE_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


# -- settings from --set ----------------------------------------------------------------------


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as overrides of worker settings; a clear ValueError on a bad one.

    >>> parse_sets(["batch_within_seconds=0.01"])
    {'batch_within_seconds': '0.01'}
    """
    known = {f.name for f in fields(Settings)}
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. batch_within_seconds=0.01")
        if key not in known:
            close = sorted(k for k in known if key.split("_")[0] in k)[:5]
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {key}: no such worker setting{hint}")
        if key in OWN_SETTINGS:
            raise ValueError(f"--set {key}: the benchmark sets {key} itself for each worker")
        overrides[key] = value
    return overrides


# -- one worker under load --------------------------------------------------------------------


class Loaded:
    """One worker (`WorkerRun`) with its delta reader and lag probe: runs steps on it."""

    def __init__(self, run: Any, records: Iterator[tuple[bytes, bytes]], limits: Limits) -> None:
        from streams.loadtest import PIPELINE, DeltaLatencies, Probe, delta_source_ms
        from streams.loadtest import forwarded_source_ms as forwarded

        self.run, self.records, self.limits = run, records, limits
        source = delta_source_ms if run.kind == PIPELINE else forwarded
        self.tail = DeltaLatencies(run.bootstrap, run.settings, source_of=source, from_end=True,
                                   **run.security)  # fmt: skip
        self.probe = Probe(run.bootstrap, run.settings, run.worker.pid, **run.security)
        self.tail.start()

    def step(
        self,
        rate: float,
        seconds: float,
        *,
        drain_timeout: float,
        lag: list[dict[str, float]] | None = None,
        tick: Callable[[], None] = lambda: None,
    ) -> tuple[Step, np.ndarray, np.ndarray]:
        """Offer ``rate``/s for ``seconds``; returns the step, its latencies and published ones."""
        from streams.loadtest import OpenLoopProducer

        run = self.run
        self.tail.take_interval()  # what arrived before this step is not its latency
        producer = OpenLoopProducer(
            run.producer, run.settings.topics.behaviours, self.records, rate, seconds
        )
        start = time.monotonic()
        lag_max = 0

        def sample() -> tuple[int, int]:
            nonlocal lag_max
            self._check_alive()
            end, done = self.probe.progress()
            lag_max = max(lag_max, end - done)
            if lag is not None:
                lag.append({"t_s": round(time.monotonic() - start, 3), "lag": max(0, end - done),
                            "produced": producer.sent, "committed": done})  # fmt: skip
            return end, done

        producer.start()
        while producer.is_alive():
            producer.join(LAG_SAMPLE_S)
            sample()
            tick()
        assert producer.done_at is not None
        deadline = producer.done_at + self.limits.commit_within_s
        commit_s = None
        while True:
            end, done = sample()
            if done >= end:
                commit_s = time.monotonic() - producer.done_at
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        drained = commit_s is not None
        if not drained:  # the next step must start with nothing outstanding
            drain_end = time.monotonic() + drain_timeout
            while time.monotonic() < drain_end:
                end, done = sample()
                if done >= end:
                    drained = True
                    break
                time.sleep(LAG_SAMPLE_S)
        # Deltas are on the broker before their offsets are committed: read them all.
        target, until = self.probe.ends(self.tail.parts), time.monotonic() + 5.0
        while self.tail.read() < target and time.monotonic() < until:
            time.sleep(0.02)
        received, published, _ = self.tail.take_interval()
        lat, pub = np.asarray(received), np.asarray(published)
        step = Step(
            rate=round(rate, 1),
            seconds=seconds,
            sent=producer.sent,
            errors=producer.errors,
            behind_max_s=round(producer.behind_max_s, 3),
            producing_s=round(producer.done_at - start, 3),
            commit_s=None if commit_s is None else round(commit_s, 3),
            deltas=int(lat.size),
            latency_ms=percentiles(lat),
            lag_max=int(lag_max),
            drained=drained,
        )
        step.failed = judge(step, self.limits)
        return step, lat, pub

    def stages(self) -> dict[str, Any]:
        """The worker's stage totals from its health endpoint (`streams.health`)."""
        url = f"http://127.0.0.1:{self.run.settings.health_port}/livez"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())["stages"]

    def _check_alive(self) -> None:
        if not self.run.alive():
            raise RuntimeError(f"{self.run.kind} worker exited with {self.run.worker.returncode}:"
                               f"\n{self.run.log_tail()}")  # fmt: skip

    def close(self, keep_data: bool = False) -> None:
        self.tail.stop()
        self.probe.close()
        self.run.close(keep_data)


# -- the whole benchmark ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the benchmark runs (the CLI's options, quick or full defaults applied)."""

    quick: bool = False
    step_seconds: float = 10.0
    start_rate: float = 25.0
    bisections: int = 3
    measure_seconds: float = 30.0
    p99_limit_ms: float = 500.0
    seed: int = 1
    keep_data: bool = False
    #: Items the pipeline ranks against; None: the workload's own (480).
    catalogue_size: int | None = None

    @classmethod
    def defaults(cls, quick: bool, **given: Any) -> Plan:
        """Quick: 2 s steps from 200/s, 1 bisection, 3 s at half max, p99 limit 1000 ms."""
        base = (
            {"step_seconds": 2.0, "start_rate": 200.0, "bisections": 1, "measure_seconds": 3.0,
             "p99_limit_ms": 1000.0}
            if quick else {}
        )  # fmt: skip
        chosen = {**base, **{k: v for k, v in given.items() if v is not None}}
        plan = cls(quick=quick, **chosen)
        if plan.step_seconds <= 0 or plan.start_rate <= 0 or plan.measure_seconds <= 0:
            raise ValueError("--step-seconds, --start-rate and --measure-seconds must be > 0")
        if plan.bisections < 0 or plan.p99_limit_ms <= 0:
            raise ValueError("--bisections must be >= 0 and --p99-limit-ms > 0")
        if plan.catalogue_size is not None and plan.catalogue_size < workload_items():
            raise ValueError(
                f"--catalogue-size {plan.catalogue_size}: at least the workload's own "
                f"{workload_items()} items (leave it out for just those)"
            )
        return plan


def workload_items() -> int:
    """Items of the benchmark's workload (`streams.loadtest.load_workload`)."""
    from streams.loadtest import ITEMS_PER_TAG
    from streams.workload import TAGS

    return ITEMS_PER_TAG * len(TAGS)


def run_bench(
    settings: Settings,
    bootstrap: str,
    plan: Plan,
    encoder_cache: str,
    *,
    broker_name: str,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Both ramps and the measurement at half the pipeline's maximum; the JSON result."""
    from tqdm import tqdm

    from streams.loadtest import (
        PASSTHROUGH,
        PIPELINE,
        WorkerRun,
        endless_records,
        load_workload,
        machine,
    )

    began = time.monotonic()
    workload = load_workload(plan.seed)
    if plan.catalogue_size is not None:
        # Before minutes of encoding: a broker that is not there fails now.
        from streams.admin import admin_client
        from streams.security import kafka_security

        admin_client(bootstrap, **kafka_security(settings)).close()
    preload = generated_catalogue(workload, plan, settings, encoder_cache, progress)
    limits = Limits(p99_ms=plan.p99_limit_ms, commit_interval_s=settings.commit_interval_seconds)
    records = endless_records(workload)
    load_start = os.getloadavg()[0]
    runs: dict[str, Any] = {}
    errors: list[BaseException] = []

    def start(kind: str) -> None:
        try:
            runs[kind] = WorkerRun.start(bootstrap, kind[:4], workload, encoder_cache,
                                         base=settings, kind=kind, name="bench",
                                         preload=preload if kind == PIPELINE else None)  # fmt: skip
        except BaseException as exc:  # re-raised below, after both starts returned
            errors.append(exc)

    progress("starting the pass-through and the pipeline workers")
    starters = [threading.Thread(target=start, args=(k,)) for k in (PASSTHROUGH, PIPELINE)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    loaded: dict[str, Loaded] = {}
    try:
        if errors:
            raise errors[0]
        loaded = {k: Loaded(runs[k], records, limits) for k in (PASSTHROUGH, PIPELINE)}
        started_s = time.monotonic() - began
        catalogue = catalogue_load(workload, preload, runs[PIPELINE], settings,
                                   loaded[PIPELINE].stages())  # fmt: skip
        progress(catalogue_line(catalogue))
        result: dict[str, Any] = {}
        drain_timeout = max(30.0, 3 * plan.step_seconds)
        with tqdm(desc="bench", unit="step", mininterval=0.5, dynamic_ncols=True) as bar:
            for kind in (PASSTHROUGH, PIPELINE):
                steps: list[Step] = []
                curves: list[dict[str, Any]] = []

                def one(rate: float, kind: str = kind, steps: list = steps) -> bool:
                    if steps and not steps[-1].drained:
                        raise RuntimeError(
                            f"{kind}: the previous step did not drain within "
                            f"{drain_timeout:g} s; the ramp cannot go on"
                        )
                    bar.set_postfix_str(f"{kind} {rate:,.0f}/s", refresh=True)
                    step, _, _ = loaded[kind].step(rate, plan.step_seconds,
                                                   drain_timeout=drain_timeout,
                                                   tick=bar.refresh)  # fmt: skip
                    steps.append(step)
                    bar.update(1)
                    verdict = "ok" if step.ok else "FAIL: " + "; ".join(step.failed)
                    bar.write(f"{kind:12s} {rate:9,.1f}/s  p99 {step.latency_ms['p99']} ms  "
                              f"commit {step.commit_s} s  {verdict}")  # fmt: skip
                    return step.ok

                found = ramp(one, start=plan.start_rate, bisections=plan.bisections)
                for s in steps:
                    curves.append(asdict(s) | {"ok": s.ok})
                result[kind] = {"max_rate_per_s": round(found.max_rate, 1),
                                "capped": found.capped, "steps": curves}  # fmt: skip
            half = result[PIPELINE]["max_rate_per_s"] / 2
            result["half_max"] = None  # no sustainable pipeline step: nothing to measure
            if half > 0:
                bar.set_postfix_str(f"pipeline at half max {half:,.0f}/s", refresh=True)
                result["half_max"] = measure_half(loaded[PIPELINE], half, plan, drain_timeout,
                                                  tick=bar.refresh)  # fmt: skip
                bar.update(1)
        ratio = (
            result[PIPELINE]["max_rate_per_s"] / result[PASSTHROUGH]["max_rate_per_s"]
            if result[PASSTHROUGH]["max_rate_per_s"]
            else None
        )
        result["pipeline_over_passthrough"] = None if ratio is None else round(ratio, 3)
        searched = loaded[PIPELINE].stages().get("behaviours", {}).get("seconds", {})
        catalogue["index_search_s"] = round(searched.get("ann_search", 0.0), 3)
        catalogue["index_used"] = catalogue["index_search_s"] > 0
        wall_s = time.monotonic() - began
    finally:
        for kind, run in runs.items():
            if kind in loaded:
                loaded[kind].close(plan.keep_data)
            else:
                run.close(plan.keep_data)
    return {
        "benchmark": "interest-stream bench",
        "definition": DEFINITION,
        "plan": asdict(plan),
        "limits": asdict(limits) | {"commit_within_s": limits.commit_within_s},
        "broker": broker_name,
        "store": settings.store,
        "worker_settings": {
            f.name: getattr(settings, f.name)
            for f in fields(Settings)
            if f.name not in OWN_SETTINGS and "password" not in f.name
        },
        "workload": f"{workload.description}, replayed in cycles with fresh user and event ids",
        "catalogue": catalogue,
        "machine": machine(load_start, SHARED_NOTE),
        "workers_started_s": round(started_s, 1),
        "wall_s": round(wall_s, 1),
        **result,
    }


def generated_catalogue(
    workload: Workload,
    plan: Plan,
    settings: Settings,
    encoder_cache: str,
    progress: Callable[[str], None],
) -> Preload | None:
    """The generated part of a ``--catalogue-size`` catalogue, encoded (a `Preload`); or None."""
    from tqdm import tqdm

    from streams.loadtest import encode_items
    from streams.workload import catalogue_items

    extra = 0 if plan.catalogue_size is None else plan.catalogue_size - len(workload.items)
    if extra <= 0:
        return None
    items = catalogue_items(extra, seed=plan.seed)
    progress(f"encoding {extra:,} generated catalogue items (cached on disk once encoded)")
    with tqdm(total=extra, desc="catalogue", unit="item", mininterval=1.0,
              dynamic_ncols=True) as bar:  # fmt: skip
        done = 0

        def advance(now: int) -> None:
            nonlocal done
            bar.update(now - done)
            done = now

        return encode_items(items, encoder_cache, precision=settings.encoder_precision,
                            progress=advance)  # fmt: skip


def catalogue_load(
    workload: Workload,
    preload: Preload | None,
    pipeline: WorkerRun,
    settings: Settings,
    stages: Mapping[str, Any],
) -> dict[str, Any]:
    """What the pipeline ranks against, and how long loading it took (the result's ``catalogue``).

    ``stages`` is the pipeline's /livez stages once it is ready: its
    ``startup`` part (`streams.worker.run_worker`) has the catalogue it
    loaded from its store and the seconds of the index build. ``index_search_s``
    and ``index_used`` are filled in after the run.
    """
    generated = 0 if preload is None else len(preload.rows)
    items = len(workload.items) + generated
    timings = pipeline.timings
    load = {"encode_s": 0.0, "chunks_cached": 0, "chunks": 0}
    if preload is not None:
        load = {"encode_s": preload.encode_s, "chunks_cached": preload.chunks_cached,
                "chunks": preload.chunks}  # fmt: skip
    load |= {
        "topics_s": timings.get("topics_s", 0.0),
        "store_write_s": timings.get("store_write_s", 0.0),
        "worker_ready_s": timings["ready_s"],
    }
    load["total_s"] = round(load["encode_s"] + load["topics_s"] + load["store_write_s"]
                            + load["worker_ready_s"], 2)  # fmt: skip
    startup = stages.get("startup") or {}
    took = startup.get("seconds") or {}
    load["worker_catalogue_s"] = round(took.get("catalogue_sync", 0.0), 2)
    return {
        "items": items,
        "workload_items": len(workload.items),
        "generated_items": generated,
        "generator": None if preload is None else "streams.workload.catalogue_items",
        "ann_min_items": settings.ann_min_items,
        "index_expected": settings.ann_min_items > 0 and items > settings.ann_min_items,
        "index_built": None
        if "ann_build" not in took
        else {
            "items": startup.get("records", 0),
            "seconds": round(took["ann_build"], 2),
            "moments_s": round(took.get("moments", 0.0), 2),
        },
        "load": load,
    }


def catalogue_line(catalogue: Mapping[str, Any]) -> str:
    """One line on the catalogue and its load, for the progress output and the table."""
    load, built = catalogue["load"], catalogue["index_built"]
    parts = []
    if catalogue["generated_items"]:
        parts.append(
            f"encoded in {load['encode_s']:g} s ({load['chunks_cached']} of {load['chunks']} "
            f"chunks from the cache), topics {load['topics_s']:g} s, "
            f"store {load['store_write_s']:g} s"
        )
    parts.append(
        f"pipeline ready in {load['worker_ready_s']:g} s (its catalogue read from its store in "
        f"{load.get('worker_catalogue_s', 0.0):g} s"
        + (")" if built is None else f", index of {built['items']:,} items built in "
           f"{built['seconds']:g} s)")
    )  # fmt: skip
    return f"catalogue load {load['total_s']:g} s: " + ", ".join(parts)


def measure_half(
    pipe: Loaded, rate: float, plan: Plan, drain_timeout: float, tick: Callable[[], None]
) -> dict[str, Any]:
    """One run at ``rate`` (half the pipeline's max): latency, lag over time, stage shares."""
    before = pipe.stages()
    lag: list[dict[str, float]] = []
    step, _, pub = pipe.step(rate, plan.measure_seconds, drain_timeout=drain_timeout, lag=lag,
                             tick=tick)  # fmt: skip
    after = pipe.stages()
    return {
        "rate_per_s": round(rate, 1),
        "seconds": plan.measure_seconds,
        "sustainable": step.ok,
        "failed": step.failed,
        "events": step.sent,
        "offered_per_s": round(step.sent / step.producing_s, 1),
        # First send to the last offset committed: includes up to one commit interval.
        "committed_per_s": round(step.sent / (step.producing_s + (step.commit_s or 0.0)), 1),
        "commit_after_last_send_s": step.commit_s,
        "deltas": step.deltas,
        "latency_ms": step.latency_ms,
        "published_latency_ms": percentiles(pub),
        "lag_max": step.lag_max,
        "lag": lag,
        "stages": stage_shares(before, after, step.sent),
    }


DEFINITION = (
    "a step (one offered rate, open loop, fixed duration) is sustainable when the producer "
    "stayed within 0.25 s of its schedule with no failed send, the event-to-delta p99 is at "
    "most the p99 limit, the group committed the step's last offset within 2 s + the commit "
    "interval after the last send, and deltas came back; the ramp doubles from the start rate "
    "until a step fails, then bisects; the maximum is the highest rate that passed"
)


# -- output: table, plots ---------------------------------------------------------------------


def table(result: Mapping[str, Any]) -> str:
    """The figures a reader looks for first, as aligned text."""
    pt, pipe, half = result["passthrough"], result["pipeline"], result["half_max"]
    ratio = result["pipeline_over_passthrough"]
    rows = [
        ("broker / store", f"{result['broker']} / {result['store']}"),
        (
            "pass-through max",
            f"{pt['max_rate_per_s']:,.1f} events/s{' (ramp ceiling)' if pt['capped'] else ''}",
        ),
        ("pipeline max", f"{pipe['max_rate_per_s']:,.1f} events/s"),
        ("pipeline / pass-through", "n/a" if ratio is None else f"{ratio:.3f}x"),
        *_catalogue_rows(result.get("catalogue")),
    ]
    rows += _half_rows(half) if half else [("half max", "not measured: no sustainable step")]
    rows.append(("wall time", f"{result['wall_s']:g} s (workers started in "
                              f"{result['workers_started_s']:g} s)"))  # fmt: skip
    lines = [f"{name:26s} {value}" for name, value in rows]
    lines.append("")
    lines.append(f"{'steps':26s} {'rate/s':>9s} {'p50':>7s} {'p95':>7s} {'p99':>7s} "
                 f"{'commit s':>8s}  verdict")  # fmt: skip
    for kind in ("passthrough", "pipeline"):
        for s in result[kind]["steps"]:
            ms = s["latency_ms"]
            verdict = "ok" if s["ok"] else "; ".join(s["failed"])
            lines.append(f"  {kind:24s} {s['rate']:9,.1f} {_ms(ms['p50'])} {_ms(ms['p95'])} "
                         f"{_ms(ms['p99'])} {_num(s['commit_s'])}  {verdict}")  # fmt: skip
    return "\n".join(lines)


def _catalogue_rows(catalogue: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if catalogue is None:  # a result written before the catalogue was recorded
        return []
    size = f"{catalogue['items']:,} items"
    if catalogue["generated_items"]:
        size += f" ({catalogue['workload_items']:,} of the workload's, "
        size += f"{catalogue['generated_items']:,} generated)"
    if catalogue.get("index_used"):
        how = f"through the index (searched {catalogue['index_search_s']:g} s in all)"
    elif catalogue["index_expected"]:
        how = "exact: the index was expected but never searched"
    else:
        how = f"exact (at most ann_min_items {catalogue['ann_min_items']:,})"
    load = catalogue_line(catalogue).removeprefix("catalogue load ")
    return [("catalogue", size), ("catalogue ranking", how), ("catalogue load", load)]


def _half_rows(half: Mapping[str, Any]) -> list[tuple[str, str]]:
    lat, pub = half["latency_ms"], half["published_latency_ms"]
    rows = [
        ("half max: offered", f"{half['rate_per_s']:,.1f} events/s for {half['seconds']:g} s "
                              f"({'sustained' if half['sustainable'] else 'NOT sustained'})"),
        ("half max: throughput", f"{half['offered_per_s']:,.1f} events/s sent, "
                                 f"{half['committed_per_s']:,.1f} events/s to the last commit"),
        ("half max: latency", f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
                              f"max {lat['max']} ms"),
        ("half max: published", f"p50 {pub['p50']} ms, p99 {pub['p99']} ms (worker's part)"),
        ("half max: lag max", f"{half['lag_max']:,} events"),
    ]  # fmt: skip
    stages = half["stages"]
    shares = [
        f"{STAGE_LABELS.get(n, n)} {s['share']:.0%}"
        for n, s in stages.items()
        if "share" in s and s["share"] >= 0.005
    ]
    rows.append(("half max: stage shares", ", ".join(shares)))
    rows.append(("half max: queue wait", f"{stages['queue_wait']['ms_per_record']} ms per record"))
    gc = stages.get("gc_pause")
    if gc is not None:
        rows.append(("half max: gc pauses", f"{gc['seconds'] * 1000:.0f} ms in "
                                            f"{gc['collections']:,} collections"))  # fmt: skip
    return rows


def _ms(value: float | None) -> str:
    return f"{'-':>7s}" if value is None else f"{value:7.0f}"


def _num(value: float | None) -> str:
    return f"{'-':>8s}" if value is None else f"{value:8.2f}"


def plot_paths(out: Path) -> dict[str, Path]:
    return {name: out.with_name(f"{out.stem}-{name}.png") for name in ("latency", "lag", "stages")}


def plot(result: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The three PNGs beside ``out``: latency vs offered rate, lag at half max, stage shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = plot_paths(out)
    limit = result["limits"]["p99_ms"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"p50": ":", "p95": "--", "p99": "-"}
    for kind, color in (("passthrough", "tab:grey"), ("pipeline", "tab:blue")):
        steps = sorted(result[kind]["steps"], key=lambda s: s["rate"])
        for q, style in styles.items():
            pts = [(s["rate"], s["latency_ms"][q]) for s in steps if s["latency_ms"][q]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, color=color, marker=".",
                        label=f"{kind} {q}")  # fmt: skip
        failed = [(s["rate"], s["latency_ms"]["p99"] or limit) for s in steps if not s["ok"]]
        if failed:
            ax.scatter(*zip(*failed, strict=True), marker="x", color="red", zorder=3)
        ax.axvline(result[kind]["max_rate_per_s"], color=color, alpha=0.4, lw=4)
    ax.axhline(limit, color="red", linestyle=":", label=f"p99 limit {limit:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (events/s); x: step not sustainable; band: maximum")
    ax.set_ylabel("event-to-delta latency (ms)")
    ax.set_title(f"Latency against offered rate (pipeline/pass-through max "
                 f"{result['pipeline_over_passthrough']}x)")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(paths["latency"], dpi=110)
    plt.close(fig)

    half = result["half_max"]
    if half is None:  # no sustainable pipeline step: say so where the plots would be
        for name in ("lag", "stages"):
            fig, ax = plt.subplots(figsize=(8, 2.5))
            ax.text(0.5, 0.5, "not measured: no pipeline step was sustainable",
                    ha="center", va="center")  # fmt: skip
            ax.set_axis_off()
            fig.savefig(paths[name], dpi=110)
            plt.close(fig)
        return paths
    fig, ax = plt.subplots(figsize=(8, 3.5))
    lag = half["lag"]
    ax.plot([s["t_s"] for s in lag], [s["lag"] for s in lag], color="tab:orange")
    ax.axvline(half["seconds"], color="grey", linestyle=":", label="producer stops")
    ax.set_xlabel("seconds since the producer started")
    ax.set_ylabel("consumer lag (events)")
    ax.set_title(f"Pipeline lag at half its maximum ({half['rate_per_s']:,.0f} events/s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["lag"], dpi=110)
    plt.close(fig)

    stages = {n: s for n, s in half["stages"].items() if "share" in s}
    fig, ax = plt.subplots(figsize=(9, 3.8))
    names = [STAGE_LABELS.get(n, n) for n in stages]
    shares = [100 * s["share"] for s in stages.values()]
    bars = ax.bar(names, shares, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in shares], fontsize=7)
    ax.set_ylabel("share of the worker's measured time (%)")
    wait = half["stages"]["queue_wait"]["ms_per_record"]
    ax.set_title(
        f"Where the pipeline's time goes at {half['rate_per_s']:,.0f} events/s "
        f"(queue wait {wait} ms/record)"
    )
    ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    fig.savefig(paths["stages"], dpi=110)
    plt.close(fig)
    return paths


def finite(value: Any) -> Any:
    """JSON has no NaN: anything non-finite becomes null, through lists and dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
