"""Full-catalogue next-item metrics: HR@k, NDCG@k, MRR, coverage@k, recall@n, diversity@k.

Every item of the catalogue is a candidate except those the user had before
the target (no sampled negatives). The target itself is never excluded, even
when the user had it before (repeat consumption).

Ties are counted pessimistically: the target's rank is 1 + the number of
candidates scoring *at least* as high. A model that gives many items the
same score gains nothing from it, and a constant model ranks every target
last. NaN scores count as -inf. Top-k lists (for coverage) are ordered by
score, then by item index.

With one target per user, recall@n (the share of a user's relevant items in
their top n) is HR@n: the share of targets ranked within the n best.
Intra-list diversity is `intra_list_diversity` of each top-k list.

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

import itertools
from collections.abc import Callable, Collection, Sequence

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


def intra_list_diversity(lists: np.ndarray, genres: Sequence[Collection[str]]) -> np.ndarray:
    """Per row of item indices (-1 pads), 1 - the mean pairwise Jaccard of the items' genre sets.

    Intra-list diversity (Ziegler et al. 2005, with the Jaccard distance of
    genre sets): 0 when all items share the same genres, 1 when no two share
    any. Jaccard rather than "distinct genres in the list" because items have
    several genres (a MovieLens film has 1 to 6): a list of ten
    "Action|Adventure|Sci-Fi|War" films names four genres but holds one kind
    of film, and a distinct count rises with the genres per item rather than
    with how different the items are. Two items with no genres count as
    alike; a row with fewer than two items is NaN (no pairs).

    >>> genres = [("Comedy",), ("Comedy", "Drama"), ("Horror",), ()]
    >>> intra_list_diversity(np.array([[0, 1, 2], [0, 0, -1], [3, -1, -1]]), genres).round(3)
    array([0.833, 0.   ,   nan])
    """
    sets = [frozenset(g) for g in genres]
    out = np.full(len(lists), np.nan)
    for row, items in enumerate(np.asarray(lists, dtype=np.int64)):
        kept = [sets[i] for i in items if i >= 0]
        if len(kept) < 2:
            continue
        alike = [
            len(a & b) / len(a | b) if a | b else 1.0 for a, b in itertools.combinations(kept, 2)
        ]
        out[row] = 1.0 - float(np.mean(alike))
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
        Cut-off of HR, NDCG, coverage and diversity.
    recall_at
        Further cut-offs n: the result gets ``recall@n`` for each (HR@n).
    genres
        Per item, its genres; when given, the result gets ``diversity``, the
        mean over users of `intra_list_diversity` of their top-k lists.
    """

    def __init__(
        self,
        n_items: int,
        k: int = 10,
        *,
        recall_at: Sequence[int] = (),
        genres: Sequence[Collection[str]] | None = None,
    ) -> None:
        if genres is not None and len(genres) != n_items:
            raise ValueError(f"genres has {len(genres)} entries, want {n_items}")
        self.n_items = n_items
        self.k = k
        self.recall_at = tuple(int(n) for n in recall_at)
        self.genres = genres
        self._ranks: list[np.ndarray] = []
        self._diversity: list[np.ndarray] = []
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
        if self.genres is not None:
            self._diversity.append(intra_list_diversity(lists, self.genres))

    @property
    def ranks(self) -> np.ndarray:
        """Per user so far, the target's rank (1-based)."""
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    @property
    def diversity(self) -> np.ndarray:
        """Per user so far, the intra-list diversity of their top k (NaN: none defined)."""
        if not self._diversity:
            return np.full(self.ranks.size, np.nan)
        return np.concatenate(self._diversity)

    def result(self) -> dict[str, float]:
        """hr, ndcg, mrr, coverage (distinct items in all top-k lists / n_items), users.

        Plus ``recall@n`` for each of ``recall_at`` and, with genres, ``diversity``.
        """
        ranks = self.ranks
        out = summarize_ranks(ranks, self.k)
        out["coverage"] = float(self._recommended.sum() / self.n_items)
        for n in self.recall_at:
            out[f"recall@{n}"] = float((ranks <= n).mean()) if ranks.size else float("nan")
        if self.genres is not None:
            d = self.diversity
            out["diversity"] = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
        out["users"] = int(ranks.size)
        return out


def accumulate(
    score_fn: Callable[[np.ndarray, str], np.ndarray],
    split: Split,
    phase: str,
    *,
    users: np.ndarray | None = None,
    k: int = 10,
    chunk: int = 512,
    recall_at: Sequence[int] = (),
    genres: Sequence[Collection[str]] | None = None,
) -> MetricAccumulator:
    """Score ``phase`` ("valid" or "test") targets with ``score_fn(users, phase)``.

    Users are taken ``chunk`` at a time; each chunk's [users, n_items] scores
    are masked with the items the user had before the target (the train
    items, plus the validation item for "test"). The accumulator holds the
    per-user ranks and diversities (for paired comparisons) besides the means.
    """
    if users is None:
        users = split.eval_users()
    targets = split.target(phase)
    acc = MetricAccumulator(split.n_items, k, recall_at=recall_at, genres=genres)
    for start in range(0, len(users), chunk):
        batch = np.asarray(users[start : start + chunk], dtype=np.int64)
        scores = np.asarray(score_fn(batch, phase))
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"scores have shape {scores.shape}, want {(len(batch), split.n_items)}"
            )
        seen = seen_mask([split.history(int(u), phase) for u in batch], split.n_items)
        acc.update(scores, targets[batch], seen)
    return acc


def evaluate(
    score_fn: Callable[[np.ndarray, str], np.ndarray],
    split: Split,
    phase: str,
    *,
    users: np.ndarray | None = None,
    k: int = 10,
    chunk: int = 512,
    recall_at: Sequence[int] = (),
    genres: Sequence[Collection[str]] | None = None,
) -> dict[str, float]:
    """The metrics of `accumulate` (`MetricAccumulator.result`)."""
    return accumulate(
        score_fn, split, phase, users=users, k=k, chunk=chunk, recall_at=recall_at, genres=genres
    ).result()
