"""Training sequences from a leave-last-out split, noise injection, padding.

Everything here is numpy; the torch models turn the padded arrays into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.behaviour import Behaviour, event_weight
from models.datasets import Interactions, Split

_HOUR = 3600.0


@dataclass(frozen=True)
class UserSequences:
    """Per user, the events of one phase's history: items, signed weights, times."""

    items: list[np.ndarray]
    weights: list[np.ndarray]
    ts: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.items)


def rating_weights(ratings: np.ndarray) -> np.ndarray:
    """Signed behaviour weights of rating events, as the core computes them."""
    return np.array(
        [event_weight(Behaviour("u", "i", "rating", 0.0, "e", rating=float(r))) for r in ratings],
        dtype=np.float32,
    ).reshape(len(ratings))


def histories(split: Split, log: Interactions, phase: str) -> UserSequences:
    """Each user's history before the ``phase`` target ("train" = train part only).

    "valid" and "train" give the train part, "test" adds the validation event.
    Weights are the log's behaviour weights, or for a rating log follow from
    its stars (the split keeps items and times only).
    """
    ratings = log.sequence_ratings()
    typed = log.sequence_weights()
    items, weights, ts = [], [], []
    for u in range(split.n_users):
        n = len(split.train[u])
        seq_items, seq_ts = split.train[u], split.train_ts[u]
        if phase == "test" and split.valid[u] >= 0:
            n += 1
            seq_items = np.append(seq_items, split.valid[u])
            seq_ts = np.append(seq_ts, split.valid_ts[u])
        items.append(np.asarray(seq_items, dtype=np.int64))
        weights.append(
            rating_weights(ratings[u][:n]) if typed is None else typed[u][:n].astype(np.float32)
        )
        ts.append(np.asarray(seq_ts, dtype=np.float64))
    return UserSequences(items, weights, ts)


def gap_matrix(ts: np.ndarray) -> np.ndarray:
    """[L, 2] gap features of a time-ordered sequence (see `models.learned.gap_features`)."""
    out = np.zeros((len(ts), 2), dtype=np.float32)
    if len(ts):
        out[0, 1] = 1.0
        running = np.maximum.accumulate(ts)
        dt = np.maximum(ts[1:] - running[:-1], 0.0)
        out[1:, 0] = np.log1p(dt / _HOUR)
    return out


def inject_noise(
    items: np.ndarray,
    weights: np.ndarray,
    ts: np.ndarray,
    rng: np.random.Generator,
    p_drop: float,
    p_swap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop events and swap neighbours' items (timestamps stay in order).

    Robustness to lost and reordered events in the stream; at least two
    events are kept so that there is something to predict.
    """
    n = len(items)
    if n > 2 and p_drop > 0:
        keep = rng.random(n) >= p_drop
        if keep.sum() >= 2:
            items, weights, ts = items[keep], weights[keep], ts[keep]
    items, weights = items.copy(), weights.copy()
    if p_swap > 0 and len(items) > 1:
        for i in np.flatnonzero(rng.random(len(items) - 1) < p_swap):
            items[[i, i + 1]] = items[[i + 1, i]]
            weights[[i, i + 1]] = weights[[i + 1, i]]
    return items, weights, ts


def pad_right(rows: list[np.ndarray], width: int, fill: float = 0, dtype=np.int64) -> np.ndarray:
    """Stack rows left-aligned into [n, width] (rows longer than width keep their end)."""
    out = np.full((len(rows), width, *rows[0].shape[1:]) if rows else (0, width), fill, dtype=dtype)
    for r, row in enumerate(rows):
        row = row[-width:]
        out[r, : len(row)] = row
    return out


def pad_left(rows: list[np.ndarray], width: int, fill: int = 0) -> np.ndarray:
    """Stack rows right-aligned into [n, width], keeping each row's last ``width``."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for r, row in enumerate(rows):
        row = row[-width:]
        if len(row):
            out[r, width - len(row) :] = row
    return out
