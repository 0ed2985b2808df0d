"""Per-event cost of the interest structure against the single-vector core, same run.

The same seeded workload (users with two or three tastes over a clustered
catalogue) goes through `models.core.step` in micro-batches under each
configuration, interleaved round by round so that machine noise hits all
alike; the figure is the median over rounds of seconds per event, and the
ratio to ``single-vector`` (one interest, no long-term level, no topics:
the core before the interest structure).

Configurations: ``single-vector``; ``+interests`` (several interests);
``+long-term`` (and the long-term level); ``full`` (+ the online topic model
on the catalogue: user topic masses and topics in every delta summary).

Usage::

    python benchmarks/structure_cost.py [--items 2000] [--users 40] [--events 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.behaviour import Behaviour
from models.catalogue import Catalogue
from models.core import CoreParams, step
from models.interest.composition import CompositionSpec
from models.interest.levels import LevelSpec
from models.interest.topics import OnlineTopics

from _results import RESULTS, save

DIM = 384


def catalogue(n_items: int, clusters: int, rng: np.random.Generator) -> Catalogue:
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    cat = Catalogue(DIM)
    for i in range(n_items):
        c = i % clusters
        vec = centres[c] + 0.8 * rng.standard_normal(DIM).astype(np.float32)
        cat.upsert(f"i{i}", vec, (f"tag{c}",))
    return cat


def workload(
    users: int, events: int, n_items: int, clusters: int, rng: np.random.Generator
) -> list[list[Behaviour]]:
    out = []
    for u in range(users):
        tastes = rng.choice(clusters, size=int(rng.integers(2, 4)), replace=False)
        evs = []
        for n in range(events):
            c = int(rng.choice(tastes))
            item = int(rng.integers(n_items // clusters)) * clusters + c
            evs.append(Behaviour(f"u{u}", f"i{item}", "view", 1e9 + 600.0 * n, f"e{u}-{n}"))
        out.append(evs)
    return out


def configurations() -> dict[str, CoreParams]:
    single = CoreParams(
        composition=CompositionSpec(max_interests=1),
        levels=LevelSpec(long_weight=0.0, long_return_weight=0.0),
    )
    interests = replace(single, composition=CompositionSpec())
    return {
        "single-vector": single,
        "+interests": interests,
        "+long-term": replace(interests, levels=LevelSpec()),
        "full": replace(interests, levels=LevelSpec()),
    }


def per_event(
    streams: list[list[Behaviour]], cat: Catalogue, params: CoreParams, batch: int
) -> float:
    started, n = time.perf_counter(), 0
    for evs in streams:
        state = None
        for start in range(0, len(evs), batch):
            chunk = evs[start : start + batch]
            state = step(state, chunk, cat, chunk[-1].ts, params).state
            n += len(chunk)
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4, help="events per step call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "structure_cost.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    cat = catalogue(args.items, args.clusters, rng)
    topics = OnlineTopics(DIM, max_topics=args.clusters, seed=0)
    ids, rows, _ = cat.rows()
    for item_id, row in zip(ids, rows, strict=True):
        topics.observe(item_id, row, f"{cat.tags(item_id)[0]} item {item_id}")
    streams = workload(args.users, args.events, args.items, args.clusters, rng)
    configs = configurations()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, params in configs.items():
            cat.topics = topics if name == "full" else None
            times[name].append(per_event(streams, cat, params, args.batch))
    cat.topics = None
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["single-vector"]
    result = {
        "workload": {
            "catalogue_items": args.items,
            "clusters": args.clusters,
            "users": args.users,
            "events_per_user": args.events,
            "events_per_step": args.batch,
            "rounds": args.rounds,
        },
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "seconds_per_event": {
            name: {
                "median_s": medians[name],
                "rounds_s": times[name],
                "ratio": medians[name] / base,
            }
            for name in configs
        },
    }
    bars = {"ratio to single-vector": {n: medians[n] / base for n in configs}}
    save(args.out, result, bars, ylabel="cost per event (x single-vector)",
         title="interest structure: per-event cost of core.step")  # fmt: skip
    for name in configs:
        print(f"{name:<14} {medians[name] * 1e3:8.3f} ms/event  ratio {medians[name] / base:5.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
