"""The pipeline against a bare Faust pass-through, side by side, one run.

    .venv/bin/python benchmarks/pipeline_vs_passthrough.py [--events 10000] [--repeats 2]

Both are Faust workers on the same embedded broker with the same transport,
batching and commit settings. The pass-through consumes `behaviours` and
produces every record unchanged to an output topic; the pipeline decodes,
reads and writes states, runs the core and produces deltas. Each round
publishes the same events unpaced once the worker is ready and times from
the first produce to the last committed offset. Modes alternate. Writes
benchmarks/results/pipeline_vs_passthrough.json and a bar chart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaProducer

from streams.admin import ensure_topics, wait_committed
from streams.embedded_broker import EmbeddedBroker
from streams.loadtest import spawn_passthrough
from streams.ports import free_port
from streams.settings import Settings
from streams.tail import ends_of, publish
from streams.worker import spawn_worker, stop_worker
from streams.workload import synthetic_workload, to_json_bytes

from _results import RESULTS, save


def one_round(mode: str, bootstrap: str, workload, encoder_cache: str) -> float:
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"bench-{mode}-{run}",
        topic_prefix=f"{mode[:2]}{run}-",
        data_dir=tempfile.mkdtemp(prefix=f"bench-{mode}-"),
        encoder_cache=encoder_cache,
        health_host="127.0.0.1",
        health_port=free_port(),
    )
    topics = settings.topics
    ensure_topics(bootstrap, topics)
    log = Path(settings.data_dir) / "worker.log"
    if mode == "pipeline":
        worker = spawn_worker(settings, bootstrap, log)
    else:
        worker = spawn_passthrough(settings, bootstrap, log)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        # Not timed: the catalogue (pipeline) or one record (pass-through) to
        # know the worker has joined its group and is consuming.
        if mode == "pipeline":
            items = [(i["item_id"].encode(), to_json_bytes(i)) for i in workload.items]
            ready = (topics.items, publish(producer, topics.items, items))
        else:
            ready = (topics.behaviours, publish(producer, topics.behaviours, [(b"w", b"{}")]))
        wait_committed(bootstrap, settings.app_id, ready[0], ends_of(ready[1]), timeout=180,
                       alive=lambda: worker.poll() is None)  # fmt: skip
        records = [(e["user_id"].encode(), to_json_bytes(e)) for e in workload.events]
        start = time.perf_counter()
        positions = publish(producer, topics.behaviours, records)
        wait_committed(bootstrap, settings.app_id, topics.behaviours, ends_of(positions),
                       timeout=600, alive=lambda: worker.poll() is None)  # fmt: skip
        return len(records) / (time.perf_counter() - start)
    finally:
        producer.close()
        stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from models.encoder import ensure_exported

    encoder_cache = str(ensure_exported().parent)
    users = max(1, args.events // 50)
    workload = synthetic_workload(users=users, events_per_user=50, seed=1)
    rates: dict[str, list[float]] = {"passthrough": [], "pipeline": []}
    with EmbeddedBroker() as broker:
        for _ in range(args.repeats):
            for mode in rates:
                rate = one_round(mode, broker.bootstrap, workload, encoder_cache)
                rates[mode].append(round(rate, 1))
                print(f"{mode:12s} {rate:8.1f} events/s", flush=True)
    median = {mode: statistics.median(r) for mode, r in rates.items()}
    result = {
        "events": len(workload.events),
        "users": users,
        "broker": "embedded tansu",
        "events_per_second": rates,
        "median_events_per_second": median,
        "pipeline_over_passthrough": round(median["pipeline"] / median["passthrough"], 3),
    }
    save(
        RESULTS / "pipeline_vs_passthrough.json",
        result,
        {"median": median},
        ylabel="events / second (median)",
        title="Faust pass-through vs interest-stream, same broker",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
