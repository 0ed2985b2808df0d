"""Next interest: the predicted topics of a user's next events against what they did next.

    .venv/bin/python benchmarks/next_interest.py [--quick] [--users N] [--data DIR]
        [--encoder-cache DIR] [--out benchmarks/results/next_interest.json]

MovieLens-100K's movies are embedded by the ONNX encoder (cached) and
`models.interest.topics.OnlineTopics` learns topics from them, as the items
agent does (as many topics as genres). Each user's ratings then go through
`models.core.step` one event at a time, in time order, with the workers'
default `models.core.CoreParams` (the time-decayed updater). Before each
event from the ``--warmup``-th (5) on, every predictor names the topics it
expects next; the truth is the topic of the item the user rated next
(`OnlineTopics.topic_of`).

Predictors:

- ``next`` (what the delta's ``interest.next`` carries, `models.core.next_topics`):
  the topics of the user's current top-k list, each item weighted by its
  rank (``1 / log2(rank + 2)``), blended with the user's topic mix;
- ``next@S`` for each ``--sweep`` share S: the same with ``list_share = S``
  (how the default was chosen; ``next@1`` is the list alone);
- ``persistence-mix`` (next = current): the user's topic distribution
  (``UserState.topics``, decayed per event);
- ``persistence-last``: the topic of the user's latest item;
- ``popular``: the topics of the most-rated items so far (all users, causal).

Measures: ``acc@1`` (the first predicted topic is the next item's), ``hit@3``
(it is among the first three), and the mean probability given to the true
topic (``p_true``). Paired bootstrap intervals over users for the ratio of
``next`` to ``persistence-mix``. Writes JSON and a bar chart beside it.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

# One BLAS thread: the products are small (a 1,682-row catalogue), and on a
# shared machine a multi-threaded BLAS makes them many times slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from models.behaviour import Behaviour
from models.catalogue import Catalogue
from models.core import NEXT_LIST_SHARE, CoreParams, next_topics, step
from models.interest.topics import OnlineTopics, shares

from _results import RESULTS, save

PREDICTORS = ("next", "persistence-mix", "persistence-last", "popular")


def build(data: Path, encoder_cache: Path | None, seed: int):
    from models.datasets import item_texts, load_movielens
    from models.evaluation.baselines import encode_catalogue

    log = load_movielens(data)
    vectors = encode_catalogue(log, encoder_cache)
    texts = item_texts(log)
    n_genres = len({g for gs in log.genres for g in gs})
    topics = OnlineTopics(vectors.shape[1], max_topics=n_genres, seed=seed)
    cat = Catalogue(vectors.shape[1])
    for i, item_id in enumerate(log.item_ids):
        topics.observe(item_id, vectors[i], texts[i])
        cat.upsert(item_id, vectors[i], log.genres[i])
    cat.topics = topics
    return log, cat, topics


def _ranked(dist: list[tuple[int, float]]) -> list[int]:
    return [t for t, _ in dist]


def replay(
    log,
    cat: Catalogue,
    topics: OnlineTopics,
    users: list[int],
    warmup: int,
    list_share: float,
    sweep: tuple[float, ...],
) -> dict:
    params = CoreParams()
    n_topics = len(topics.topics())
    topic_of = {item_id: topics.topic_of(item_id) for item_id in log.item_ids}
    seqs = log.sequences()
    stamps = log.sequence_ts()
    ratings = log.sequence_ratings()
    # Causal popularity: all users' events in time order, counted as the clock passes.
    order = sorted(
        ((float(t), u, j) for u in users for j, t in enumerate(stamps[u])), key=lambda x: x[0]
    )
    per_user: dict[int, dict[str, list[tuple[bool, bool, float]]]] = {
        u: {p: [] for p in (*PREDICTORS, *(f"next@{x:g}" for x in sweep))} for u in users
    }
    states: dict[int, object] = dict.fromkeys(users)
    popular: Counter[int] = Counter()
    spent = 0.0
    for ts, u, j in order:
        item = log.item_ids[seqs[u][j]]
        truth = topic_of[item]
        state = states[u]
        if j >= warmup and truth is not None and state is not None:
            total = sum(popular.values()) or 1
            preds = {
                "next": next_topics(state, cat, n=n_topics, list_share=list_share),
                **{f"next@{x:g}": next_topics(state, cat, n=n_topics, list_share=x) for x in sweep},
                "persistence-mix": shares(state.topics, n=len(state.topics)),
                "persistence-last": [(topic_of[state.window[-1].item_id], 1.0)]
                if state.window
                else [],
                "popular": [(t, c / total) for t, c in popular.most_common()],
            }
            for name, dist in preds.items():
                ranked = _ranked(dist)
                p = dict(dist).get(truth, 0.0)
                per_user[u][name].append((ranked[:1] == [truth], truth in ranked[:3], p))
        event = Behaviour(
            log.user_ids[u], item, "rating", ts, f"{u}:{j}", rating=float(ratings[u][j])
        )
        t0 = time.perf_counter()
        states[u] = step(state, [event], cat, ts, params).state
        spent += time.perf_counter() - t0
        if truth is not None:
            popular[truth] += 1
    return {"per_user": per_user, "step_s": spent, "events": len(order)}


def summarise(per_user: dict, bootstrap: int, seed: int) -> dict:
    users = [u for u in per_user if per_user[u]["next"]]
    out: dict[str, dict[str, float]] = {}
    for name in per_user[users[0]]:
        rows = [r for u in users for r in per_user[u][name]]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        out[name] = {
            "acc@1": round(float(arr[:, 0].mean()), 4),
            "hit@3": round(float(arr[:, 1].mean()), 4),
            "p_true": round(float(arr[:, 2].mean()), 4),
            "predictions": len(rows),
        }
    # Paired bootstrap over users: ratio of next to persistence-mix, acc@1 and hit@3.
    rng = np.random.default_rng(seed)
    sums = {
        name: np.array(
            [np.asarray(per_user[u][name], dtype=np.float64).reshape(-1, 3).sum(0) for u in users]
        )
        for name in ("next", "persistence-mix")
    }
    counts = np.array([len(per_user[u]["next"]) for u in users], dtype=np.float64)
    ratios: dict[str, list[float]] = {"acc@1": [], "hit@3": []}
    for _ in range(bootstrap):
        pick = rng.integers(0, len(users), len(users))
        n = counts[pick].sum()
        for col, key in ((0, "acc@1"), (1, "hit@3")):
            a = sums["next"][pick, col].sum() / n
            b = sums["persistence-mix"][pick, col].sum() / n
            ratios[key].append(a / b if b > 0 else float("nan"))
    out["next_vs_persistence"] = {
        key: {
            "ratio": round(out["next"][key] / max(out["persistence-mix"][key], 1e-12), 4),
            "ci95": [round(float(np.nanpercentile(v, q)), 4) for q in (2.5, 97.5)],
        }
        for key, v in ratios.items()
    }
    out["users"] = len(users)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/ml-100k"))
    parser.add_argument("--encoder-cache", type=Path, default=None)
    parser.add_argument("--users", type=int, default=None, help="first N users (default all)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sweep", default="", help="comma-separated list shares to compare")
    parser.add_argument("--list-share", type=float, default=NEXT_LIST_SHARE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100 users, fewer samples (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS / "next_interest.json")
    args = parser.parse_args()
    users_n = 100 if args.quick and args.users is None else args.users
    sweep = tuple(float(x) for x in args.sweep.split(",") if x.strip())
    started = time.perf_counter()
    log, cat, topics = build(args.data, args.encoder_cache, args.seed)
    users = list(range(len(log.user_ids)))[: users_n or None]
    run = replay(log, cat, topics, users, args.warmup, args.list_share, sweep)
    result = summarise(run["per_user"], 200 if args.quick else 2000, args.seed)
    result["setup"] = {
        "data": str(args.data),
        "users": len(users),
        "events": run["events"],
        "topics": len(topics.topics()),
        "warmup": args.warmup,
        "step_ms_per_event": round(1000 * run["step_s"] / max(run["events"], 1), 4),
        "machine": platform.platform(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    bars = {key: {p: result[p][key] for p in PREDICTORS} for key in ("acc@1", "hit@3")}
    save(args.out, result, bars, ylabel="share of next events",
         title="Topic of the next event, MovieLens-100K")  # fmt: skip
    for name in [k for k in result if k.startswith(("next", "persistence", "popular"))]:
        if name == "next_vs_persistence":
            continue
        row = result[name]
        print(
            f"{name:18s} acc@1 {row['acc@1']:.3f}  hit@3 {row['hit@3']:.3f}"
            f"  p_true {row['p_true']:.3f}"
        )
    vs = result["next_vs_persistence"]
    print(f"next / persistence-mix: acc@1 {vs['acc@1']}  hit@3 {vs['hit@3']}")


if __name__ == "__main__":
    main()
