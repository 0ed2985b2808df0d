"""Items that arrive after training: text alone against text plus an online collaborative part.

    .venv/bin/python benchmarks/new_items.py [--quick] [--data DIR] [--cutoff 0.8]
        [--max-users N] [--epochs N] [--out benchmarks/results/new_items.json]

A time split of MovieLens-100K: the learned cell is trained (`interest-stream
train`'s pipeline, one seed) on the events before the ``--cutoff`` quantile
of event time; the events after it are a stream. An item first seen after
the cut-off is *new*: the cell has no id embedding for it, so it ranks on
its text alone. Every stream event on a new item is a target: the user's
whole history before it goes through the exported numpy cell (the
workers' code path) and the item's rank among the items the user has not
seen is scored (HR@10, NDCG@10). Two representations of the new items, in
the same run, on the same targets:

- ``text``: the cell's text projection, what a worker without the online
  part has;
- ``online`` (what the workers run, `models.learned.prototypes`): each new
  item learns the ranking queries ``q(h)`` of the users who chose it, from
  the stream only and causally (a target is scored before its own event is
  learned from); its representation moves along their mean, scaled to a
  trained item's typical id-part norm, shrunk by ``n / (n + prior)``;
- ``cooc`` (a simpler reference): the item moves towards the mean fused
  representation of the items the same users had among their
  ``--window`` previous events, same shrinkage.

The cell is not retrained. Paired bootstrap interval over targets for the NDCG@10 ratio. Writes JSON
and a bar chart beside it.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.datasets import Interactions, load_movielens
from models.learned import LearnedUpdater
from models.learned.prototypes import ItemPrototypes
from models.training.sequences import rating_weights

from _results import RESULTS, save


class CoOccurrence:
    """Online collaborative representations of new items from the items seen next to them.

    ``add(item, neighbours)`` records that ``item`` was consumed by a user
    whose previous events were on ``neighbours`` (and that each neighbour
    co-occurs with ``item``); `mix` blends each tracked item's base
    representation with the mean representation of its co-occurring items.
    """

    def __init__(self, tracked: np.ndarray, reps: np.ndarray, prior: float) -> None:
        self.tracked = np.asarray(tracked, dtype=bool)
        self.sums = np.zeros_like(reps, dtype=np.float64)
        self.counts = np.zeros(len(reps))
        self.prior = prior

    def add(self, item: int, neighbours: np.ndarray, reps: np.ndarray) -> None:
        if len(neighbours) == 0:
            return
        if self.tracked[item]:
            self.sums[item] += reps[neighbours].sum(axis=0)
            self.counts[item] += len(neighbours)
        back = neighbours[self.tracked[neighbours]]
        if len(back):
            np.add.at(self.sums, back, reps[item])
            np.add.at(self.counts, back, 1.0)

    def mix(self, base: np.ndarray) -> np.ndarray:
        """``base`` with each tracked, co-occurring row moved towards its neighbours' mean."""
        out = base.copy()
        rows = np.flatnonzero(self.tracked & (self.counts > 0))
        if len(rows):
            n = self.counts[rows][:, None]
            share = n / (n + self.prior)
            out[rows] = (1 - share) * base[rows] + share * (self.sums[rows] / n)
        return out.astype(np.float32)


def _subset(log: Interactions, keep: np.ndarray) -> Interactions:
    return replace(
        log, users=log.users[keep], items=log.items[keep], ts=log.ts[keep],
        ratings=log.ratings[keep], weights=None,
    )  # fmt: skip


def _at10(scores: np.ndarray, target: int, seen: np.ndarray) -> tuple[float, float, int]:
    """(NDCG@10, HR@10, 0-based rank) of ``target`` among the items not in ``seen``."""
    s = scores.astype(np.float64).copy()
    s[seen] = -np.inf
    rank = int((s > s[target]).sum())
    return (1.0 / np.log2(rank + 2), 1.0, rank) if rank < 10 else (0.0, 0.0, rank)


