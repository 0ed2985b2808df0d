"""The worker's per-event cost without a broker: the behaviour processor over a store.

    .venv/bin/python benchmarks/processor_cost.py [--store sqlite|HOST:PORT]
        [--users 400] [--events-per-user 50] [--batch 250] [--blas-threads 1] [--out PATH]

What a worker does for each micro-batch apart from Faust and the broker
(`streams.processor.BehaviourProcessor.process`: decode, state read, the
core, ranking, the delta summary, state write, serialisation), built as
the worker builds it (`streams.app.build_runtime`, default settings) over
the synthetic workload (`streams.workload.synthetic_workload`, seeded), in
batches of ``--batch`` events. The first batch warms caches and is not
timed. ``--store`` is the embedded SQLite store (a temporary file, as a
worker keeps it) or a Cassandra node (``HOST:PORT``; a fresh keyspace,
dropped afterwards). Prints milliseconds per event and the seconds per
stage, and the process's CPU seconds over the timed batches (``cpu_ms_per_event``:
above ``ms_per_event`` when threads work or spin beside the main one);
writes JSON and a bar chart of the stages beside it. ``--blas-threads`` caps
numpy's BLAS as the worker does (`Settings.blas_threads`, 0: the library's
default).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import uuid
from pathlib import Path

from models.encoder import OnnxEncoder, ensure_exported
from streams.app import build_runtime
from streams.processor import RawRecord
from streams.settings import Settings
from streams.stores import open_store
from streams.worker import limit_blas_threads
from streams.workload import synthetic_workload, to_json_bytes

from _results import RESULTS, save


def run(args: argparse.Namespace) -> dict:
    if args.store != "sqlite":
        host, _, port = args.store.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"--store: expected sqlite or HOST:PORT, got {args.store!r}")
    if args.blas_threads < 0:
        raise SystemExit("--blas-threads must be >= 0 (0: the BLAS library's default)")
    blas = limit_blas_threads(args.blas_threads)
    artifact = ensure_exported(Path(args.encoder_cache) if args.encoder_cache else None)
    encoder = OnnxEncoder(artifact, device="cpu")
    folder = tempfile.mkdtemp(prefix="processor-cost-")
    settings = Settings(data_dir=folder)
    if args.store != "sqlite":
        keyspace = f"cost_{uuid.uuid4().hex[:10]}"
        settings = settings.replace(
            store="cassandra",
            cassandra_contact_points=host,
            cassandra_port=int(port),
            cassandra_keyspace=keyspace,
        )
    try:
        store = open_store(settings)
    except Exception as exc:  # the driver's NoHostAvailable and kin: one line, and what to do
        raise SystemExit(
            f"--store {args.store}: the store did not answer ({type(exc).__name__}: {exc}); "
            "start one with `python -m deploy.engines cassandra start` or use --store sqlite"
        ) from None
    try:
        runtime = build_runtime(settings, store, encoder)
        topics = settings.topics
        work = synthetic_workload(users=args.users, events_per_user=args.events_per_user, seed=10)
        items = [
            RawRecord(topics.items, 0, n, i["item_id"].encode(), to_json_bytes(i))
            for n, i in enumerate(work.items)
        ]
        runtime.items.process(items)
        runtime.behaviours.warm()
        events = [
            RawRecord(topics.behaviours, 0, n, e["user_id"].encode(), to_json_bytes(e), 1000)
            for n, e in enumerate(work.events)
        ]
        batches = [events[s : s + args.batch] for s in range(0, len(events), args.batch)]
        runtime.behaviours.process(batches[0])  # warm-up, not timed
        stages: dict[str, float] = {}
        timed = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches[1:]:
            outcome = runtime.behaviours.process(batch)
            for name, seconds in outcome.stages.items():
                stages[name] = stages.get(name, 0.0) + seconds
            timed += len(batch)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    finally:
        if args.store != "sqlite":
            store.drop_keyspace()
        store.close()
    return {
        "store": args.store,
        "events_timed": timed,
        "batch": args.batch,
        "ms_per_event": round(1000 * elapsed / timed, 3),
        "cpu_ms_per_event": round(1000 * cpu / timed, 3),
        "blas_threads": {"setting": args.blas_threads, "threads": blas},
        "stage_ms_per_event": {k: round(1000 * v / timed, 3) for k, v in sorted(stages.items())},
        "workload": work.description,
        "machine": {"processor": platform.processor() or platform.machine()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite", help="sqlite or a Cassandra HOST:PORT")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--events-per-user", type=int, default=50)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--encoder-cache", default=None)
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=Settings().blas_threads,
        help="BLAS threads under numpy, as a worker's blas_threads (0: default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "processor_cost.json")
    args = parser.parse_args()
    result = run(args)
    print(f"{result['ms_per_event']:.2f} ms/event ({result['cpu_ms_per_event']:.2f} ms of CPU) "
          f"over {result['events_timed']} events ({result['store']}, batches of {args.batch}, "
          f"BLAS threads {result['blas_threads']['threads']})")  # fmt: skip
    for name, ms in result["stage_ms_per_event"].items():
        print(f"  {name:<16} {ms:.3f} ms/event")
    save(
        args.out,
        result,
        {"ms per event": result["stage_ms_per_event"]},
        ylabel="ms per event",
        title=f"behaviour processor per stage ({result['store']})",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
