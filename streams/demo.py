"""`interest-stream demo`: the whole pipeline on one machine, end to end.

Starts (or attaches to) a broker, creates the topics, exports the encoder
if needed, starts a worker process, publishes a catalogue, replays a
behaviour stream with a few bad records mixed in, follows the deltas and
dead letters, and prints a summary. Everything it started is stopped.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer
from tqdm import tqdm

from models.encoder import ensure_exported
from streams.admin import (
    BrokerError,
    CommitWatch,
    delete_topics,
    ensure_topics,
    wait_committed,
)
from streams.embedded_broker import broker_for
from streams.ports import free_port
from streams.security import kafka_security
from streams.settings import Settings
from streams.tail import TopicTail, ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import spawn_worker, stop_worker
from streams.workload import Workload, bad_behaviour_records, to_json_bytes


class DemoError(RuntimeError):
    pass


@dataclass
class Seen:
    """What the demo saw on the output topics."""

    deltas: list[tuple[float, dict]] = field(default_factory=list)  # (received at, value)
    dead_letters: list[dict] = field(default_factory=list)


def run_demo(
    settings: Settings,
    workload: Workload,
    *,
    rate: float,
    bad_records: bool = True,
    timeout: float = 600.0,
    show_user: str | None = None,
) -> dict:
    """Run the pipeline over ``workload``; returns the summary (also printed)."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ensure_exported(Path(settings.encoder_cache) if settings.encoder_cache else None)
    print(f"encoder ready ({time.monotonic() - t0:.1f}s); data dir {data_dir}", flush=True)
    records = _behaviour_records(workload, bad_records)

    with broker_for(settings.bootstrap_servers, log_dir=data_dir) as bootstrap:
        topics = settings.topics
        security = kafka_security(settings) if settings.bootstrap_servers else {}
        ensure_topics(bootstrap, topics, **security)
        # A free health port: a worker already running here may hold the default one.
        health_port = free_port() if settings.health_port else 0
        worker_settings = settings.replace(health_port=health_port)
        worker = spawn_worker(worker_settings, bootstrap, data_dir / "worker.log")
        outputs = {topics.deltas: settings.partitions, topics.dead_letters: 1}
        producer = KafkaProducer(
            **security, bootstrap_servers=bootstrap, linger_ms=5, max_request_size=MAX_MESSAGE_BYTES
        )
        interrupted = False
        try:
            with TopicTail(bootstrap, outputs, **security) as tail:
                items = [(i["item_id"].encode(), to_json_bytes(i)) for i in workload.items]
                item_ends = ends_of(publish(producer, topics.items, items))
                print(f"published {len(items)} items; waiting for the worker", flush=True)
                watch = _Watch(bootstrap, settings.app_id, worker, timeout, security)
                watch.until_committed(topics.items, item_ends)
                started = time.time()
                stop = threading.Event()
                with ThreadPoolExecutor(1) as pool:
                    publishing = pool.submit(
                        publish, producer, topics.behaviours, records, rate=rate, stop=stop
                    )
                    try:
                        watch.progress(topics.behaviours, len(records), publishing)
                    finally:  # Ctrl-C: stop publishing now, not after the whole paced stream
                        stop.set()
                elapsed = time.time() - started
                cold_start = _cold_start(worker_settings, bootstrap, workload, security)
                time.sleep(1.0)  # deltas are on the broker before commits: let the tail read them
                seen = _seen(tail, topics.deltas)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            producer.close(timeout=10)
            # Ctrl-C: the user wants out, and this run's data is removed anyway, so
            # the worker gets a short grace to commit and leave, then SIGKILL (a
            # worker still joining its group can sit on SIGTERM for the full 30 s).
            stop_worker(worker, timeout=3.0 if interrupted else 30.0)
            topics_learned = [] if interrupted else _learned_topics(settings)
            _remove_run_data(settings, bootstrap, security)

    n_bad = len(records) - len(workload.events)
    summary = _summary(workload, seen, len(records), n_bad, elapsed, rate, show_user)
    summary["updater"] = settings.updater
    summary["topics"] = topics_learned
    summary["cold_start"] = cold_start
    _print_summary(summary)
    return summary


