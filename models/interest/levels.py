"""Short, mid and long-term interest levels and how much each counts.

- short-term: the sliding window's direction (`models.window.window_vector`);
- mid-term: the user's interests, composed (`models.interest.composition`);
- long-term: a slowly moving profile, a time-decayed sum of item vectors
  with a long half-life (`update_long`), kept in the state.

`level_weights` gives each level's share of the ranking from how long the
user was away before their latest event: a user back after a month leans
on the long-term level, and shifts back to the short and mid-term levels as
new events arrive (the gap shrinks again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = ("short", "mid", "long")


@dataclass(frozen=True)
class LevelSpec:
    """Settings of the levels (not learned state).

    Parameters
    ----------
    short_weight
        The short-term level's share while the user is active.
    long_weight
        The long-term level's share while the user is active.
    long_return_weight
        The long-term level's share after a long absence (approached as the
        gap before the latest event grows; the other two shrink in proportion).
    return_scale_s
        Gap (event-time seconds) at which the long-term share has gone
        ``1 - 1/e`` of the way from ``long_weight`` to ``long_return_weight``.
    long_half_life_s
        Half-life of the long-term profile.
    learned_short_weight
        ``short_weight`` for an updater that ranks in an item space of its
        own (a learned model): its state already carries the recent events,
        and mixing in the window's text-space scores costs it accuracy
        (MovieLens-100K, the four-head model, several interests: NDCG@10
        0.0759 with the short level at 0.3, 0.1173 without; README, "The
        learned updater with several interests").
    """

    short_weight: float = 0.3
    long_weight: float = 0.1
    long_return_weight: float = 0.6
    return_scale_s: float = 14 * 86400.0
    long_half_life_s: float = 180 * 86400.0
    learned_short_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("short_weight", "long_weight", "long_return_weight", "learned_short_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if max(self.short_weight, self.learned_short_weight) + self.long_weight > 1.0:
            raise ValueError(
                "short_weight (or learned_short_weight) + long_weight must be at most 1"
            )
        if not self.return_scale_s > 0 or not self.long_half_life_s > 0:
            raise ValueError("return_scale_s and long_half_life_s must be positive")


def level_weights(gap_s: float | None, spec: LevelSpec, learned: bool = False) -> dict[str, float]:
    """Each level's share (summing to 1) after a gap of ``gap_s`` before the latest event.

    ``learned``: for an updater with an item space of its own, whose short
    share is ``spec.learned_short_weight``.

    >>> spec = LevelSpec(short_weight=0.3, long_weight=0.1, long_return_weight=0.6)
    >>> level_weights(0.0, spec)
    {'short': 0.3, 'mid': 0.6, 'long': 0.1}
    >>> {k: round(v, 2) for k, v in level_weights(1e12, spec).items()}
    {'short': 0.13, 'mid': 0.27, 'long': 0.6}
    """
    gap = 0.0 if gap_s is None or gap_s < 0 else float(gap_s)
    pull = 1.0 - math.exp(-gap / spec.return_scale_s)
    long = (
        spec.long_weight
        + (max(spec.long_return_weight, spec.long_weight) - spec.long_weight) * pull
    )
    rest = 1.0 - spec.long_weight
    scale = (1.0 - long) / rest if rest > 0 else 0.0
    short = (spec.learned_short_weight if learned else spec.short_weight) * scale
    return {"short": short, "mid": 1.0 - short - long, "long": long}


def update_long(
    profile: np.ndarray,
    profile_ts: float | None,
    item: np.ndarray,
    weight: float,
    ts: float,
    half_life_s: float,
) -> tuple[np.ndarray, float]:
    """The long-term profile after one event: a decayed sum, independent of arrival order.

    >>> p, t = update_long(np.zeros(2), None, np.array([1.0, 0.0]), 1.0, 0.0, 10.0)
    >>> update_long(p, t, np.array([0.0, 1.0]), 1.0, 10.0, 10.0)[0].tolist()
    [0.5, 1.0]
    """
    item = np.asarray(item, dtype=np.float32)
    profile = np.asarray(profile, dtype=np.float32)
    if profile.shape != item.shape:
        profile = np.zeros_like(item)
    if profile_ts is None or ts >= profile_ts:
        decay = 1.0 if profile_ts is None else 2.0 ** (-(ts - profile_ts) / half_life_s)
        return profile * np.float32(decay) + np.float32(weight) * item, ts
    late = 2.0 ** (-(profile_ts - ts) / half_life_s)
    return profile + np.float32(weight * late) * item, profile_ts


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to unit length (zeros stay zeros)."""
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12 or not math.isfinite(norm):
        return np.zeros_like(vector, dtype=np.float32)
    return (np.asarray(vector) / norm).astype(np.float32)
