"""`LearnedUpdater`: the exported GRU cell behind the core's updater protocol.

It owns an item space of its own (text fused with learned id embeddings),
so besides `apply`/`query` it implements `represent` (the vector `apply`
consumes for an item) and `top_k` (the model's exact ranking of the
catalogue); the core uses both through `models.update.ItemSpaceUpdater`.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from models.catalogue import Catalogue, Ranked
from models.learned.artifact import Artifact, load_artifact
from models.learned.cell import GruCell, gap_features


class LearnedUpdater:
    """A trained GRU cell that moves the user state one event at a time.

    The hidden state has the cell's width, not the catalogue's. Events are
    applied in arrival order: unlike the time-decayed rule the state does
    depend on order, and a late event is applied with no time gap (its
    event time never moves ``hidden_ts`` backwards).

    Ranking is the model's own score ``q(h) . r_i`` over the catalogue's items,
    where ``r_i`` fuses the catalogue's text vector with the learned id
    embedding (text alone for items the model never saw). The core's
    short-term window mix does not apply to it: the cell was trained to
    rank on its own.

    Parameters
    ----------
    artifact
        An exported model (see `models.learned.artifact`).
    """

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.cell = GruCell(artifact)
        self.name = f"learned-gru({artifact.model_version})"
        # Memo of the catalogue's fused item vectors (pure: keyed by its revision).
        self._cache_key: tuple[int, int] | None = None
        self._cache: tuple[list[str], np.ndarray, np.ndarray] = ([], np.zeros((0, 1)), np.zeros(0))

    @classmethod
    def load(cls, path: str | Path) -> LearnedUpdater:
        return cls(load_artifact(path))

    def initial(self, dim: int) -> np.ndarray:
        return self.cell.initial()

    def represent(self, item_id: str, vec: np.ndarray) -> np.ndarray:
        return self.cell.represent(item_id, vec)

    def apply(
        self,
        hidden: np.ndarray,
        hidden_ts: float | None,
        item: np.ndarray,
        weight: float,
        ts: float,
    ) -> tuple[np.ndarray, float]:
        new = self.cell.step(hidden, item, np.float32(weight), gap_features(hidden_ts, ts))
        return new, ts if hidden_ts is None else max(hidden_ts, ts)

    def query(self, hidden: np.ndarray) -> np.ndarray:
        """A unit vector in the catalogue's (text) space: the model's text direction."""
        return self.cell.text_query(hidden)

    def top_k(
        self, hidden: np.ndarray, catalogue: Catalogue, k: int, exclude: Collection[str]
    ) -> list[Ranked]:
        """The k best catalogue items by the model's score; ties broken by item id."""
        ids, reps, alive = self._representations(catalogue)
        if k <= 0 or not alive.any():
            return []
        scores = np.where(alive, self.cell.scores(hidden, reps), -np.inf)
        for item_id in exclude:
            row = catalogue.row_of(item_id)
            if row is not None and row < len(scores):
                scores[row] = -np.inf
        n = len(ids)
        take = min(n, k + 8)  # a margin past k so that ties at the cut are ordered by id
        cand = np.argpartition(-scores, take - 1)[:take] if take < n else range(n)
        ranked = sorted(
            ((ids[r], float(scores[r])) for r in cand if np.isfinite(scores[r])),
            key=lambda p: (-p[1], p[0]),
        )
        return [(item, round(score, 6)) for item, score in ranked[:k]]

    def _representations(self, catalogue: Catalogue) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The fused vectors of every catalogue row, recomputed only when the catalogue changed."""
        if self._cache_key != catalogue.revision:
            ids, texts, alive = catalogue.rows()
            reps = self.cell.represent_many(ids, np.asarray(texts)) if ids else np.zeros((0, 1))
            self._cache = (ids, reps, alive.copy())
            self._cache_key = catalogue.revision
        return self._cache