def cold_start_query(workload: Workload) -> str:
    """A query a newcomer might type: the two most common tags, and not a third one."""
    counts = Counter(tag for item in workload.items for tag in item.get("tags", [])[:1])
    tags = [t.lower() for t, _ in counts.most_common()]
    if len(tags) < 3:
        return " and ".join(tags) or "something new"
    return f"{tags[0]} and {tags[1]}, nothing {tags[-1]}"


def _cold_start(
    settings: Settings, bootstrap: str, workload: Workload, security: dict[str, object]
) -> dict:
    """A user with no history starts from a natural-language query (`send_query`)."""
    from streams.snapshot import send_query

    text = cold_start_query(workload)
    titles = {i["item_id"]: i["title"] for i in workload.items}
    tags = {i["item_id"]: ", ".join(i.get("tags", [])[:2]) for i in workload.items}
    try:
        delta = send_query(settings, bootstrap, "demo-newcomer", text, timeout=60, **security)
    except (TimeoutError, ValueError) as exc:
        return {"query": text, "error": str(exc)}
    return {
        "user": "demo-newcomer",
        "query": text,
        "phrases": delta["interest"].get("query", {}).get("phrases", []),
        "top": [
            {
                "item_id": x["item_id"],
                "title": titles.get(x["item_id"], "?"),
                "tags": tags.get(x["item_id"], ""),
            }
            for x in delta["top_k"]
        ],
    }


def _learned_topics(settings: Settings) -> list[dict]:
    """The topic model the worker learned online, read back from the store."""
    from models.interest.topics import OnlineTopics
    from streams.shared_topics import BLOB
    from streams.stores import open_store

    if not settings.topics_enabled:
        return []
    store = open_store(settings)
    try:
        blob = store.get_blob(BLOB)
    finally:
        store.close()
    if blob is None:
        return []
    model = OnlineTopics.from_bytes(blob.data)
    labels = [model.label(t) for t in model.topics()]
    return [
        {"id": lab.topic_id, "size": lab.size, "terms": list(lab.terms[:5]),
         "titles": list(lab.titles[:2])}
        for lab in sorted(labels, key=lambda lab: -lab.size)
    ]  # fmt: skip


def _remove_run_data(settings: Settings, bootstrap: str, security: dict[str, object]) -> None:
    """On shared engines, drop this run's own topics and keyspace (see `cli.demo`)."""
    if settings.bootstrap_servers and settings.topic_prefix.startswith("demo-"):
        deleted = delete_topics(bootstrap, settings.topics, **security)
        print(f"removed this run's topics ({len(deleted)})", flush=True)
    if settings.store == "cassandra" and settings.cassandra_keyspace.startswith(
        "interest_stream_demo_"
    ):
        from streams.stores.cassandra import CassandraStore

        store = CassandraStore.from_settings(settings)
        try:
            store.drop_keyspace()
        finally:
            store.close()
        print(f"removed this run's keyspace {settings.cassandra_keyspace}", flush=True)


