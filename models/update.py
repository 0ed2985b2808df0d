"""Interest updaters: how one event moves a user's interest state.

An updater is a small protocol so that the time-decayed rule here can be
replaced by a learned recurrent cell without touching the core.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from models.catalogue import Catalogue, Ranked


class InterestUpdater(Protocol):
    """Moves a hidden interest vector one event at a time.

    ``hidden_ts`` is the event time the hidden state refers to (None before
    the first event). Implementations must be pure: same inputs, same output.
    """

    name: str

    def initial(self, dim: int) -> np.ndarray: ...

    def apply(
        self,
        hidden: np.ndarray,
        hidden_ts: float | None,
        item: np.ndarray,
        weight: float,
        ts: float,
    ) -> tuple[np.ndarray, float]: ...

    def query(self, hidden: np.ndarray) -> np.ndarray:
        """The unit vector to rank items with (all zeros when undefined)."""
        ...


@runtime_checkable
class ItemSpaceUpdater(Protocol):
    """An updater with an item space of its own (a learned model).

    The core feeds `apply` with ``represent(item_id, catalogue vector)``
    instead of the catalogue vector, ranks with `top_k` instead of the
    catalogue's cosine against `query`, and sizes the state by `initial`
    rather than by the catalogue width. `query` still returns a direction in
    the catalogue's space (used for the readable interest summary).
    """

    def represent(self, item_id: str, vec: np.ndarray) -> np.ndarray: ...

    def top_k(
        self, hidden: np.ndarray, catalogue: Catalogue, k: int, exclude: Collection[str]
    ) -> list[Ranked]: ...


class TimeDecayUpdater:
    """An exponentially time-decayed sum of weighted item embeddings.

    The hidden state is ``sum_i w_i * 2**(-(t_ref - t_i) / half_life) * e_i``
    with ``t_ref`` the latest event time seen. A late (out-of-order) event is
    added with the decay it would have had, so the state does not depend on
    arrival order: replaying events shuffled gives the same vector.

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

    def __init__(self, half_life_s: float = 3 * 86400.0) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self.half_life_s = float(half_life_s)
        self.name = f"time-decay(half_life_s={self.half_life_s:g})"

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

    def query(self, hidden: np.ndarray) -> np.ndarray:
        norm = float(np.linalg.norm(hidden))
        if norm < 1e-12:
            return np.zeros_like(hidden)
        return (hidden / norm).astype(np.float32)

    def _decay(self, dt: float) -> float:
        return float(2.0 ** (-dt / self.half_life_s))
