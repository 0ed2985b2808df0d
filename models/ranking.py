"""Top-K selection over a score vector: the one ranking rule of the project.

Every ranked list (the catalogue's cosine ranking, a learned model's own
scores, the evaluation's) goes through `top_k`, so ties are broken the same
way everywhere: by score, then by item id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Ranked = tuple[str, float]

#: Candidates kept past k, so that items tied at the cut are ordered by id.
TIE_MARGIN = 8


def top_k(
    ids: Sequence[str], scores: np.ndarray, k: int, exclude_rows: Iterable[int] = ()
) -> list[Ranked]:
    """The ``k`` best rows of ``scores`` as ``(id, score)``, best first.

    Rows whose score is not finite (removed items: ``-inf``) and
    ``exclude_rows`` never appear. Scores are rounded to 6 decimals, the
    precision a delta carries.

    >>> top_k(["a", "b", "c", "d"], np.array([0.5, 0.9, 0.5, -np.inf]), 3, exclude_rows=[1])
    [('a', 0.5), ('c', 0.5)]
    """
    n = len(ids)
    if n == 0 or k <= 0:
        return []
    scores = np.array(scores, dtype=np.float64, copy=True)
    for row in exclude_rows:
        if 0 <= row < n:
            scores[row] = -np.inf
    take = min(n, k + TIE_MARGIN)
    cand = np.argpartition(-scores, take - 1)[:take] if take < n else np.arange(n)
    ranked = sorted(
        ((ids[r], float(scores[r])) for r in cand if np.isfinite(scores[r])),
        key=lambda pair: (-pair[1], pair[0]),
    )
    return [(item_id, round(score, 6)) for item_id, score in ranked[:k]]