def _behaviour_records(workload: Workload, bad_records: bool) -> list[tuple[bytes, bytes]]:
    """The replay: the workload's events, with the known-bad records spread through."""
    records = [(e["user_id"].encode(), to_json_bytes(e)) for e in workload.events]
    if bad_records:
        bad = [(key or b"", value) for _, key, value, _ in bad_behaviour_records()]
        step = max(1, len(records) // (len(bad) + 1))
        for i, rec in enumerate(bad):
            records.insert((i + 1) * step + i, rec)
    return records


def _seen(tail: TopicTail, deltas_topic: str) -> Seen:
    seen = Seen()
    for rec in tail.records():
        value = json.loads(rec.value or b"null")
        if rec.topic == deltas_topic:
            seen.deltas.append((rec.at, value))
        else:
            seen.dead_letters.append(value)
    return seen


@dataclass
class _Watch:
    """Follows the worker's committed offsets (its progress) on the broker."""

    bootstrap: str
    group: str
    worker: subprocess.Popen
    timeout: float
    security: dict[str, object]

    def until_committed(self, topic: str, ends: dict[int, int]) -> None:
        try:
            wait_committed(
                self.bootstrap, self.group, topic, ends, timeout=self.timeout,
                alive=lambda: self.worker.poll() is None, **self.security,
            )  # fmt: skip
        except BrokerError as exc:
            raise DemoError(f"{exc}; see worker.log") from exc

    def progress(self, topic: str, total: int, publishing: Future) -> None:
        """A progress bar of committed records while the replay is still producing."""
        deadline = time.monotonic() + self.timeout
        watch = CommitWatch(self.bootstrap, self.group, **self.security)
        with watch, tqdm(total=total, desc="processed", unit="ev") as bar:
            while time.monotonic() < deadline:
                offsets = watch.offsets(topic)
                bar.update(sum(offsets.values()) - bar.n)
                if publishing.done():
                    ends = ends_of(publishing.result())
                    if all(offsets.get(p, 0) >= end for p, end in ends.items()):
                        return
                if self.worker.poll() is not None:
                    raise DemoError(f"worker exited with {self.worker.returncode}; see worker.log")
                time.sleep(0.2)
        raise DemoError(f"timed out after {self.timeout}s waiting for the worker")


def _summary(
    workload: Workload,
    seen: Seen,
    records: int,
    bad: int,
    elapsed: float,
    rate: float,
    show_user: str | None,
) -> dict:
    latencies = sorted(
        (at * 1000 - d["cause"]["source_ts_ms"])
        for at, d in seen.deltas
        if d["cause"]["source_ts_ms"] is not None and d["cause"]["kind"] != "replay"
    )
    reasons = Counter(d["reason"] for d in seen.dead_letters)
    user = show_user or (workload.drifts[0].user_id if workload.drifts else None)
    if user is None and seen.deltas:
        user = Counter(d["user_id"] for _, d in seen.deltas).most_common(1)[0][0]
    return {
        "workload": workload.description,
        "records_published": records,
        "bad_records_published": bad,
        "events_processed": records - sum(reasons.values()),
        "deltas_published": len(seen.deltas),
        "dead_letters": len(seen.dead_letters),
        "dead_letter_reasons": dict(sorted(reasons.items())),
        "replay_rate_per_s": rate or None,
        "elapsed_s": round(elapsed, 2),
        "throughput_events_per_s": round(records / elapsed, 1) if elapsed else None,
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p99": _percentile(latencies, 99),
        "example_user": user,
        "example_drift": next(
            (
                {"event_index": d.event_index, "ts": d.ts, "from": d.from_tag, "to": d.to_tag}
                for d in workload.drifts
                if d.user_id == user
            ),
            None,
        ),
        "example_evolution": _evolution(seen, user),
        "shifts": _shifts(workload, seen),
    }


#: A flag within this many of the user's events after a known drift detects it.
SHIFT_TOLERANCE = 30


def _shifts(workload: Workload, seen: Seen) -> dict:
    """The shift flags on the deltas against the workload's known drifts (if any)."""
    index = {}
    per_user: Counter[str] = Counter()
    for event in workload.events:
        index[event["event_id"]] = per_user[event["user_id"]]
        per_user[event["user_id"]] += 1
    flags: dict[str, list[int]] = {}
    example = None
    for _, d in seen.deltas:
        flag = d["interest"].get("shift")
        if flag is None or flag["event_id"] not in index:
            continue
        flags.setdefault(d["user_id"], []).append(index[flag["event_id"]])
        example = example or {"user_id": d["user_id"], **flag}
    delays = []
    matched: set[tuple[str, int]] = set()
    for drift in workload.drifts:
        hits = [
            at for at in flags.get(drift.user_id, [])
            if drift.event_index <= at < drift.event_index + SHIFT_TOLERANCE
        ]  # fmt: skip
        if hits:
            delays.append(hits[0] - drift.event_index)
            matched.add((drift.user_id, hits[0]))
    total = sum(len(v) for v in flags.values())
    return {
        "flags": total,
        "known_drifts": len(workload.drifts),
        "detected": len(delays),
        "median_delay_events": sorted(delays)[len(delays) // 2] if delays else None,
        "other_flags": total - len(matched),
        "example": example,
    }


def _evolution(seen: Seen, user: str | None) -> list[dict]:
    rows = sorted((d for _, d in seen.deltas if d["user_id"] == user), key=lambda d: d["version"])
    return [
        {
            "version": d["version"],
            "events": d["interest"]["events"],
            "event_time": d["cause"]["last_event_ts"],
            "mid_term": d["interest"]["mid_term"],
            "short_term": d["interest"]["short_term"],
            "topics": d["interest"].get("topics", []),
            "levels": {
                name: {
                    "weight": level["weight"],
                    "topic": (level.get("topics") or [{}])[0].get("label"),
                }
                for name, level in d["interest"].get("levels", {}).items()
            },
            "interests": len(d["interest"].get("interests", [])),
            "top3": [x["item_id"] for x in d["top_k"][:3]],
        }
        for d in rows
    ]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    idx = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return round(values[idx], 1)


def _print_summary(s: dict) -> None:
    print()
    print(f"workload            {s['workload']}")
    print(f"updater             {s['updater']}")
    print(f"records published   {s['records_published']} ({s['bad_records_published']} bad)")
    print(f"events processed    {s['events_processed']}")
    print(f"deltas published    {s['deltas_published']}")
    print(f"dead letters        {s['dead_letters']}  {s['dead_letter_reasons']}")
    pace = f"paced at {s['replay_rate_per_s']:g}/s" if s["replay_rate_per_s"] else "unpaced"
    print(f"throughput          {s['throughput_events_per_s']} events/s ({pace})")
    print(f"event-to-delta      p50 {s['latency_ms_p50']} ms, p99 {s['latency_ms_p99']} ms")
    drift = s["example_drift"]
    title = f"interest of {s['example_user']}"
    if drift:
        when = _fmt_ts(drift["ts"])
        title += f" (known shift {drift['from']} -> {drift['to']}"
        title += f" at event {drift['event_index']}, {when})"
    print(title)
    rows = s["example_evolution"]
    stride = max(1, len(rows) // 12)
    for row in rows[::stride] + ([rows[-1]] if rows and (len(rows) - 1) % stride else []):
        tags = ", ".join(f"{t} {w:.2f}" for t, w in row["mid_term"])
        short = ", ".join(f"{t} {w:.2f}" for t, w in row["short_term"][:2])
        print(
            f"  v{row['version']:<4} after {row['events']:>3} events  {_fmt_ts(row['event_time'])}"
            f"  mid-term: {tags:<40} short-term: {short}"
        )
        if row.get("levels"):
            levels = "  ".join(
                f"{name} {lv['weight']:.2f} [{lv['topic'] or '-'}]"
                for name, lv in row["levels"].items()
            )
            mine = ", ".join(
                f"#{t['id']} {t['share']:.2f}{t['change']:+.2f}" for t in row["topics"]
            )
            print(f"        levels: {levels}   topics: {mine}   interests: {row['interests']}")
    shifts = s.get("shifts")
    if shifts:
        line = f"shift flags         {shifts['flags']}"
        if shifts["known_drifts"]:
            line += (
                f"; {shifts['detected']} of {shifts['known_drifts']} known shifts detected"
                f" (median delay {shifts['median_delay_events']} events),"
                f" {shifts['other_flags']} other flags"
            )
        print(line)
        ex = shifts.get("example")
        if ex:
            before = ", ".join(t for t, _ in ex["before"]["tags"][:2])
            after = ", ".join(t for t, _ in ex["after"]["tags"][:2])
            print(f"  e.g. {ex['user_id']} at {_fmt_ts(ex['ts'])}: {before} -> {after}")
    if s.get("topics"):
        print(f"topics learned online ({len(s['topics'])})")
        for t in s["topics"][:12]:
            titles = "; ".join(t["titles"])
            print(f"  #{t['id']:<3} {t['size']:>4} items  {', '.join(t['terms']):<45} {titles}")
    cold = s.get("cold_start")
    if cold:
        print(f"cold start: {cold.get('user', 'newcomer')} asks {cold['query']!r}")
        if "error" in cold:
            print(f"  no answer: {cold['error']}")
        for p in cold.get("phrases", []):
            print(f"  phrase {p['polarity']:<8} weight {p['weight']:.2f}  {p['text']!r}")
        for n, x in enumerate(cold.get("top", []), 1):
            print(f"  {n:>2}. [{x['tags']}] {x['title']}")


def _fmt_ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
