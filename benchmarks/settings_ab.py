"""Worker settings side by side: fixed-rate steps, interleaved, on one embedded broker.

    .venv/bin/python benchmarks/settings_ab.py \\
        --variant base:batch_within_seconds=0.02 --variant new:batch_within_seconds=0.005 \\
        [--rate 40] [--seconds 10] [--rounds 3] [--out PATH]

`interest-stream bench` ramps one worker per mode; between two runs of it
the machine's load moves the figures more than a latency setting does
(this machine is shared). Here every ``--variant NAME:KEY=VALUE[,KEY=VALUE]``
(no pairs: the defaults) gets a pipeline worker of its own on the same
embedded broker, each warmed for 5 s, and the variants take turns: round
after round, each offers ``--rate`` events/s (open loop, the bench's
producer and delta reader, `streams.bench.Loaded`) for ``--seconds``. A
change in load hits every variant within the same round. Prints each step
and the pooled event-to-delta percentiles per variant and rate; writes
JSON and a bar chart of the pooled p50/p99 beside it. Each step also
records the worker's CPU per event (``/proc``: the step and its drain,
idle polling included), what a setting costs in CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.encoder.artifact import find_exported
from streams.bench import Limits, Loaded, parse_sets, percentiles
from streams.embedded_broker import broker_for
from streams.loadtest import WorkerRun, endless_records, load_workload
from streams.settings import SettingsError, load_settings

from _results import RESULTS, save


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE[,KEY=VALUE]`` (or ``NAME``) into its name and overrides.

    >>> parse_variant("new:batch_within_seconds=0.005,fetch_max_wait_ms=5")
    ('new', {'batch_within_seconds': '0.005', 'fetch_max_wait_ms': '5'})
    >>> parse_variant("defaults")
    ('defaults', {})
    """
    name, _, pairs = text.partition(":")
    if not name:
        raise ValueError(f"--variant {text!r}: expected NAME[:KEY=VALUE,...]")
    try:
        return name, parse_sets([p for p in pairs.split(",") if p]) if pairs else {}
    except ValueError as exc:  # parse_sets speaks of --set: name the variant instead
        raise ValueError(f"--variant {name}: {str(exc).removeprefix('--set ')}") from None


def run(args: argparse.Namespace) -> dict:
    variants = dict(parse_variant(v) for v in args.variant)
    if len(variants) != len(args.variant):
        raise SystemExit("--variant: each needs a name of its own")
    bases = {}
    for name, sets in variants.items():
        try:
            bases[name] = load_settings(**sets)  # defaults < environment < the variant's
        except SettingsError as exc:
            raise SystemExit(f"--variant {name}: {exc}") from None
    found = find_exported(Path(args.encoder_cache) if args.encoder_cache else None)
    if found is None:
        raise SystemExit(
            "no exported encoder: run `interest-stream demo` or `bash deploy/setup.sh`"
        )
    workload = load_workload(args.seed)
    latencies: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    steps: list[dict] = []
    load_start = os.getloadavg()[0]
    with broker_for(None) as bootstrap:
        loaded: dict[str, Loaded] = {}
        try:
            # The workers start side by side (a start is mostly waiting: encoder
            # load, group join), as `interest-stream bench` starts its two.
            with ThreadPoolExecutor(max_workers=len(bases)) as pool:
                started = {
                    name: pool.submit(WorkerRun.start, bootstrap, name[:4], workload,
                                      str(found.parent), base=base, name="ab")
                    for name, base in bases.items()
                }  # fmt: skip
                workers = {name: future.exception() or future.result()
                           for name, future in started.items()}  # fmt: skip
            failed = [w for w in workers.values() if isinstance(w, BaseException)]
            for name, worker in workers.items():
                if isinstance(worker, BaseException):
                    continue
                base = bases[name]
                limits = Limits(p99_ms=float("inf"), commit_interval_s=base.commit_interval_seconds)
                loaded[name] = Loaded(worker, endless_records(workload), limits)
            if failed:
                raise failed[0]
            for one in loaded.values():  # warm: first batches load caches
                one.step(args.rate, args.warm_seconds, drain_timeout=30.0)
            for r in range(args.rounds):
                for name, one in loaded.items():
                    cpu0 = one.probe.cpu_s()
                    step, lat, _ = one.step(args.rate, args.seconds, drain_timeout=30.0)
                    # The worker's CPU over the step and its drain, idle polling included.
                    cpu_ms = 1000 * (one.probe.cpu_s() - cpu0) / max(step.sent, 1)
                    latencies[name].append(lat)
                    steps.append({"round": r, "variant": name, "latency_ms": step.latency_ms,
                                  "lag_max": step.lag_max, "sent": step.sent,
                                  "worker_cpu_ms_per_event": round(cpu_ms, 2)})  # fmt: skip
                    p = step.latency_ms
                    print(f"round {r} {name:<12} {args.rate:g}/s  p50 {p['p50']}  "
                          f"p99 {p['p99']}  max {p['max']} ms  lag max {step.lag_max}  "
                          f"worker CPU {cpu_ms:.1f} ms/event", flush=True)  # fmt: skip
        finally:
            for one in loaded.values():
                one.close()
    pooled = {name: percentiles(np.concatenate(v)) for name, v in latencies.items()}
    return {
        "benchmark": "benchmarks/settings_ab.py",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "variants": variants,
        "pooled_latency_ms": pooled,
        "steps": steps,
        "machine": {
            "cpus": os.cpu_count(),
            "load_1m_start": round(load_start, 2),
            "load_1m_end": round(os.getloadavg()[0], 2),
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME[:KEY=VALUE,...]; repeat to compare")  # fmt: skip
    parser.add_argument("--rate", type=float, default=40.0, help="events/s offered (40)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per step (10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-seconds", type=float, default=5.0,
                        help="an untimed step per worker first (5)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--encoder-cache", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "settings_ab.json")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.warm_seconds <= 0 or args.rounds < 1:
        parser.error("--rate, --seconds and --warm-seconds must be > 0, --rounds >= 1")
    try:
        result = run(args)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for name, p in result["pooled_latency_ms"].items():
        print(f"{name:<12} pooled: p50 {p['p50']}  p95 {p['p95']}  p99 {p['p99']}  "
              f"max {p['max']} ms")  # fmt: skip
    bars = {
        q: {name: p[q] or 0.0 for name, p in result["pooled_latency_ms"].items()}
        for q in ("p50", "p99")
    }
    save(args.out, result, bars, ylabel="event-to-delta latency (ms)",
         title=f"settings side by side at {args.rate:g} events/s")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
