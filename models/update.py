"""Interest updaters: how one event moves a user's interest state.

One base class, `InterestUpdater`, as river builds ``rank`` on
``predict_one``: an updater implements `initial`, `apply` and `query`, and
inherits `represent` (the vector `apply` takes for an item: the catalogue's
by default) and `scores` / `rank` (cosine of the catalogue against the
ranking query, mixed with the short-term window direction). A learned model
with an item space of its own overrides `represent` and `scores`. The core
calls only these methods and never asks which kind of updater it holds.

Every updater passes `tests/test_updater_contract.py`.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

from models.ranking import Ranked, top_k

if TYPE_CHECKING:
    from models.catalogue import Catalogue


#: How many of its best items an item-space updater is read from (`readable_directions`).
READABLE_TOP = 20


class InterestUpdater:
    """Moves a hidden interest vector one event at a time.

    ``hidden_ts`` is the event time the hidden state refers to (None before
    the first event). Implementations must be pure: same inputs, same
    output, inputs never mutated.

    Attributes
    ----------
    name
        Identifies the model that owns a hidden vector; a state written under
        another name is migrated (its window replayed through this updater).
    order_independent
        Whether a late event gives the same state as an in-order one (the
        contract suite checks it where promised).
    shared_state
        Whether a user's interests share one hidden state that every event
        moves, each interest one of the updater's ``heads`` (query heads) of
        it (`models.interest.composition.absorb`); such an updater also
        implements `head_scores`, `head_of` and `with_head`. Otherwise each
        interest is a hidden state of its own, moved by the events routed to it.
    heads
        Query heads over a shared state.
    """

    name: str = ""
    order_independent: bool = False
    shared_state: bool = False
    heads: int = 1

    def head_scores(self, hidden: np.ndarray, item: np.ndarray) -> np.ndarray:
        """[heads]: how well each head of ``hidden``'s state scores ``item`` (`represent`)."""
        raise NotImplementedError(f"{type(self).__name__} shares no state among interests")

    def head_of(self, hidden: np.ndarray) -> int:
        """The head an interest's hidden vector ranks by (-1: every head, the best one's score)."""
        raise NotImplementedError(f"{type(self).__name__} shares no state among interests")

    def with_head(self, hidden: np.ndarray, head: int) -> np.ndarray:
        """``hidden``'s shared state as an interest of head ``head`` (-1: every head)."""
        raise NotImplementedError(f"{type(self).__name__} shares no state among interests")

    def initial(self, dim: int) -> np.ndarray:
        """The hidden state before any event; ``dim`` is the catalogue's width."""
        raise NotImplementedError

    def apply(
        self,
        hidden: np.ndarray,
        hidden_ts: float | None,
        item: np.ndarray,
        weight: float,
        ts: float,
    ) -> tuple[np.ndarray, float]:
        """The hidden state and its time after one event on ``item`` (see `represent`)."""
        raise NotImplementedError

    def query(self, hidden: np.ndarray) -> np.ndarray:
        """A unit vector in the catalogue's space (all zeros when undefined)."""
        raise NotImplementedError

    def represent(self, item_id: str, vec: np.ndarray) -> np.ndarray:
        """The vector `apply` takes for an item whose catalogue vector is ``vec``."""
        return vec

    def merge(
        self,
        a: np.ndarray,
        a_ts: float | None,
        a_mass: float,
        b: np.ndarray,
        b_ts: float | None,
        b_mass: float,
    ) -> tuple[np.ndarray, float | None]:
        """One hidden state for two interests that merge (`models.interest.composition`).

        The default is the mass-weighted mean, at the later of the two times.
        """
        total = a_mass + b_mass
        wa = a_mass / total if total > 0 else 0.5
        hidden = (wa * np.asarray(a) + (1.0 - wa) * np.asarray(b)).astype(np.float32)
        times = [t for t in (a_ts, b_ts) if t is not None]
        return hidden, max(times) if times else None

    def scores(
        self, hidden: np.ndarray, short: np.ndarray, catalogue: Catalogue, short_weight: float
    ) -> np.ndarray:
        """A score per catalogue row (`Catalogue.rows`); removed rows and an undefined query -inf.

        The default ranks by cosine with a mix of the mid-term direction
        (`query`) and the short-term one (``short``, the window's direction),
        ``short_weight`` of the latter.
        """
        q = mix(self.query(hidden), short, short_weight)
        if not q.any():
            return np.full(len(catalogue.rows()[0]), -np.inf)
        return catalogue.scores(q)

    def scores_many(self, hiddens: list[np.ndarray], catalogue: Catalogue) -> np.ndarray:
        """[len(hiddens), rows]: `scores` of each hidden vector alone (no short-term mix).

        An updater that keeps the default `scores` (cosine with `query`) gets
        one matrix product for all of them; one that overrides `scores` gets
        its own `scores`, row by row.
        """
        n = len(catalogue.rows()[0])
        if not hiddens:
            return np.zeros((0, n))
        if type(self).scores is not InterestUpdater.scores:
            zero = np.zeros(catalogue.dim, dtype=np.float32)
            return np.stack([self.scores(h, zero, catalogue, 0.0) for h in hiddens])
        queries = np.stack([self.query(h) for h in hiddens])
        return catalogue.scores_many(queries)

    def readable_directions(self, hiddens: list[np.ndarray], catalogue: Catalogue) -> np.ndarray:
        """[len(hiddens), dim] unit directions in the catalogue's text space, to read tags from.

        For the default updaters that is `query`. An updater that ranks in an
        item space of its own (overrides `scores`) is read from what it
        recommends: the softmax-weighted mean text vector of its
        `READABLE_TOP` best items, so the tags a delta shows follow the
        list, not a direction the model never ranks by.
        """
        if not hiddens:
            return np.zeros((0, catalogue.dim), dtype=np.float32)
        if type(self).scores is InterestUpdater.scores:
            return np.stack([self.query(h) for h in hiddens]).astype(np.float32)
        _, matrix, _ = catalogue.rows()
        out = np.zeros((len(hiddens), catalogue.dim), dtype=np.float32)
        for r, row in enumerate(self.scores_many(hiddens, catalogue)):
            ok = np.flatnonzero(np.isfinite(row))
            if not ok.size:
                continue
            top = ok[np.argsort(-row[ok], kind="stable")[:READABLE_TOP]]
            w = np.exp(row[top] - row[top].max())
            v = (w / w.sum()) @ matrix[top]
            norm = float(np.linalg.norm(v))
            if norm > 1e-12:
                out[r] = v / norm
        return out

    def rank(
        self,
        hidden: np.ndarray,
        short: np.ndarray,
        catalogue: Catalogue,
        k: int,
        exclude: Collection[str],
        short_weight: float,
    ) -> list[Ranked]:
        """The k best catalogue items not in ``exclude``, best first (`models.ranking.top_k`)."""
        ids = catalogue.rows()[0]
        scores = self.scores(hidden, short, catalogue, short_weight)
        return top_k(ids, scores, k, catalogue.rows_of(exclude))


