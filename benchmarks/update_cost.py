"""Per-event update cost: the learned GRU cell vs the time-decayed rule, same run.

Three measurements, each for both updaters on the same seeded workload:

* ``core_step``: `models.core.step` over micro-batches of one user's events
  (apply + window + ranking), seconds per event;
* ``apply``: the updater's own per-event call as the core makes it
  (``represent`` + ``apply`` for the learned cell), seconds per event;
* ``batched``: one event for each of many users at once, as a vectorised
  step ([users, H] GRU step vs [users, 384] decay-and-add), seconds per event.

Usage::

    python benchmarks/update_cost.py [--artifact DIR] [--out benchmarks/results/update_cost.json]

Without ``--artifact`` a random-weight artefact of the default size (item and
hidden width 100) is used: the cost does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from models.behaviour import Behaviour, event_weight
from models.catalogue import Catalogue
from models.core import CoreParams, step
from models.learned import LearnedUpdater, gap_features, load_artifact, save_artifact
from models.learned.artifact import N_GAP, WEIGHT_NAMES
from models.update import TimeDecayUpdater

from _results import RESULTS, save

TEXT_DIM = 384


def random_artifact(folder: Path, n_items: int, item_dim: int = 100, hidden: int = 100) -> Path:
    rng = np.random.default_rng(0)
    shapes = {
        "text_w": (TEXT_DIM, item_dim),
        "text_b": (item_dim,),
        "text_bias_w": (TEXT_DIM,),
        "id_emb": (n_items, item_dim),
        "id_bias": (n_items,),
        "w_ih": (3 * hidden, item_dim + 2 + N_GAP),
        "w_hh": (3 * hidden, hidden),
        "b_ih": (3 * hidden,),
        "b_hh": (3 * hidden,),
        "out_w": (item_dim, hidden),
        "out_b": (item_dim,),
    }
    weights = {n: (0.1 * rng.standard_normal(shapes[n])).astype(np.float32) for n in WEIGHT_NAMES}
    save_artifact(folder, weights, [f"m{i}" for i in range(n_items)])
    return folder


def _catalogue(n_items: int) -> Catalogue:
    rng = np.random.default_rng(1)
    cat = Catalogue(TEXT_DIM)
    for i in range(n_items):
        cat.upsert(f"m{i}", rng.standard_normal(TEXT_DIM))
    return cat


def _events(n_users: int, per_user: int, n_items: int) -> list[list[Behaviour]]:
    rng = np.random.default_rng(2)
    out = []
    for u in range(n_users):
        ts = 1e9 + np.cumsum(rng.exponential(3600.0, size=per_user))
        items = rng.integers(0, n_items, size=per_user)
        out.append(
            [
                Behaviour(f"u{u}", f"m{i}", "rating", float(t), f"e{u}-{k}", rating=4.0)
                for k, (i, t) in enumerate(zip(items, ts, strict=True))
            ]
        )
    return out


def core_step_cost(updater, cat: Catalogue, users: list[list[Behaviour]], batch: int) -> float:
    params = CoreParams(updater=updater)
    n = 0
    start = time.perf_counter()
    for events in users:
        state = None
        for pos in range(0, len(events), batch):
            state = step(state, events[pos : pos + batch], cat, now=0.0, params=params).state
        n += len(events)
    return (time.perf_counter() - start) / n


def apply_cost(updater, cat: Catalogue, users: list[list[Behaviour]]) -> float:
    learned = isinstance(updater, LearnedUpdater)
    n = 0
    start = time.perf_counter()
    for events in users:
        hidden, hidden_ts = updater.initial(TEXT_DIM), None
        for e in events:
            vec = cat.vector(e.item_id)
            if learned:
                vec = updater.represent(e.item_id, vec)
            hidden, hidden_ts = updater.apply(hidden, hidden_ts, vec, event_weight(e), e.ts)
        n += len(events)
    return (time.perf_counter() - start) / n


def batched_cost(learned: LearnedUpdater, n_users: int, steps: int, half_life: float) -> tuple:
    rng = np.random.default_rng(3)
    cell = learned.cell
    reps = rng.standard_normal((steps, n_users, cell.item_dim + 1)).astype(np.float32)
    texts = rng.standard_normal((steps, n_users, TEXT_DIM)).astype(np.float32)
    weights = np.ones(n_users, dtype=np.float32)
    gap = np.tile(gap_features(0.0, 3600.0), (n_users, 1))
    h = cell.initial(n_users)
    start = time.perf_counter()
    for t in range(steps):
        h = cell.step(h, reps[t], weights, gap)
    gru = (time.perf_counter() - start) / (steps * n_users)
    d = np.zeros((n_users, TEXT_DIM), dtype=np.float32)
    decay = np.full((n_users, 1), 2.0 ** (-3600.0 / half_life), dtype=np.float32)
    start = time.perf_counter()
    for t in range(steps):
        d = d * decay + weights[:, None] * texts[t]
    rule = (time.perf_counter() - start) / (steps * n_users)
    return gru, rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="An exported learned updater folder.")
    parser.add_argument("--out", type=Path, default=RESULTS / "update_cost.json")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--events", type=int, default=100, help="Events per user.")
    parser.add_argument("--batch", type=int, default=20, help="Events per core micro-batch.")
    parser.add_argument("--items", type=int, default=1682)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifact or random_artifact(Path(tmp) / "model", args.items)
        learned = LearnedUpdater(load_artifact(folder))
    rule = TimeDecayUpdater()
    cat = _catalogue(args.items)
    users = _events(args.users, args.events, args.items)
    # warm-up, then alternate the two updaters so that machine noise hits both
    core_step_cost(rule, cat, users[:2], args.batch)
    core_step_cost(learned, cat, users[:2], args.batch)
    results: dict[str, dict[str, float]] = {}
    for name, fn in (
        ("core_step", lambda u: core_step_cost(u, cat, users, args.batch)),
        ("apply", lambda u: apply_cost(u, cat, users)),
    ):
        rule_s = min(fn(rule) for _ in range(3))
        learned_s = min(fn(learned) for _ in range(3))
        ratio = learned_s / rule_s
        results[name] = {"time_decay_s": rule_s, "learned_s": learned_s, "ratio": ratio}
    gru_s, rule_s = min(batched_cost(learned, 1024, 50, rule.half_life_s) for _ in range(3))
    results["batched"] = {"time_decay_s": rule_s, "learned_s": gru_s, "ratio": gru_s / rule_s}
    report = {
        "workload": {
            "users": args.users,
            "events_per_user": args.events,
            "core_batch": args.batch,
            "catalogue_items": args.items,
            "batched_users": 1024,
        },
        "learned": {
            "name": learned.name,
            "hidden_dim": learned.cell.hidden_dim,
            "item_dim": learned.cell.item_dim,
        },
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "seconds_per_event": results,
    }
    save(
        args.out,
        report,
        {
            updater: {name: r[f"{key}_s"] * 1e6 for name, r in results.items()}
            for updater, key in (("time-decay", "time_decay"), ("learned", "learned"))
        },
        ylabel="microseconds / event (log)",
        title="Per-event update cost, same run",
        log_scale=True,
    )
    for name, r in results.items():
        print(
            f"{name:10s} time-decay {r['time_decay_s'] * 1e6:8.2f} us/event   "
            f"learned {r['learned_s'] * 1e6:8.2f} us/event   ratio {r['ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