def run(args: argparse.Namespace) -> dict:
    from models.training.gru import GruConfig
    from models.training.pipeline import train_log
    from models.training.text import text_embeddings

    started = time.perf_counter()
    log = load_movielens(args.data, max_users=args.max_users)
    cut = float(np.quantile(log.ts, args.cutoff))
    before = log.ts < cut
    train = _subset(log, before)
    out = Path(args.work)
    cfg = GruConfig() if not args.quick else GruConfig(item_dim=32, hidden_dim=32, max_len=60)
    if args.epochs:
        cfg = replace(cfg, max_epochs=args.epochs)
    t0 = time.perf_counter()
    runs = train_log(train, out, models=("learned-gru",), gru=cfg, id_prefix="", device="cpu")
    train_s = time.perf_counter() - t0
    updater = LearnedUpdater.load(runs[0]["artifact"])
    cell = updater.cell
    text = text_embeddings(log, out / "text-embeddings")
    base = cell.represent_many(log.item_ids, text)
    warm = np.array([i in cell.vocab for i in log.item_ids])
    first_seen = np.full(log.n_items, np.inf)
    np.minimum.at(first_seen, log.items, log.ts)
    new = (first_seen >= cut) & ~warm
    online = CoOccurrence(new, base, args.prior)
    protos = ItemPrototypes(updater.artifact.model_version)
    # The online part's length as a worker measures it (`LearnedUpdater.typical_norm`):
    # the median norm of the trained items' fused vectors.
    ids, scale = list(log.item_ids), float(np.median(np.linalg.norm(base[warm], axis=1)))

    # The stream: every event after the cut-off, in time order (ties in log order).
    stream = np.flatnonzero(~before)
    stream = stream[np.argsort(log.ts[stream], kind="stable")]
    seqs, seq_ts, ratings = log.sequences(), log.sequence_ts(), log.sequence_ratings()
    starts = np.searchsorted(log.users, np.arange(log.n_users + 1))
    rows: list[dict] = []
    for row in stream:
        u, item = int(log.users[row]), int(log.items[row])
        k = row - starts[u]  # position in the user's sequence
        hist = seqs[u][:k]
        if new[item] and k > 0:
            mixed = protos.mix(ids, base, new, scale, args.prior)
            reps = {"text": base, "cooc": online.mix(base), "online": mixed}
            w = rating_weights(ratings[u][:k])
            entry = {"user": u, "item": item, "history": k}
            for name, r in reps.items():
                state = cell.final_states([hist], [w], [seq_ts[u][:k]], r)[0]
                entry[name] = _at10(cell.scores(state, r), item, hist)
                if name == "online":
                    protos.add(ids[item], cell.query(state))
            rows.append(entry)
        online.add(item, hist[-args.window :], online.mix(base))

    n = len(rows)
    summary = {}
    for name in ("text", "cooc", "online"):
        ndcg = np.array([r[name][0] for r in rows])
        hr = np.array([r[name][1] for r in rows])
        rank = np.array([r[name][2] for r in rows])
        summary[name] = {"ndcg10": float(ndcg.mean()) if n else 0.0,
                         "hr10": float(hr.mean()) if n else 0.0,
                         "median_rank": float(np.median(rank)) if n else 0.0}  # fmt: skip
    ratio, lo, hi = _bootstrap(rows, args.seed)
    return {
        "benchmark": "new_items",
        "data": str(args.data),
        "cutoff_quantile": args.cutoff,
        "cutoff_ts": cut,
        "users": log.n_users,
        "train_events": int(before.sum()),
        "stream_events": len(stream),
        "new_items": int(new.sum()),
        "targets": n,
        "window": args.window,
        "prior": args.prior,
        "model": {
            "config": cfg.to_dict(),
            "train_seconds": round(train_s, 1),
            "valid_ndcg10": runs[0]["valid_ndcg10"],
        },
        "results": summary,
        "ndcg10_ratio_online_vs_text": {"ratio": ratio, "ci95": [lo, hi]},
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.platform(),
    }


def _bootstrap(rows: list[dict], seed: int, n: int = 2000) -> tuple[float, float, float]:
    if not rows:
        return float("nan"), float("nan"), float("nan")
    a = np.array([r["online"][0] for r in rows])
    b = np.array([r["text"][0] for r in rows])
    if b.sum() == 0:  # text alone never hits: no finite ratio to bootstrap
        return (float("inf") if a.sum() > 0 else float("nan")), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rows), size=(n, len(rows)))
    num, den = a[picks].mean(axis=1), b[picks].mean(axis=1)
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    point = float(a.mean() / b.mean())
    return point, float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/ml-100k"))
    p.add_argument("--cutoff", type=float, default=0.8, help="quantile of event time")
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="cap on training epochs")
    p.add_argument("--window", type=int, default=10, help="previous events that co-occur")
    p.add_argument("--prior", type=float, default=5.0, help="shrinkage of the online part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="200 users, a small cell, 5 epochs")
    p.add_argument("--work", default=".interest-stream/new-items", help="training folder")
    p.add_argument("--out", type=Path, default=RESULTS / "new_items.json")
    args = p.parse_args()
    if args.quick:
        args.max_users = args.max_users or 200
        args.epochs = args.epochs or 5
    report = run(args)
    r = report["results"]
    q = report["ndcg10_ratio_online_vs_text"]
    bars = {"NDCG@10": {n: r[n]["ndcg10"] for n in r}, "HR@10": {n: r[n]["hr10"] for n in r}}
    title = f"{report['targets']} targets on {report['new_items']} items new after the cut-off"
    save(args.out, report, bars, ylabel="on new-item targets", title=title)
    print(
        f"{report['targets']} targets on {report['new_items']} new items; "
        f"NDCG@10 text {r['text']['ndcg10']:.4f}, online {r['online']['ndcg10']:.4f}: "
        f"{q['ratio']:.2f}x [{q['ci95'][0]:.2f}, {q['ci95'][1]:.2f}]"
    )


if __name__ == "__main__":
    main()
