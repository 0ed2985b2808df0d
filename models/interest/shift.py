"""Interest shift detection: a per-user Page-Hinkley test on the window's block distance.

The signal (`block_distance`) is computed after each positive event from
what the core already keeps, the sliding window and the catalogue: the
cosine distance between the direction of the user's last ``recent``
positive events (the current one included) and that of the ``reference``
positive events before them, each weighted by its event weight. While a
user stays with one taste, both blocks point the same way and the distance
stays at its own level (off-taste events are scattered, so they barely
move a block); when the user moves to something new, the recent block
turns and the distance jumps for a few events; it falls back once the
reference block has caught up, so a move back (a recurring interest) jumps
it again. A raw per-event signal (the distance between consecutive items)
does not jump at a shift at all: consecutive items of the new taste are as
close to each other as those of the old one.

The detector (`observe`) is a compact port of ``river.drift.PageHinkley``
(one-sided, ``mode="up"`` by default): its whole state is a frozen
`DetectorState` of six numbers, with `DetectorState.to_tuple` /
`DetectorState.from_tuple` for the user state's bytes. The parity with
river's class on seeded streams is tested (``tests/test_shift.py``). After a
flag the state is reset at once, so the user's next shift can be detected
(river resets lazily, at the next update; the flags are the same).

The choice (this signal, Page-Hinkley rather than ADWIN or KSWIN) and the
settings in `ShiftSpec` come from ``benchmarks/shift_detection.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.catalogue import Catalogue
    from models.state import WindowEntry

MODES = ("up", "down", "both")


@dataclass(frozen=True)
class ShiftSpec:
    """Settings of the shift detector (not learned state).

    Parameters
    ----------
    recent
        Positive window events in the recent block (the current one included).
    reference
        Positive window events in the reference block, just before the recent one.
    min_reference
        Fewer reference events than this: no signal yet (a new user).
    threshold
        Page-Hinkley's lambda: how far the cumulative excess of the signal
        over its running mean must climb above its lowest point to flag.
    delta
        Page-Hinkley's tolerance per observation: excess below it is drift noise.
    min_instances
        Observations since the last reset before a flag may be raised.
    alpha
        Forgetting factor of the cumulative sums (1: none, river's default is 1 - 1e-4).
    mode
        "up" flags a rise of the signal (a shift); "down" and "both" as river's.
    """

    recent: int = 5
    reference: int = 15
    min_reference: int = 3
    threshold: float = 0.8
    delta: float = 0.05
    min_instances: int = 5
    alpha: float = 1.0
    mode: str = "up"

    def __post_init__(self) -> None:
        if self.recent < 1 or self.reference < 1:
            raise ValueError("recent and reference must be >= 1")
        if not 1 <= self.min_reference <= self.reference:
            raise ValueError("min_reference must be within [1, reference]")
        if not self.threshold > 0 or self.delta < 0 or self.min_instances < 1:
            raise ValueError("threshold must be positive, delta >= 0, min_instances >= 1")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("alpha must be within (0, 1]")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True, slots=True)
class DetectorState:
    """A user's Page-Hinkley state since its last reset (six numbers).

    Attributes
    ----------
    n
        Observations since the last reset (or since the start).
    mean
        Their running mean.
    sum_up, min_up
        The cumulative excess over the mean (less ``delta`` each time) and
        its lowest value: a rise is ``sum_up - min_up``.
    sum_down, max_down
        The same for a fall (plus ``delta``) and its highest value.
    """

    n: int = 0
    mean: float = 0.0
    sum_up: float = 0.0
    min_up: float = 0.0
    sum_down: float = 0.0
    max_down: float = 0.0

    def to_tuple(self) -> tuple[int, float, float, float, float, float]:
        """The state as plain numbers, for the user state's bytes.

        >>> DetectorState(3, 0.5, 0.1, -0.2, 0.3, 0.4).to_tuple()
        (3, 0.5, 0.1, -0.2, 0.3, 0.4)
        """
        return astuple(self)

    @classmethod
    def from_tuple(cls, values: Sequence[float]) -> DetectorState:
        """The state `to_tuple` gave (a list read back from JSON works too).

        >>> DetectorState.from_tuple([3, 0.5, 0.1, -0.2, 0.3, 0.4])
        DetectorState(n=3, mean=0.5, sum_up=0.1, min_up=-0.2, sum_down=0.3, max_down=0.4)
        """
        if len(values) != 6:
            raise ValueError(f"a detector state has 6 numbers, got {len(values)}")
        n, *rest = values
        if int(n) != n or n < 0 or not all(math.isfinite(float(v)) for v in rest):
            raise ValueError(f"not a detector state: {list(values)!r}")
        return cls(int(n), *(float(v) for v in rest))


def observe(
    state: DetectorState | None, signal: float, spec: ShiftSpec
) -> tuple[DetectorState, bool]:
    """One observation of the signal: the new state, and whether a shift is flagged.

    Page-Hinkley as ``river.drift.PageHinkley.update``; on a flag the state
    returned is the fresh one (the next observation starts a new test).

    >>> spec = ShiftSpec(threshold=1.0, delta=0.0, min_instances=3)
    >>> state, flags = None, []
    >>> for x in [0.1] * 10 + [0.9] * 4:
    ...     state, flagged = observe(state, x, spec)
    ...     flags.append(flagged)
    >>> flags.index(True), state.n
    (11, 2)
    """
    s = state or DetectorState()
    x = float(signal)
    if not math.isfinite(x):
        return s, False
    n = s.n + 1
    mean = s.mean + (x - s.mean) / n
    dev = x - mean
    sum_up = spec.alpha * s.sum_up + dev - spec.delta
    sum_down = spec.alpha * s.sum_down + dev + spec.delta
    min_up = sum_up if s.n == 0 else min(s.min_up, sum_up)
    max_down = sum_down if s.n == 0 else max(s.max_down, sum_down)
    flagged = False
    if n >= spec.min_instances:
        up = sum_up - min_up > spec.threshold
        down = max_down - sum_down > spec.threshold
        flagged = {"up": up, "down": down, "both": up or down}[spec.mode]
    if flagged:
        return DetectorState(), True
    return DetectorState(n, mean, sum_up, min_up, sum_down, max_down), False


def blocks(
    window: Sequence[WindowEntry], catalogue: Catalogue, spec: ShiftSpec
) -> tuple[np.ndarray, np.ndarray] | None:
    """The recent and reference directions of ``window`` (unit vectors), or None.

    Positive-weight entries whose item the catalogue has, newest last; the
    recent block is the last ``spec.recent`` of them, the reference block
    the ``spec.reference`` before. None while there are fewer than
    ``spec.recent + spec.min_reference``. The two directions are also what a
    flag reports as the user's interest after and before the shift.
    """
    picked: list[tuple[float, np.ndarray]] = []
    for entry in reversed(window):
        if entry.weight <= 0:
            continue
        vec = catalogue.vector(entry.item_id)
        if vec is not None:
            picked.append((entry.weight, vec))
            if len(picked) == spec.recent + spec.reference:
                break
    if len(picked) < spec.recent + spec.min_reference:
        return None
    recent = _direction(picked[: spec.recent])
    reference = _direction(picked[spec.recent :])
    if not (recent.any() and reference.any()):
        return None
    return recent, reference


def block_distance(
    window: Sequence[WindowEntry], catalogue: Catalogue, spec: ShiftSpec
) -> float | None:
    """The signal: cosine distance between the window's recent and reference blocks (`blocks`).

    Computed once per positive event, on the window after the event (the
    core's `models.window.slide`); None when `blocks` is None. Events with a
    weight of zero or less (a skip, a bad rating) say what the user does not
    want, not where they went: the caller does not observe them.
    """
    pair = blocks(window, catalogue, spec)
    return None if pair is None else distance(*pair)


def distance(recent: np.ndarray, reference: np.ndarray) -> float:
    """``1 - cos`` of two unit directions (`blocks`' pair): the signal of `block_distance`.

    >>> distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    return float(1.0 - np.clip(recent @ reference, -1.0, 1.0))


def consecutive_distance(previous: np.ndarray | None, item: np.ndarray) -> float | None:
    """The raw baseline signal: cosine distance between an item and the user's previous one.

    >>> consecutive_distance(np.array([1.0, 0.0]), np.array([0.0, 2.0]))
    1.0
    >>> consecutive_distance(None, np.array([1.0, 0.0])) is None
    True
    """
    if previous is None:
        return None
    a, b = _unit(np.asarray(previous, dtype=np.float64)), _unit(np.asarray(item, dtype=np.float64))
    if not (a.any() and b.any()):
        return None
    return float(1.0 - np.clip(a @ b, -1.0, 1.0))


def _direction(weighted: list[tuple[float, np.ndarray]]) -> np.ndarray:
    total = np.zeros(weighted[0][1].shape, dtype=np.float64)
    for weight, vec in weighted:
        total += weight * np.asarray(vec, dtype=np.float64)
    return _unit(total)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12 or not math.isfinite(norm):
        return np.zeros_like(vector)
    return vector / norm
