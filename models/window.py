"""The per-user sliding window over event time.

Kept sorted by event time so that late events land where they belong; the
window holds at most ``max_events`` events and none older than ``max_age_s``
before the newest one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from models.catalogue import Catalogue
from models.state import WindowEntry


@dataclass(frozen=True)
class WindowSpec:
    """Bounds of the window: last N events and/or last T seconds of event time."""

    max_events: int = 50
    max_age_s: float | None = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError("max_age_s must be positive")


def slide(
    window: tuple[WindowEntry, ...], entry: WindowEntry, spec: WindowSpec
) -> tuple[WindowEntry, ...]:
    """Insert ``entry`` in event-time order, then evict by count and age.

    >>> spec = WindowSpec(max_events=2, max_age_s=10)
    >>> w = slide((), WindowEntry("a", "view", 5.0, 1.0), spec)
    >>> w = slide(w, WindowEntry("b", "view", 1.0, 1.0), spec)  # late, still in range
    >>> [e.item_id for e in w]
    ['b', 'a']
    >>> [e.item_id for e in slide(w, WindowEntry("c", "view", 14.0, 1.0), spec)]
    ['a', 'c']
    """
    keys = [e.ts for e in window]
    pos = bisect.bisect_right(keys, entry.ts)
    merged = (*window[:pos], entry, *window[pos:])
    if spec.max_age_s is not None:
        horizon = merged[-1].ts - spec.max_age_s
        merged = tuple(e for e in merged if e.ts >= horizon)
    return merged[-spec.max_events :]


def window_vector(window: tuple[WindowEntry, ...], catalogue: Catalogue) -> np.ndarray:
    """Weighted mean direction of the window's items (the short-term interest)."""
    pairs = [(e.weight, catalogue.vector(e.item_id)) for e in window]
    pairs = [(w, v) for w, v in pairs if v is not None]
    if not pairs:
        return np.zeros(catalogue.dim, dtype=np.float32)
    weights = np.array([w for w, _ in pairs], dtype=np.float32)
    # Summed row after row in float32, as a running total would be.
    total = (weights[:, None] * np.stack([v for _, v in pairs])).sum(axis=0)
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 1e-12 else total
