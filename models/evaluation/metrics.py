"""Full-catalogue next-item metrics: HR@k, NDCG@k, MRR and coverage@k.

Every item of the catalogue is a candidate except those the user had before
the target (no sampled negatives). The target itself is never excluded, even
when the user had it before (repeat consumption).

Ties are counted pessimistically: the target's rank is 1 + the number of
candidates scoring *at least* as high. A model that gives many items the
same score gains nothing from it, and a constant model ranks every target
last. NaN scores count as -inf. Top-k lists (for coverage) are ordered by
score, then by item index.

>>> scores = np.array([[0.9, 0.5, 0.7, 0.1]])
>>> seen = np.array([[True, False, False, False]])
>>> rank_targets(scores, np.array([1]), seen).tolist()  # item 0 is masked
[2]
>>> m = MetricAccumulator(n_items=4, k=1)
>>> m.update(scores, np.array([2]), seen)
>>> m.result()["hr"], m.result()["ndcg"], m.result()["mrr"], m.result()["coverage"]
(1.0, 1.0, 1.0, 0.25)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.datasets import Split


def seen_mask(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    """A [len(histories), n_items] bool mask of the items each user had."""
    mask = np.zeros((len(histories), n_items), dtype=bool)
    for row, items in enumerate(histories):
        mask[row, np.asarray(items, dtype=np.int64)] = True
    return mask


def _clean(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    s = np.array(scores, dtype=np.float64, copy=True)
    s[np.isnan(s)] = -np.inf
    s[seen] = -np.inf
    return s


def rank_targets(scores: np.ndarray, targets: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target among its candidates, ties pessimistic.

    ``scores`` and ``seen`` are [users, n_items]; candidates are the items not
    ``seen`` plus the target itself.
    """
    scores = np.asarray(scores)
    rows = np.arange(scores.shape[0])
    target_score = np.array(scores[rows, targets], dtype=np.float64)
    target_score[np.isnan(target_score)] = -np.inf
    candidates = ~seen
    candidates[rows, targets] = False  # counted apart, as the "1 +"
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    at_least = (s >= target_score[:, None]) & candidates
    return 1 + at_least.sum(axis=1)


def top_k(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The k best unseen items per row, by score then item index; -1 pads rows short of k."""
    s = _clean(scores, seen)
    n = s.shape[1]
    k_eff = min(k, n)
    # A stable sort of the negated scores orders ties by item index.
    part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n else None
    out = np.full((s.shape[0], k), -1, dtype=np.int64)
    for row in range(s.shape[0]):
        if part is None:
            order = np.argsort(-s[row], kind="stable")[:k_eff]
        else:
            # Items tied with the k-th score may sit outside the partition.
            kth = s[row, part[row]].min()
            cand = np.flatnonzero(s[row] >= kth)
            order = cand[np.argsort(-s[row, cand], kind="stable")][:k_eff]
        order = order[np.isfinite(s[row, order])]
        out[row, : len(order)] = order
    return out


def summarize_ranks(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank+1)) and MRR (1/rank, uncut)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return {"hr": float("nan"), "ndcg": float("nan"), "mrr": float("nan")}
    hit = ranks <= k
    return {
        "hr": float(hit.mean()),
        "ndcg": float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }


def rank_metrics(
    scores: np.ndarray, histories: list[np.ndarray], targets: np.ndarray, k: int = 10
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of one [users, n_items] block, each row's history masked.

    What `evaluate` computes chunk by chunk, for callers that already hold
    every row's scores (training's early stopping and its test numbers), so
    that they score exactly as the harness does.

    >>> rank_metrics(np.array([[0.9, 0.5, 0.7]]), [np.array([0])], np.array([1]), k=1)
    {'hr': 0.0, 'ndcg': 0.0, 'mrr': 0.5}
    """
    ranks = rank_targets(scores, targets, seen_mask(histories, np.shape(scores)[1]))
    return summarize_ranks(ranks, k)


class MetricAccumulator:
    """Collects ranks and top-k lists chunk by chunk, so memory stays bounded.

    Parameters
    ----------
    n_items
        Catalogue size (the coverage denominator).
    k
        Cut-off of HR, NDCG and coverage.
    """

    def __init__(self, n_items: int, k: int = 10) -> None:
        self.n_items = n_items
        self.k = k
        self._ranks: list[np.ndarray] = []
        self._recommended = np.zeros(n_items, dtype=bool)

    def update(self, scores: np.ndarray, targets: np.ndarray, seen: np.ndarray) -> None:
        """Add one chunk: ``scores``/``seen`` [users, n_items], ``targets`` [users]."""
        if scores.shape != seen.shape or scores.shape[0] != len(targets):
            raise ValueError(
                f"shapes disagree: scores {scores.shape}, seen {seen.shape}, "
                f"targets {np.shape(targets)}"
            )
        self._ranks.append(rank_targets(scores, targets, seen))
        lists = top_k(scores, seen, self.k)
        self._recommended[lists[lists >= 0]] = True

    @property
    def ranks(self) -> np.ndarray:
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    def result(self) -> dict[str, float]:
        """hr, ndcg, mrr, coverage (distinct items in all top-k lists / n_items), users."""
        out = summarize_ranks(self.ranks, self.k)
        out["coverage"] = float(self._recommended.sum() / self.n_items)
        out["users"] = int(self.ranks.size)
        return out


def evaluate(
    score_fn: Callable[[np.ndarray, str], np.ndarray],
    split: Split,
    phase: str,
    *,
    users: np.ndarray | None = None,
    k: int = 10,
    chunk: int = 512,
) -> dict[str, float]:
    """Score ``phase`` ("valid" or "test") targets with ``score_fn(users, phase)``.

    Users are taken ``chunk`` at a time; each chunk's [users, n_items] scores
    are masked with the items the user had before the target (the train
    items, plus the validation item for "test").
    """
    if users is None:
        users = split.eval_users()
    targets = split.target(phase)
    acc = MetricAccumulator(split.n_items, k)
    for start in range(0, len(users), chunk):
        batch = np.asarray(users[start : start + chunk], dtype=np.int64)
        scores = np.asarray(score_fn(batch, phase))
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"scores have shape {scores.shape}, want {(len(batch), split.n_items)}"
            )
        seen = seen_mask([split.history(int(u), phase) for u in batch], split.n_items)
        acc.update(scores, targets[batch], seen)
    return acc.result()
