"""Several interests per user: decomposition of events, composition of scores.

A user's mid-term interest is a small set of `Interest` values, each one
hidden vector of the core's updater (a time-decayed sum, or a learned GRU
state: the updater's own "head") with a weight. `absorb` routes one event
(or one query phrase) to the closest interest, by the cosine of the item's
catalogue vector with each interest's direction (`InterestUpdater.query`),
and moves it; an event far from all of them opens a new interest. Weights
are event masses decayed with event time; interests that come close merge
(`InterestUpdater.merge`), and the count is bounded by merging the closest
pair. `compose` mixes the interests' score vectors by softmax weights, so a
user who likes jazz documentaries and horror gets both, in proportion.

With ``max_interests = 1`` the decomposition is the single-vector state of
earlier versions, exactly: every event moves the one interest.

An updater whose interests share one state (``updater.shared_state``: a
learned model, its interests query heads over its GRU state) decomposes
differently: every event moves the one shared state, and the interests are
heads of it (one head: one interest). The event's
mass goes to the head that scores its item highest, which opens as a new
interest if the user had none of that head (`_absorb_heads`); the rest
(decay, merging close interests, the bound) is as above. With
``max_interests = 1`` its one interest ranks by every head at once, as the
model was trained to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.update import InterestUpdater

#: The ways `compose` can mix the interests' scores (`CompositionSpec.mode`).
COMPOSE_MODES = ("softmax", "quota")

#: The smallest mass an interest keeps (an interest opened by a negative event).
MIN_MASS = 1e-6


@dataclass(frozen=True, slots=True)
class Interest:
    """One of a user's interests: an updater hidden vector and its weight.

    Attributes
    ----------
    hidden, hidden_ts
        The updater's hidden vector for this interest and its event time.
    mass, mass_ts
        The decayed sum of the positive event weights routed here, and the
        event time it refers to.
    events
        Events (and query phrases) routed here.
    """

    hidden: np.ndarray
    hidden_ts: float | None
    mass: float
    mass_ts: float | None
    events: int = 0


@dataclass(frozen=True)
class CompositionSpec:
    """Settings of the decomposition (not learned state).

    Parameters
    ----------
    max_interests
        Bound on the interests per user; 1 is the single-vector state.
    open_below
        An event whose cosine to every interest's direction is below this
        opens a new interest (while there is room; else the closest moves).
    merge_above
        Two interests whose directions' cosine is above this merge.
    half_life_s
        Event-time half-life of an interest's mass.
    temperature
        Softmax temperature of `compose`, in standard deviations of score.
    mode
        How `compose` mixes the interests: ``"softmax"`` (the log-sum-exp of
        the interests' z-scores shifted by their log-weights) or ``"quota"``
        (each interest fills a share of the ranking equal to its weight,
        `compose_quota`, the weights first sharpened by a softmax of their
        logs at ``temperature``: ``w ** (1 / T)``, normalised).
    """

    max_interests: int = 12
    open_below: float = 0.7
    merge_above: float = 0.85
    half_life_s: float = 30 * 86400.0
    temperature: float = 0.5
    mode: str = "softmax"

    def __post_init__(self) -> None:
        if self.mode not in COMPOSE_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMPOSE_MODES)}, got {self.mode!r}")
        if self.max_interests < 1:
            raise ValueError("max_interests must be >= 1")
        if not -1.0 <= self.open_below <= 1.0 or not -1.0 <= self.merge_above <= 1.0:
            raise ValueError("open_below and merge_above are cosines, within [-1, 1]")
        if not self.half_life_s > 0 or not self.temperature > 0:
            raise ValueError("half_life_s and temperature must be positive")


def directions(interests: tuple[Interest, ...], updater: InterestUpdater) -> np.ndarray:
    """[n, dim] unit directions of the interests in the catalogue's space (zeros: undefined)."""
    if not interests:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([updater.query(i.hidden) for i in interests])


def weights(interests: tuple[Interest, ...], ts: float | None, spec: CompositionSpec) -> np.ndarray:
    """Each interest's share of the user, its mass decayed to event time ``ts``; sums to 1.

    >>> spec = CompositionSpec(half_life_s=10.0)
    >>> two = (Interest(np.ones(1), 0.0, 1.0, 0.0), Interest(np.ones(1), 0.0, 1.0, 10.0))
    >>> [round(float(w), 3) for w in weights(two, 10.0, spec)]
    [0.333, 0.667]
    """
    if not interests:
        return np.zeros(0)
    masses = np.array([_decayed(i.mass, i.mass_ts, ts, spec) for i in interests])
    masses = np.maximum(masses, MIN_MASS)
    return masses / masses.sum()


def absorb(
    interests: tuple[Interest, ...],
    direction: np.ndarray,
    item: np.ndarray,
    weight: float,
    ts: float,
    updater: InterestUpdater,
    spec: CompositionSpec,
) -> tuple[tuple[Interest, ...], int]:
    """Route one event to an interest and move it; returns the interests and the index moved.

    ``direction`` is the item's (or phrase's) vector in the catalogue's space,
    used for routing; ``item`` is what the updater's ``apply`` takes
    (`InterestUpdater.represent`). A positive event opens a new interest
    when it is far from all (cosine below ``spec.open_below``) and there is
    room; a negative one only ever moves the closest. After the move, an
    interest that came within ``spec.merge_above`` of another merges with it.
    """
    if updater.shared_state:
        return _absorb_heads(interests, item, weight, ts, updater, spec)
    mass = max(float(weight), 0.0)
    sims = _cosines(interests, direction, updater)
    best = int(np.argmax(sims)) if len(sims) else -1
    far = best < 0 or sims[best] < spec.open_below
    if best < 0 or (far and weight > 0 and len(interests) < spec.max_interests):
        hidden, hidden_ts = updater.apply(updater.initial(len(direction)), None, item, weight, ts)
        fresh = Interest(hidden, hidden_ts, max(mass, MIN_MASS), ts, 1)
        return _merge_close((*interests, fresh), len(interests), updater, spec)
    cur = interests[best]
    hidden, hidden_ts = updater.apply(cur.hidden, cur.hidden_ts, item, weight, ts)
    moved = _credited(cur, hidden, hidden_ts, mass, ts, spec)
    out = (*interests[:best], moved, *interests[best + 1 :])
    return _merge_close(out, best, updater, spec)


def _credited(
    cur: Interest,
    hidden: np.ndarray,
    hidden_ts: float | None,
    mass: float,
    ts: float,
    spec: CompositionSpec,
) -> Interest:
    """``cur`` moved to ``hidden`` with an event of ``mass`` at ``ts`` added to its decayed mass."""
    mass_ts = ts if cur.mass_ts is None else max(cur.mass_ts, ts)
    total = _decayed(cur.mass, cur.mass_ts, mass_ts, spec) + mass * _decay(mass_ts - ts, spec)
    return Interest(hidden, hidden_ts, total, mass_ts, cur.events + 1)


def _absorb_heads(
    interests: tuple[Interest, ...],
    item: np.ndarray,
    weight: float,
    ts: float,
    updater: InterestUpdater,
    spec: CompositionSpec,
) -> tuple[tuple[Interest, ...], int]:
    """`absorb` for heads of one shared state: step it once, credit the event's best head.

    The head is chosen on the state before the event (what training's next-item
    rule does); with no room for its head, or for a negative event, the best
    of the user's heads takes it.
    """
    mass = max(float(weight), 0.0)
    if interests:
        prev, prev_ts = interests[0].hidden, interests[0].hidden_ts
    else:
        prev, prev_ts = updater.initial(0), None
    hidden, hidden_ts = updater.apply(prev, prev_ts, item, weight, ts)
    if spec.max_interests == 1:
        heads = [-1] * len(interests)
        want = -1
    else:
        heads = [updater.head_of(i.hidden) for i in interests]
        fit = updater.head_scores(prev, item)
        want = int(np.argmax(fit))
        if want not in heads and heads and (weight <= 0 or len(heads) >= spec.max_interests):
            own = [k for k in heads if k >= 0]
            want = max(own, key=lambda k: fit[k]) if own else heads[0]
    out = []
    moved = heads.index(want) if want in heads else len(interests)
    for n, cur in enumerate(interests):
        mine = updater.with_head(hidden, heads[n])
        if n == moved:
            out.append(_credited(cur, mine, hidden_ts, mass, ts, spec))
        else:
            out.append(Interest(mine, hidden_ts, cur.mass, cur.mass_ts, cur.events))
    if moved == len(interests):
        out.append(Interest(updater.with_head(hidden, want), hidden_ts, max(mass, MIN_MASS), ts, 1))
    return _merge_close(tuple(out), moved, updater, spec)


def compose(
    scores: list[np.ndarray], shares: np.ndarray, temperature: float, mode: str = "softmax"
) -> np.ndarray:
    """Softmax-weighted composition of per-interest score vectors.

    Each interest's scores are standardised over the catalogue (so a
    learned model's dot products and cosines mix alike), then combined as
    ``T * log(sum_k p_k * exp(z_k / T))``: near the maximum over interests,
    each shifted by ``T * log p_k``, so the top of a lighter interest still
    comes through, in proportion to its weight. One interest: its z-scores.
    Non-finite entries (removed items) stay ``-inf``.

    >>> a, b = np.array([3.0, 0.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0, 0.0])
    >>> composed = compose([a, b], np.array([0.5, 0.5]), 0.5)
    >>> bool(composed[0] == composed[1] and composed[0] > composed[2])
    True
    """
    if not scores:
        return np.zeros(0)
    zs = standardise_rows(np.asarray(scores))
    return compose_standardised(zs, shares, temperature, mode)


def compose_standardised(
    zs: np.ndarray, shares: np.ndarray, temperature: float, mode: str = "softmax"
) -> np.ndarray:
    """`compose` of score vectors already standardised: ``zs`` is [interests, items].

    For a ranking that scores only some items (`models.ann`): their z-scores
    come from the whole catalogue's moments, so they are not standardised
    again over the few. ``"softmax"`` is per item and gives those items the
    values `compose` gives them over the whole catalogue; ``"quota"`` ranks
    within each interest, so only the whole catalogue gives its values.
    """
    if len(zs) == 0:
        return np.zeros(0)
    if len(zs) == 1:
        return zs[0]
    if mode == "quota":
        return compose_quota(zs, _tempered(shares, temperature))
    alive = np.isfinite(zs).all(axis=0)
    logits = zs / temperature + np.log(np.asarray(shares, dtype=np.float64))[:, None]
    logits = np.where(alive, logits, 0.0)
    top = logits.max(axis=0)
    out = temperature * (top + np.log(np.exp(logits - top).sum(axis=0)))
    return np.where(alive, out, -np.inf)


def compose_quota(zs: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Interests take turns down the ranking, each as often as its share.

    ``zs`` is [interests, items] of z-scores. Item ``i``'s place in interest
    ``k``'s own ranking is ``r_k(i)`` (0 = best); its slot is
    ``(r_k(i) + 0.5) / share_k`` and it ranks by its best slot over the
    interests (Sainte-Laguë's divisors), so the top ``n`` holds about
    ``n * share_k`` items of each interest whatever the spread of their
    scores: a tight cluster of a heavy interest cannot crowd out a lighter
    one. The returned values keep a z-score scale (so levels mix as with
    ``softmax``): the item at composed rank ``r`` gets the share-weighted
    mean of the interests' ``r``-th best z-scores (less ``1e-9 * r``, so
    that ties keep the order). Non-finite entries stay
    ``-inf``.

    >>> zs = np.array([[5.0, 4.9, 4.8, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0, 1.0, 0.5]])
    >>> order = np.argsort(-compose_quota(zs, np.array([0.6, 0.4])), kind="stable")
    >>> order[:5].tolist()  # 3 of the heavy interest for 2 of the light one, in turn
    [0, 3, 1, 4, 2]
    """
    alive = np.isfinite(zs).all(axis=0)
    n = zs.shape[1]
    live = np.where(alive[None, :], zs, -np.inf)
    order = np.argsort(-live, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(zs.shape[0])[:, None]
    ranks[rows, order] = np.arange(n)[None, :]
    p = np.maximum(np.asarray(shares, dtype=np.float64), 1e-12)
    slots = (ranks + 0.5) / p[:, None]
    best = slots.min(axis=0)
    typical = (p[:, None] * np.take_along_axis(live, order, axis=1)).sum(axis=0) / p.sum()
    # Strictly decreasing, so equal typical values keep the composed order.
    typical = typical - 1e-9 * np.arange(n)
    composed_rank = np.empty(n, dtype=np.int64)
    composed_rank[np.argsort(best, kind="stable")] = np.arange(n)
    return np.where(alive, typical[composed_rank], -np.inf)


def _tempered(shares: np.ndarray, temperature: float) -> np.ndarray:
    """The softmax of the log-shares at ``temperature``: ``p ** (1 / T)``, normalised.

    >>> _tempered(np.array([0.6, 0.3, 0.1]), 1.0).round(3).tolist()
    [0.6, 0.3, 0.1]
    >>> _tempered(np.array([0.6, 0.3, 0.1]), 0.5).round(3).tolist()
    [0.783, 0.196, 0.022]
    """
    p = np.maximum(np.asarray(shares, dtype=np.float64), 1e-12) ** (1.0 / temperature)
    return p / p.sum()


def standardise(scores: np.ndarray) -> np.ndarray:
    """``(s - mean) / std`` over the finite entries; others ``-inf``; constant scores give zeros.

    >>> standardise(np.array([1.0, 3.0, -np.inf])).tolist()
    [-1.0, 1.0, -inf]
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        return np.full(s.shape, -np.inf)
    mean = float(s[finite].mean())
    std = float(s[finite].std())
    z = (s - mean) / std if std > 1e-12 else np.zeros_like(s)
    return np.where(finite, z, -np.inf)


def standardise_rows(scores: np.ndarray) -> np.ndarray:
    """`standardise` of each row of ``scores`` ([q, n]), rows of only finite scores at once.

    The same numbers as ``np.stack([standardise(r) for r in scores])``: a
    row's mean and std reduce along the row as the one-row call does; rows
    with a non-finite score go through `standardise` itself.

    >>> s = np.array([[1.0, 3.0], [2.0, -np.inf], [5.0, 5.0]])
    >>> standardise_rows(s).tolist()
    [[-1.0, 1.0], [0.0, -inf], [0.0, 0.0]]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [q, n], got shape {s.shape}")
    out = np.empty_like(s)
    finite = np.isfinite(s).all(axis=1)
    if finite.any():
        block = s[finite]
        mean = block.mean(axis=1, keepdims=True)
        std = block.std(axis=1, keepdims=True)
        flat = std <= 1e-12
        z = (block - mean) / np.where(flat, 1.0, std)
        z[flat[:, 0]] = 0.0
        out[finite] = z
    for row in np.flatnonzero(~finite):
        out[row] = standardise(s[row])
    return out


def _cosines(
    interests: tuple[Interest, ...], direction: np.ndarray, updater: InterestUpdater
) -> np.ndarray:
    if not interests:
        return np.zeros(0)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-12:
        return np.zeros(len(interests))
    return directions(interests, updater) @ (np.asarray(direction, dtype=np.float32) / norm)


def _merge_close(
    interests: tuple[Interest, ...], moved: int, updater: InterestUpdater, spec: CompositionSpec
) -> tuple[tuple[Interest, ...], int]:
    """Merge the moved interest into one it came close to; then bound the count."""
    if len(interests) > 1:
        dirs = directions(interests, updater)
        sims = dirs @ dirs[moved]
        sims[moved] = -np.inf
        other = int(np.argmax(sims))
        if sims[other] >= spec.merge_above:
            interests, moved = _merge(interests, moved, other, updater, spec)
    while len(interests) > spec.max_interests:
        dirs = directions(interests, updater)
        sims = dirs @ dirs.T
        np.fill_diagonal(sims, -np.inf)
        a, b = divmod(int(np.argmax(sims)), len(interests))
        interests, moved = _merge(interests, a, b, updater, spec, moved)
    return interests, moved


def _merge(
    interests: tuple[Interest, ...],
    a: int,
    b: int,
    updater: InterestUpdater,
    spec: CompositionSpec,
    moved: int | None = None,
) -> tuple[tuple[Interest, ...], int]:
    """Interests ``a`` and ``b`` as one, at the lower index; returns the moved one's new index."""
    a, b = min(a, b), max(a, b)
    x, y = interests[a], interests[b]
    ts = _latest(x.mass_ts, y.mass_ts)
    mx, my = _decayed(x.mass, x.mass_ts, ts, spec), _decayed(y.mass, y.mass_ts, ts, spec)
    hidden, hidden_ts = updater.merge(x.hidden, x.hidden_ts, mx, y.hidden, y.hidden_ts, my)
    merged = Interest(hidden, hidden_ts, mx + my, ts, x.events + y.events)
    out = (*interests[:a], merged, *interests[a + 1 : b], *interests[b + 1 :])
    if moved is None or moved in (a, b):
        return out, a
    return out, moved - (1 if moved > b else 0)


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def _decayed(mass: float, mass_ts: float | None, ts: float | None, spec: CompositionSpec) -> float:
    if mass_ts is None or ts is None or ts <= mass_ts:
        return mass
    return mass * _decay(ts - mass_ts, spec)


def _decay(dt: float, spec: CompositionSpec) -> float:
    return float(2.0 ** (-max(dt, 0.0) / spec.half_life_s))