def mix(mid: np.ndarray, short: np.ndarray, short_weight: float) -> np.ndarray:
    """Unit vector of ``(1 - w) * mid + w * short`` (zeros when that is zero).

    >>> [round(float(x), 3) for x in mix(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5)]
    [0.707, 0.707]
    """
    q = (1.0 - short_weight) * mid + short_weight * short
    norm = float(np.linalg.norm(q))
    return (q / norm).astype(np.float32) if norm > 1e-12 else np.zeros_like(q, dtype=np.float32)


class TimeDecayUpdater(InterestUpdater):
    """An exponentially time-decayed sum of weighted item embeddings.

    The hidden state is ``sum_i w_i * 2**(-(t_ref - t_i) / half_life) * e_i``
    with ``t_ref`` the latest event time seen. A late (out-of-order) event is
    added with the decay it would have had, so the state does not depend on
    arrival order: replaying events shuffled gives the same vector.

    The half-life is a setting, not part of the name: a worker restarted
    with another half-life keeps every user's sum and decays it at the new
    rate from then on.

    Parameters
    ----------
    half_life_s
        Event-time seconds after which an event counts half.

    >>> up = TimeDecayUpdater(half_life_s=10.0)
    >>> h, t = up.apply(up.initial(2), None, np.array([1.0, 0.0]), 1.0, 0.0)
    >>> h, t = up.apply(h, t, np.array([0.0, 1.0]), 1.0, 10.0)
    >>> h.tolist(), t
    ([0.5, 1.0], 10.0)
    >>> up.apply(h, t, np.array([1.0, 0.0]), 1.0, 0.0)[0].tolist()  # late event
    [1.0, 1.0]
    """

    name = "time-decay"
    order_independent = True

    def __init__(self, half_life_s: float = 3 * 86400.0) -> None:
        if not half_life_s > 0 or not np.isfinite(half_life_s):
            raise ValueError("half_life_s must be a positive number")
        self.half_life_s = float(half_life_s)

    def __repr__(self) -> str:
        return f"TimeDecayUpdater(half_life_s={self.half_life_s:g})"

    def initial(self, dim: int) -> np.ndarray:
        return np.zeros(dim, dtype=np.float32)

    def apply(
        self,
        hidden: np.ndarray,
        hidden_ts: float | None,
        item: np.ndarray,
        weight: float,
        ts: float,
    ) -> tuple[np.ndarray, float]:
        item = np.asarray(item, dtype=np.float32)
        if hidden_ts is None or ts >= hidden_ts:
            decay = 1.0 if hidden_ts is None else self._decay(ts - hidden_ts)
            return (hidden * np.float32(decay) + np.float32(weight) * item), ts
        late = self._decay(hidden_ts - ts)
        return (hidden + np.float32(weight * late) * item), hidden_ts

    def merge(
        self,
        a: np.ndarray,
        a_ts: float | None,
        a_mass: float,
        b: np.ndarray,
        b_ts: float | None,
        b_mass: float,
    ) -> tuple[np.ndarray, float | None]:
        """Two decayed sums merge into their sum, both decayed to the later time."""
        if a_ts is None or b_ts is None:
            return (np.asarray(a) + np.asarray(b)).astype(
                np.float32
            ), a_ts if b_ts is None else b_ts
        ts = max(a_ts, b_ts)
        da, db = self._decay(ts - a_ts), self._decay(ts - b_ts)
        return (np.float32(da) * a + np.float32(db) * b).astype(np.float32), ts

    def query(self, hidden: np.ndarray) -> np.ndarray:
        # sqrt(h . h) as np.linalg.norm computes it for a vector, bit for bit,
        # without its wrapper: the core asks this many times per event.
        norm = math.sqrt(float(hidden.dot(hidden))) if hidden.ndim == 1 else np.linalg.norm(hidden)
        if norm < 1e-12 or not np.isfinite(norm):
            return np.zeros_like(hidden)
        return (hidden / norm).astype(np.float32)

    def _decay(self, dt: float) -> float:
        return float(2.0 ** (-dt / self.half_life_s))
