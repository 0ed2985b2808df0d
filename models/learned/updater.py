"""`LearnedUpdater`: the exported GRU cell behind the core's updater protocol.

It owns an item space of its own (text fused with learned id embeddings),
so besides `apply`/`query` it overrides `represent` (the vector `apply`
consumes for an item) and `scores` (the model's own score of every
catalogue item) of `models.update.InterestUpdater`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.catalogue import Catalogue
from models.learned.artifact import Artifact, load_artifact
from models.learned.cell import GruCell, gap_features
from models.learned.prototypes import ItemPrototypes
from models.update import InterestUpdater


class LearnedUpdater(InterestUpdater):
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

    The updater keeps one GRU state per user that every event moves
    (``shared_state``): a one-head model has one interest, and a model
    trained with several query heads (``heads > 1``) has one interest per
    head it uses, each one head of that state: its hidden vector is the shared state followed by the
    head's index (`with_head`; -1 is every head, ranking by the best head's
    score, the model's own score and a one-interest user's). An event's mass
    goes to the head that scores its item highest, as in training.

    Parameters
    ----------
    artifact
        An exported model (see `models.learned.artifact`).
    """

    #: `head_of` of an interest that ranks by every head (the best head's score).
    ALL_HEADS = -1
    #: Several GRU states, one per interest, each fed only the events routed to it,
    #: were sequences the cell never saw: a one-head model lost 46% of NDCG@10
    #: with several interests (README, "The learned updater with several interests").
    shared_state = True

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.cell = GruCell(artifact)
        self.heads = self.cell.heads
        # The heads are in the name: states written before interests shared one
        # state (each interest a GRU state of its own) are migrated by replay.
        self.name = f"learned-gru({artifact.model_version}, heads={self.heads})"
        # Memo of the catalogue's fused item vectors (keyed by its revision and
        # by the online part's).
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: tuple[list[str], np.ndarray, np.ndarray] = ([], np.zeros((0, 1)), np.zeros(0))
        #: The online collaborative part of items the model never saw
        #: (`models.learned.prototypes`), set by the worker; None: text alone.
        self.prototypes: ItemPrototypes | None = None
        self._prototypes_rev = 0
        self._scale: float | None = None

    def set_prototypes(self, prototypes: ItemPrototypes | None) -> None:
        """Rank (and read) items the model never saw with this online part from now on."""
        if prototypes is not None and prototypes.model_version != self.artifact.model_version:
            raise ValueError(
                f"prototypes of model {prototypes.model_version} given to "
                f"{self.artifact.model_version}"
            )
        self.prototypes = prototypes
        self._prototypes_rev += 1

    def is_cold(self, item_id: str) -> bool:
        """Whether the model has no learned id embedding for ``item_id``."""
        return item_id not in self.cell.vocab

    def typical_norm(self) -> float:
        """The online part's length: the median norm of the trained items' fused vectors.

        Measured on the catalogue the updater last ranked (`scores`); before
        any, the median norm of their id parts.
        """
        if self._scale is None:
            parts = np.concatenate([self.cell._id_emb, self.cell._id_bias[:, None]], axis=1)
            self._scale = float(np.median(np.linalg.norm(parts, axis=1))) if len(parts) else 1.0
        return self._scale

    @classmethod
    def load(cls, path: str | Path) -> LearnedUpdater:
        return cls(load_artifact(path))

    def initial(self, dim: int) -> np.ndarray:
        return self._tagged(self.cell.initial(), self.ALL_HEADS)

    # -- heads ---------------------------------------------------------------

    def _state(self, hidden: np.ndarray) -> np.ndarray:
        """The GRU state of an interest's hidden vector (without the head index)."""
        return hidden if self.heads == 1 else hidden[:-1]

    def head_of(self, hidden: np.ndarray) -> int:
        return 0 if self.heads == 1 else round(float(hidden[-1]))

    def with_head(self, hidden: np.ndarray, head: int) -> np.ndarray:
        return self._tagged(self._state(hidden), head)

    def _tagged(self, state: np.ndarray, head: int) -> np.ndarray:
        """An interest's hidden vector: the GRU state, then (several heads) the head index."""
        if self.heads == 1:
            return np.asarray(state, dtype=np.float32)
        if not self.ALL_HEADS <= head < self.heads:
            raise ValueError(f"head {head} of a {self.heads}-head model")
        return np.append(state, np.float32(head)).astype(np.float32)

    def head_scores(self, hidden: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self.cell.queries(self._state(hidden)) @ np.asarray(item, dtype=np.float32)

    def model_query(self, hidden: np.ndarray) -> np.ndarray:
        """The interest's query in the model's item space (every head's: their mean)."""
        state, head = self._state(hidden), self.head_of(hidden)
        if head == self.ALL_HEADS:
            return self.cell.queries(state).mean(axis=0)
        return self.cell.query(state, head)

    # -- the updater protocol ----------------------------------------------

    def represent(self, item_id: str, vec: np.ndarray) -> np.ndarray:
        rep = self.cell.represent(item_id, vec)
        if self.prototypes is not None and self.is_cold(item_id):
            cold = np.ones(1, dtype=bool)
            rep = self.prototypes.mix([item_id], rep[None], cold, self.typical_norm())[0]
        return rep

    def apply(
        self,
        hidden: np.ndarray,
        hidden_ts: float | None,
        item: np.ndarray,
        weight: float,
        ts: float,
    ) -> tuple[np.ndarray, float]:
        state = self._state(hidden)
        new = self.cell.step(state, item, np.float32(weight), gap_features(hidden_ts, ts))
        new = self._tagged(new, self.head_of(hidden))
        return new, ts if hidden_ts is None else max(hidden_ts, ts)

    def merge(
        self,
        a: np.ndarray,
        a_ts: float | None,
        a_mass: float,
        b: np.ndarray,
        b_ts: float | None,
        b_mass: float,
    ) -> tuple[np.ndarray, float | None]:
        """The heavier interest's hidden state (ties: ``a``), at the later of the two times.

        A GRU state is not linear: the mean of two states is a state no
        sequence of events leads to, and the cell's output for it can point
        anywhere (on the demo's catalogue, a gardening user's merged state
        ranked finance first). The lighter interest's events are few by
        construction; its mass still adds to the merged interest. (Heads of
        one shared state: the heavier head.)
        """
        hidden = a if a_mass >= b_mass else b
        times = [t for t in (a_ts, b_ts) if t is not None]
        return np.asarray(hidden, dtype=np.float32), max(times) if times else None

    def query(self, hidden: np.ndarray) -> np.ndarray:
        """A unit vector in the catalogue's (text) space: the model's text direction.

        Of every head at once (`ALL_HEADS`): the mean of the heads' directions.
        """
        state, head = self._state(hidden), self.head_of(hidden)
        if head != self.ALL_HEADS:
            return self.cell.text_query(state, head)
        mean = np.mean([self.cell.text_query(state, k) for k in range(self.heads)], axis=0)
        norm = float(np.linalg.norm(mean))
        return (mean / norm).astype(np.float32) if norm > 1e-12 else np.zeros_like(mean)

    def scores(
        self, hidden: np.ndarray, short: np.ndarray, catalogue: Catalogue, short_weight: float
    ) -> np.ndarray:
        """The model's score ``q(h) . r_i`` of every catalogue row (removed rows -inf).

        ``short`` and ``short_weight`` are ignored: the cell was trained to
        rank on its own, and its hidden state already carries the recent events.
        The query is the interest's head's (every head: each row's best).
        """
        return self.scores_many([hidden], catalogue)[0]

    def scores_many(self, hiddens: list[np.ndarray], catalogue: Catalogue) -> np.ndarray:
        """[len(hiddens), rows]: `scores` of each interest, in one product for one-head ones."""
        ids, reps, alive = self._representations(catalogue)
        if not hiddens:
            return np.zeros((0, len(ids)))
        if not ids:
            return np.zeros((len(hiddens), 0))
        heads = [self.head_of(h) for h in hiddens]
        if self.ALL_HEADS in heads:
            rows = [self.cell.scores(self._state(h), reps, None if k < 0 else k)
                    for h, k in zip(hiddens, heads, strict=True)]  # fmt: skip
            raw = np.stack(rows)
        else:
            queries = np.stack(
                [self.cell.query(self._state(h), k) for h, k in zip(hiddens, heads, strict=True)]
            )
            raw = queries @ reps.T
        return np.where(alive[None, :], raw, -np.inf)

    def _representations(self, catalogue: Catalogue) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The fused vectors of every catalogue row, recomputed only when the catalogue changed."""
        key = (*catalogue.revision, self._prototypes_rev)
        if self._cache_key != key:
            ids, texts, alive = catalogue.rows()
            reps = self.cell.represent_many(ids, np.asarray(texts)) if ids else np.zeros((0, 1))
            cold = np.array([self.is_cold(i) for i in ids], dtype=bool)
            if (~cold & alive).any():
                self._scale = float(np.median(np.linalg.norm(reps[~cold & alive], axis=1)))
            if self.prototypes is not None and ids:
                reps = self.prototypes.mix(ids, reps, cold, self.typical_norm())
            self._cache = (ids, reps, alive.copy())
            self._cache_key = key
        return self._cache
