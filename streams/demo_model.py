"""The demo's learned updater: trained on a log disjoint from the replay, or reused.

`interest-stream demo` runs the learned GRU cell, not the time-decayed rule.
It needs a behaviour log to learn from that is not the one it replays (a
model that saw the replayed events would flatter itself):

- synthetic workload: the same catalogue (same ``seed``), users and events
  drawn from a seed of their own (``user_seed``), `TRAIN_USERS` of them;
- MovieLens: the users are split; the demo replays some, the model trains
  on the others (`split_users`).

The model is trained once per training log and kept in the cache folder
(``~/.cache/interest-stream/demo-models/<hash of the log>``); a second demo
on the same workload reuses it in a second. Training needs the `train`
extra (torch); without it the demo says so and runs the time-decayed rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from streams.workload import Workload, synthetic_workload

log = logging.getLogger("interest_stream.demo")

#: Users in the synthetic training log (the replay has 40 by default).
TRAIN_USERS = 1000
#: The demo trains with the defaults of `GruConfig` but stops sooner: its
#: logs are small and its budget is minutes.
DEMO_MAX_EPOCHS = 40
DEMO_PATIENCE = 5
#: Query heads of the demo's model: several interests per user (README, "The learned
#: updater with several interests"); a one-head model has one.
DEMO_HEADS = 4


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interest-stream" / "demo-models"


def synthetic_training(
    *, seed: int, events_per_user: int, users: int = TRAIN_USERS, **kwargs: object
) -> Workload:
    """A behaviour log over the catalogue of ``synthetic_workload(seed=seed)``, other users."""
    return synthetic_workload(
        users=users, events_per_user=events_per_user, seed=seed, user_seed=seed + 1, **kwargs
    )  # type: ignore[arg-type]


def split_users(workload: Workload, replay: set[str]) -> tuple[Workload, Workload]:
    """(the replayed users' workload, every other user's), same catalogue.

    >>> w = Workload([{"item_id": "a"}], [{"user_id": "u1", "item_id": "a"},
    ...              {"user_id": "u2", "item_id": "a"}], [], "toy")
    >>> shown, train = split_users(w, {"u1"})
    >>> [e["user_id"] for e in shown.events], [e["user_id"] for e in train.events]
    (['u1'], ['u2'])
    """
    mine = [e for e in workload.events if e["user_id"] in replay]
    rest = [e for e in workload.events if e["user_id"] not in replay]
    n_rest = len({e["user_id"] for e in rest})
    shown = Workload(
        workload.items,
        mine,
        [d for d in workload.drifts if d.user_id in replay],
        f"{workload.description}; replaying {len(replay)} users",
    )
    train = Workload(
        workload.items, rest, [], f"{workload.description}; training on {n_rest} others"
    )
    return shown, train


def replay_users(workload: Workload, *, first: int | None, share: float, seed: int) -> set[str]:
    """The users a MovieLens demo replays: the first N by id, else a seeded share of all.

    >>> w = Workload([], [{"user_id": f"u{i}"} for i in (3, 1, 2, 10)], [], "toy")
    >>> sorted(replay_users(w, first=2, share=0.5, seed=0))
    ['u1', 'u2']
    """
    users = sorted({e["user_id"] for e in workload.events}, key=_natural)
    if first is not None:
        return set(users[:first])
    rng = np.random.default_rng(seed)
    n = max(1, round(share * len(users)))
    return {users[i] for i in rng.choice(len(users), size=n, replace=False)}


def _natural(user_id: str) -> tuple[int, str]:
    digits = "".join(c for c in user_id if c.isdigit())
    return (int(digits) if digits else -1, user_id)


def fingerprint(workload: Workload) -> str:
    """A short hash of a training log: its items' ids and texts and its events."""
    h = hashlib.sha256()
    for item in workload.items:
        h.update(json.dumps([item["item_id"], item.get("text"), item.get("title")]).encode())
    for e in workload.events:
        h.update(json.dumps([e["user_id"], e["item_id"], e.get("type"), e["ts"]]).encode())
    return h.hexdigest()[:16]


def demo_updater(training: Workload, *, root: Path | None = None, seed: int = 0) -> Path | None:
    """The folder of a learned updater trained on ``training`` (trained now if not cached).

    Returns None, after saying why, when the `train` extra is not installed.
    Prints a progress bar while it trains.
    """
    try:
        from models.datasets.synthetic import interactions_from_records, record_texts
        from models.training.gru import GruConfig
        from models.training.pipeline import train_log
    except ImportError as exc:  # no torch: the `train` extra is not installed
        print(f"no learned model: {exc}; the demo runs the time-decayed rule", flush=True)
        return None
    from tqdm import tqdm

    if not training.events:
        print("no learned model: the training log is empty (every user is replayed); "
              "the demo runs the time-decayed rule", flush=True)  # fmt: skip
        return None
    out = (root or cache_root()) / fingerprint(training)
    cfg = replace(GruConfig(), max_epochs=DEMO_MAX_EPOCHS, patience=DEMO_PATIENCE, heads=DEMO_HEADS)
    # Skips and dislikes stay in: the workers feed the cell their negative
    # weights, so it must have seen some (at the price of a few skipped items
    # among the next-item targets).
    log_ = interactions_from_records(training.items, training.events, drop_types=frozenset())
    print(f"learned updater: {training.description} -> {out}", flush=True)
    with tqdm(total=cfg.max_epochs, desc="training the learned updater", unit="epoch") as bar:

        def progress(row: dict) -> None:
            bar.update(1)
            bar.set_postfix(valid_ndcg10=f"{row['valid_ndcg10']:.3f}", best=row["best_epoch"])

        runs = train_log(
            log_, out, texts=record_texts(training.items), models=("learned-gru",),
            seeds=(seed,), device="auto", gru=cfg, id_prefix="", progress=progress,
        )  # fmt: skip
    run = runs[0]
    test = run.get("test", {})
    print(
        f"learned updater ready: valid NDCG@10 {run['valid_ndcg10']:.4f}, "
        f"test NDCG@10 {test.get('ndcg10', float('nan')):.4f} on its own log "
        f"({run['epochs_run']} epochs, {run['train_seconds']:.0f}s)",
        flush=True,
    )
    return Path(run["artifact"])
