"""Baselines scored by the evaluation harness.

Every model implements `Recommender`: ``fit(split, log, seed)`` learns from
all users' training events (tuning its few hyper-parameters on the
validation targets), then ``scores(users, phase)`` gives full-catalogue
scores for the ``phase`` target: "valid" with the training history, "test"
with the validation event fed in as well. Streaming models replay events in
time order, one at a time; none of them ever sees a target it is scored on.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from models.behaviour import Behaviour
from models.catalogue import Catalogue
from models.core import CoreParams, step
from models.core import scores as core_scores
from models.datasets import Interactions, Split, item_texts
from models.evaluation.metrics import evaluate
from models.state import UserState
from models.update import InterestUpdater, TimeDecayUpdater
from models.window import WindowSpec

if TYPE_CHECKING:
    from models.interest.topics import OnlineTopics

DAY = 86400.0
PHASES = ("valid", "test")


@runtime_checkable
class Recommender(Protocol):
    """What the harness needs from a model.

    Attributes
    ----------
    name
        Label in reports.
    params
        Hyper-parameters in use after `fit` (chosen ones when tuned), JSON-able.
    """

    name: str
    params: dict[str, Any]

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        """Learn from the training events (and tune on the validation targets)."""
        ...

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        """[len(users), n_items] scores for each user's ``phase`` target; higher is better."""
        ...


class ModelUnavailable(RuntimeError):
    """A model cannot run here (a missing optional dependency or artefact)."""


# ----------------------------------------------------------------------------- tuning


class _Tuned:
    """Grid search on the validation targets, keeping the best NDCG@k.

    Subclasses set ``self.grid`` (name -> candidate values) and implement
    ``_configure(**values)`` so that `scores` uses those values. Ties keep the
    first candidate, so the result is deterministic.
    """

    grid: dict[str, tuple[Any, ...]]
    params: dict[str, Any]
    tuning: list[dict[str, Any]]
    k: int = 10
    tune_users: int | None = 3000

    def _configure(self, **values: Any) -> None:
        raise NotImplementedError

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        raise NotImplementedError

    def _tune(self, split: Split, seed: int) -> None:
        names = list(self.grid)
        combos = [dict(zip(names, v, strict=True)) for v in itertools.product(*self.grid.values())]
        self.tuning = []
        if len(combos) == 1:
            self._configure(**combos[0])
            self.params = {**self.params, **combos[0]}
            return
        users = split.eval_users()
        if self.tune_users is not None and len(users) > self.tune_users:
            rng = np.random.default_rng(seed)
            users = np.sort(rng.choice(users, self.tune_users, replace=False))
        best, best_ndcg = combos[0], -1.0
        for combo in combos:
            self._configure(**combo)
            m = evaluate(self.scores, split, "valid", users=users, k=self.k)
            self.tuning.append({**combo, "valid_ndcg": m["ndcg"], "valid_hr": m["hr"]})
            if m["ndcg"] > best_ndcg:
                best, best_ndcg = combo, m["ndcg"]
        self._configure(**best)
        self.params = {**self.params, **best}


def _known_events(split: Split, phase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users, items, ts of every event a model may learn from before ``phase``.

    Train events of all users, plus all validation events for "test"; sorted
    by time, ties by user then position (a stable sort of the per-user rows).
    """
    users = np.concatenate(
        [np.full(len(s), u, dtype=np.int64) for u, s in enumerate(split.train)]
        or [np.zeros(0, dtype=np.int64)]
    )
    items = np.concatenate(split.train or [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    ts = np.concatenate(split.train_ts or [np.zeros(0)]).astype(np.float64)
    if phase == "test":
        has = split.valid >= 0
        users = np.append(users, np.flatnonzero(has))
        items = np.append(items, split.valid[has])
        ts = np.append(ts, split.valid_ts[has])
    elif phase != "valid":
        raise ValueError(f"phase must be 'valid' or 'test', not {phase!r}")
    order = np.argsort(ts, kind="stable")
    return users[order], items[order], ts[order]


def _phase_sequences(split: Split, phase: str) -> list[np.ndarray]:
    return [split.history(u, phase) for u in range(split.n_users)]


# ----------------------------------------------------------------------------- popularity


def decayed_counts(
    event_ts: np.ndarray,
    event_items: np.ndarray,
    at: np.ndarray,
    n_items: int,
    half_life_s: float,
) -> np.ndarray:
    """[len(at), n_items]: per query time, item counts over events at or before it.

    Each event counts ``2 ** (-(t - t_event) / half_life_s)`` (1 when the
    half-life is infinite). ``event_ts`` must be sorted. One sweep over the
    events in time order, as a streaming counter would hold them.

    >>> decayed_counts(np.array([0.0, 10.0]), np.array([0, 1]), np.array([10.0, 0.0]), 2, 10.0)
    array([[0.5, 1. ],
           [1. , 0. ]])
    """
    out = np.zeros((len(at), n_items))
    if len(at) == 0:
        return out
    order = np.argsort(at, kind="stable")
    ends = np.searchsorted(event_ts, at[order], side="right")
    counts = np.zeros(n_items)
    ref = float(at[order[0]])  # counts are scaled to 2 ** (-ref / half-life)
    start = 0
    for row, end in zip(order, ends, strict=True):
        t = float(at[row])
        if math.isinf(half_life_s):
            np.add.at(counts, event_items[start:end], 1.0)
            out[row] = counts
        else:
            if (t - ref) / half_life_s > 500.0:  # keep the exponents finite
                counts *= 2.0 ** (-(t - ref) / half_life_s)
                ref = t
            w = np.exp2((event_ts[start:end] - ref) / half_life_s)
            np.add.at(counts, event_items[start:end], w)
            out[row] = counts * 2.0 ** (-(t - ref) / half_life_s)
        start = end
    return out


class PopularityTimeDecayed(_Tuned):
    """Most popular items at the target's time, counts decayed with a half-life.

    With ``causal`` (the default) only events at or before the target's
    timestamp count, decayed from it: what a streaming counter would hold at
    that moment. Without, all known events count equally (plain most-popular).

    Parameters
    ----------
    half_lives_days
        Candidates, tuned on the validation targets; ``inf`` means no decay.
    causal
        Count only events up to the target's time.
    """

    deterministic = True

    def __init__(
        self,
        half_lives_days: Sequence[float] = (1.0, 3.0, 7.0, 14.0, 30.0, 90.0, math.inf),
        *,
        causal: bool = True,
        name: str = "pop-decay",
    ) -> None:
        self.name = name
        self.causal = causal
        self.grid = {"half_life_days": tuple(half_lives_days)}
        self.params = {"causal": causal}
        self.tuning = []
        self._half_life_s = math.inf
        self._events: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._split: Split | None = None

    def _configure(self, half_life_days: float) -> None:
        self._half_life_s = half_life_days * DAY

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self._split = split
        self._events = {phase: _known_events(split, phase) for phase in PHASES}
        self._tune(split, seed)

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        assert self._split is not None, "fit first"
        _, items, ts = self._events[phase]
        n = self._split.n_items
        if not self.causal:
            counts = np.bincount(items, minlength=n).astype(np.float64)
            return np.broadcast_to(counts, (len(users), n)).copy()
        at = self._split.target_ts(phase)[users]
        return decayed_counts(ts, items, at, n, self._half_life_s)


# ----------------------------------------------------------------------------- the core


def encode_catalogue(
    log: Interactions,
    encoder_cache: Path | None = None,
    cache_dir: Path | None = None,
    *,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """[n_items, 384] all-MiniLM-L6-v2 embeddings of `models.datasets.item_texts`.

    The export is made (or found) by ``ensure_exported(encoder_cache)``; the
    embeddings are cached in ``cache_dir`` (default: ``item-embeddings`` next
    to the default encoder cache), keyed by the export manifest and the texts
    (`models.encoder.embedding_cache`). ``texts`` (one per item, in dense
    order) replaces the title-and-genres lines, for a catalogue whose items
    have a text of their own (the synthetic workload's).
    """
    if texts is not None and len(texts) != log.n_items:
        raise ValueError(f"{len(texts)} texts for {log.n_items} items")
    try:
        from models.encoder import ensure_exported
        from models.encoder.embedding_cache import cached_embeddings
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise ModelUnavailable(f"the ONNX encoder cannot be imported: {exc}") from exc
    try:
        artifact = ensure_exported(encoder_cache)
    except Exception as exc:
        raise ModelUnavailable(f"no ONNX export of all-MiniLM-L6-v2: {exc}") from exc
    return cached_embeddings(list(texts or item_texts(log)), artifact, cache_dir)


class TimeDecayCore(_Tuned):
    """The time-decayed rule, replayed through the workers' pure core (`models.core.step`).

    Each user's training events go through ``step`` in micro-batches in time
    order; for "test" the validation event is one more step. Scores are
    `models.core.scores`, what ``step`` ranks with. Item vectors are the
    MiniLM embeddings of title and genres.

    Parameters
    ----------
    half_lives_days, short_term_weights
        Candidates for the updater's half-life and the window's share of the
        query, tuned on the validation targets.
    event_types
        Candidates for how ratings enter: "rating" (weight by stars, low
        ratings push away, as the workers do) or "view" (every rating a
        positive view).
    batch_size
        Events per ``step`` call.
    window
        The sliding window's bounds (the workers' default).
    embeddings
        [n_items, dim] item vectors; None encodes the catalogue (`encode_catalogue`).
    encoder_cache
        Folder of the ONNX export (None: the encoder's default cache).
    base
        The core's other settings (interests, levels, ...); the grid sets its
        updater and short-term weight. None: the workers' defaults.
    topics
        The catalogue's topic model (`models.interest.topics.OnlineTopics`),
        already fed the items, or None. It never changes a score, only the
        delta's summary, so it costs time per event but moves no metric.
    tie_mass_half_life
        Set the interests' mass half-life (``CompositionSpec.half_life_s``)
        to the updater's at every grid point, instead of keeping the base's.
    updater
        An updater to use instead of the time-decayed rule (a
        `models.learned.LearnedUpdater`); the half-lives then tune nothing of
        it (only the mass half-life, with ``tie_mass_half_life``).
    id_prefix
        Prefix of the catalogue's item ids (``"m"`` for a learned model
        trained with `interest-stream train`'s default ``--id-prefix``), so
        the updater finds its learned item embeddings.

    Attributes
    ----------
    cost
        After `fit`, of the chosen settings' replay: ``replay_s`` (wall time in
        ``step``), ``events`` applied and ``steps`` (calls), ``ms_per_event``.
    """

    deterministic = True

    def __init__(
        self,
        half_lives_days: Sequence[float] = (0.01, 0.05, 1.0, 30.0),
        short_term_weights: Sequence[float] = (0.0, 0.3, 0.6),
        event_types: Sequence[str] = ("rating",),
        *,
        batch_size: int = 16,
        window: WindowSpec | None = None,
        embeddings: np.ndarray | None = None,
        encoder_cache: Path | None = None,
        name: str = "time-decay-core",
        base: CoreParams | None = None,
        topics: OnlineTopics | None = None,
        tie_mass_half_life: bool = False,
        updater: InterestUpdater | None = None,
        id_prefix: str = "",
    ) -> None:
        self.name = name
        self.base = base or CoreParams()
        self.updater = updater
        self.id_prefix = id_prefix
        self.topics = topics
        self.tie_mass_half_life = tie_mass_half_life
        self.grid = {
            "half_life_days": tuple(half_lives_days),
            "event_type": tuple(event_types),
            "short_term_weight": tuple(short_term_weights),
        }
        self.batch_size = batch_size
        self.window = window or WindowSpec()
        self._embeddings = embeddings
        self._encoder_cache = encoder_cache
        self.params = {
            "batch_size": batch_size,
            "window_max_events": self.window.max_events,
            "window_max_age_s": self.window.max_age_s,
        }
        self.tuning = []
        self._replays: dict[tuple[float, str], dict[str, list[UserState | None]]] = {}
        self._costs: dict[tuple[float, str], dict[str, float]] = {}
        self.cost: dict[str, float] = {}
        self._key: tuple[float, str] = (math.inf, "rating")
        self._core = CoreParams()
        self._log: Interactions | None = None
        self._split: Split | None = None

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self._log, self._split = log, split
        vectors = self._embeddings
        if vectors is None:
            vectors = encode_catalogue(log, self._encoder_cache)
        self.catalogue = Catalogue(vectors.shape[1])
        self._ids = [f"{self.id_prefix}{i}" for i in log.item_ids]
        for i, item_id in enumerate(self._ids):
            self.catalogue.upsert(item_id, vectors[i], log.genres[i])
        self.catalogue.topics = self.topics
        # The catalogue's own (unit) rows, in dense order.
        self._matrix = np.stack([self.catalogue.vector(i) for i in self._ids])
        # split.train[u] is a prefix of the user's sequence: ratings line up by position.
        self._ratings = log.sequence_ratings()
        self._replays, self._costs = {}, {}
        self._tune(split, seed)
        self._replays = {self._key: self._replays[self._key]}  # free the others
        self.cost = self._costs[self._key]

    def _configure(self, half_life_days: float, event_type: str, short_term_weight: float) -> None:
        self._key = (half_life_days, event_type)
        base = self.base
        short = min(short_term_weight, 1.0 - base.levels.long_weight)
        composition = base.composition
        if self.tie_mass_half_life:
            composition = replace(composition, half_life_s=half_life_days * DAY)
        self._core = replace(
            base,
            window=self.window,
            updater=self.updater or TimeDecayUpdater(half_life_s=half_life_days * DAY),
            levels=replace(base.levels, short_weight=short),
            composition=composition,
        )
        if self._key not in self._replays:
            self._replays[self._key], self._costs[self._key] = self._replay(self._core, event_type)

    def time_replay(self, users: Sequence[int]) -> dict[str, float]:
        """The time in ``step`` of replaying ``users`` again with the chosen settings.

        The states are dropped; for timing variants against each other in
        the same conditions (interleaved, repeated), apart from the tuning.
        """
        return self._replay(self._core, self._key[1], users)[1]

    def _replay(
        self, params: CoreParams, event_type: str, users: Sequence[int] | None = None
    ) -> tuple[dict[str, list[UserState | None]], dict[str, float]]:
        """Per phase, per user (all, or ``users``): the state after the phase's history.

        And the wall time spent in ``step``, with the events and calls.
        """
        assert self._log is not None and self._split is not None
        log, split = self._log, self._split
        out: dict[str, list[UserState | None]] = {"valid": [], "test": []}
        spent, applied, steps = 0.0, 0, 0
        for u in range(split.n_users) if users is None else users:
            user_id = log.user_ids[u]
            events = [
                _behaviour(user_id, self._ids[i], event_type, t, f"{u}:{j}", r)
                for j, (i, t, r) in enumerate(
                    zip(split.train[u], split.train_ts[u], self._ratings[u], strict=False)
                )
            ]
            state: UserState | None = None
            for start in range(0, len(events), self.batch_size):
                batch = events[start : start + self.batch_size]
                t0 = time.perf_counter()
                state = step(state, batch, self.catalogue, batch[-1].ts, params).state
                spent += time.perf_counter() - t0
                applied, steps = applied + len(batch), steps + 1
            out["valid"].append(state)
            if split.valid[u] >= 0:
                j = len(events)
                event = _behaviour(
                    user_id,
                    self._ids[split.valid[u]],
                    event_type,
                    float(split.valid_ts[u]),
                    f"{u}:{j}",
                    self._ratings[u][j] if j < len(self._ratings[u]) else None,
                )
                t0 = time.perf_counter()
                state = step(state, [event], self.catalogue, event.ts, params).state
                spent += time.perf_counter() - t0
                applied, steps = applied + 1, steps + 1
            out["test"].append(state)
        cost = {
            "replay_s": spent,
            "events": applied,
            "steps": steps,
            "ms_per_event": 1000.0 * spent / max(applied, 1),
        }
        return out, cost

    @property
    def core_params(self) -> CoreParams:
        """The core's settings in use (after `fit`: the chosen ones)."""
        return self._core

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        states = self._replays[self._key][phase]
        out = np.zeros((len(users), self._matrix.shape[0]), dtype=np.float32)
        for row, u in enumerate(users):
            state = states[int(u)]
            if state is not None:
                s = core_scores(state, self.catalogue, self._core)
                out[row] = np.where(np.isfinite(s), s, -1e9)
        return out


def _behaviour(
    user_id: str, item_id: str, event_type: str, ts: float, event_id: str, rating: float | None
) -> Behaviour:
    if event_type == "rating":
        return Behaviour(user_id, item_id, "rating", float(ts), event_id, rating=float(rating))
    return Behaviour(user_id, item_id, event_type, float(ts), event_id)


# ----------------------------------------------------------------------------- item kNN


class ItemKNN(_Tuned):
    """Session item-to-item co-occurrence (sequential kNN).

    Two events of one user at most ``window`` positions apart co-occur, with
    weight ``1 / distance``; co-occurrence is symmetric and normalised by
    ``sqrt(count_i * count_j)``. A user's score is the sum over their last
    ``last`` items of the similarity rows, the l-th most recent weighted
    ``recency ** l``. A 1e-6 x normalised-popularity term orders items with no
    co-occurrence (otherwise tied at zero).

    Parameters
    ----------
    windows, lasts, recencies
        Candidates, tuned on the validation targets.
    """

    deterministic = True

    def __init__(
        self,
        windows: Sequence[int] = (5, 20, 100),
        lasts: Sequence[int] = (1, 5, 20, 50),
        recencies: Sequence[float] = (0.7, 0.9),
        *,
        name: str = "item-knn",
    ) -> None:
        self.name = name
        self.grid = {"window": tuple(windows), "last": tuple(lasts), "recency": tuple(recencies)}
        self.params = {"pair_weight": "1/distance", "norm": "sqrt(count_i*count_j)"}
        self.tuning = []
        self._sim: dict[tuple[str, int], Any] = {}
        self._pop: dict[str, np.ndarray] = {}
        self._window, self._last, self._recency = 10, 5, 0.7
        self._split: Split | None = None

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self._split = split
        self._sim = {}
        self._seqs = {phase: _phase_sequences(split, phase) for phase in PHASES}
        for phase in PHASES:
            counts = np.bincount(np.concatenate(self._seqs[phase]), minlength=split.n_items)
            self._pop[phase] = counts / max(1, counts.max())
        self._tune(split, seed)

    def _configure(self, window: int, last: int, recency: float) -> None:
        self._window, self._last, self._recency = window, last, recency

    def _similarity(self, phase: str) -> Any:
        key = (phase, self._window)
        if key not in self._sim:
            self._sim = {k: v for k, v in self._sim.items() if k[1] == self._window}
            self._sim[key] = co_occurrence(self._seqs[phase], self._split.n_items, self._window)
        return self._sim[key]

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        from scipy import sparse

        assert self._split is not None
        sim = self._similarity(phase)
        rows, cols, vals = [], [], []
        for row, u in enumerate(users):
            recent = self._seqs[phase][int(u)][::-1][: self._last]
            rows.extend([row] * len(recent))
            cols.extend(recent.tolist())
            vals.extend((self._recency ** np.arange(len(recent))).tolist())
        profile = sparse.csr_matrix(
            (vals, (rows, cols)), shape=(len(users), self._split.n_items), dtype=np.float64
        )
        out = np.asarray((profile @ sim).todense())
        return out + 1e-6 * self._pop[phase][None, :]


def co_occurrence(sequences: Sequence[np.ndarray], n_items: int, window: int) -> Any:
    """Symmetric [n_items, n_items] scipy CSR of normalised windowed co-occurrence."""
    from scipy import sparse

    lens = np.array([len(s) for s in sequences])
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(sequences)), lens)
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        if d >= len(flat):
            break
        same = owner[:-d] == owner[d:]
        rows.append(flat[:-d][same])
        cols.append(flat[d:][same])
        vals.append(np.full(int(same.sum()), 1.0 / d))
    if rows:
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        r = c = np.zeros(0, dtype=np.int64)
        v = np.zeros(0)
    m = sparse.coo_matrix((v, (r, c)), shape=(n_items, n_items)).tocsr()
    m = m + m.T
    m.setdiag(0.0)
    m.eliminate_zeros()
    counts = np.bincount(flat, minlength=n_items).astype(np.float64)
    inv = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    scale = sparse.diags(inv)
    return (scale @ m @ scale).tocsr()


# ----------------------------------------------------------------------------- river MF


def materialize(model: Any, users: Iterable[Any], items: Iterable[Any]) -> None:
    """Create every user's and item's river weights now, in a fixed order.

    river draws latent vectors lazily on first access (also in
    ``predict_one``); drawing them all up front, seeded, makes training and
    scoring independent of which pairs happen to be looked at first.
    """
    for u in users:
        _ = model.u_latents[u]
        if hasattr(model, "u_biases"):
            _ = model.u_biases[u]
    for i in items:
        _ = model.i_latents[i]
        if hasattr(model, "i_biases"):
            _ = model.i_biases[i]


def river_scores(model: Any, users: Sequence[Any], items: Sequence[Any]) -> np.ndarray:
    """``model.predict_one(u, i)`` for every pair, read from the weight dicts with numpy.

    Works for `river.reco.BiasedMF` (mean + biases + dot) and `river.reco.FunkMF` (dot).
    """
    item_latents = np.stack([np.asarray(model.i_latents[i], dtype=np.float64) for i in items])
    user_latents = np.stack([np.asarray(model.u_latents[u], dtype=np.float64) for u in users])
    out = user_latents @ item_latents.T
    if hasattr(model, "i_biases"):
        item_bias = np.array([model.i_biases[i] for i in items], dtype=np.float64)
        user_bias = np.array([model.u_biases[u] for u in users], dtype=np.float64)
        out += model.global_mean.get() + user_bias[:, None] + item_bias[None, :]
    return out


class RiverMF(_Tuned):
    """river's online matrix factorisation, learned one event at a time in time order.

    Implicit feedback: every interaction is a positive with target 1.0, and
    each is followed by ``n_neg`` negatives with target 0.0 on items drawn
    uniformly from the catalogue (numpy generator seeded by the run's seed).
    river's reco models regress a target; fed only positives they learn to
    answer 1 for everything, and fed star ratings they learn "would rate it
    high", not "would watch it next". Ratings are therefore ignored.

    For "test" the model goes on learning the validation events, in time
    order, after the training events. Scores are read from the weight dicts
    (`river_scores`), equal to ``predict_one``.

    Parameters
    ----------
    kind
        "biased" (`river.reco.BiasedMF`) or "funk" (`river.reco.FunkMF`).
    n_factors
        Latent dimensions.
    learning_rates
        SGD step candidates, tuned on the validation targets.
    n_neg
        Sampled negatives per positive.
    l2
        L2 penalty on the latent factors.
    passes
        Passes over the training stream (1 = strictly online).
    """

    def __init__(
        self,
        kind: str = "biased",
        *,
        n_factors: int = 32,
        learning_rates: Sequence[float] = (0.05, 0.1),
        n_neg: int = 4,
        l2: float = 1e-4,
        passes: int = 1,
        name: str | None = None,
    ) -> None:
        if kind not in ("biased", "funk"):
            raise ValueError("kind must be 'biased' or 'funk'")
        self.kind = kind
        self.name = name or f"river-{kind}-mf"
        self.grid = {"learning_rate": tuple(learning_rates)}
        self.params = {
            "n_factors": n_factors,
            "n_neg": n_neg,
            "l2": l2,
            "passes": passes,
            "targets": "1 for events, 0 for sampled negatives",
        }
        self.n_factors, self.n_neg, self.l2, self.passes = n_factors, n_neg, l2, passes
        self.tuning = []
        self._snapshots: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._lr = learning_rates[0]
        self._seed = 0
        self._split: Split | None = None

    def new_model(self, learning_rate: float, seed: int) -> Any:
        """A fresh river model with every user and item weight drawn (seeded)."""
        from river import optim, reco

        init = optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed)
        if self.kind == "biased":
            model = reco.BiasedMF(
                n_factors=self.n_factors,
                bias_optimizer=optim.SGD(learning_rate),
                latent_optimizer=optim.SGD(learning_rate),
                l2_bias=self.l2,
                l2_latent=self.l2,
                latent_initializer=init,
                seed=seed,
            )
        else:
            model = reco.FunkMF(
                n_factors=self.n_factors,
                optimizer=optim.SGD(learning_rate),
                l2=self.l2,
                initializer=init,
                seed=seed,
            )
        return model

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self._split, self._seed = split, seed
        self._snapshots = {}
        self._tune(split, seed)
        self._snapshots = {self._lr: self._snapshots[self._lr]}

    def _configure(self, learning_rate: float) -> None:
        self._lr = learning_rate
        if learning_rate not in self._snapshots:
            self._snapshots[learning_rate] = self._train(learning_rate)

    def _train(self, learning_rate: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        assert self._split is not None
        split, n = self._split, self._split.n_items
        model = self.new_model(learning_rate, self._seed)
        users, items = range(split.n_users), range(n)
        materialize(model, users, items)
        rng = np.random.default_rng(self._seed)
        train_u, train_i, _ = _known_events(split, "valid")
        for _ in range(self.passes):
            self._learn(model, train_u, train_i, rng)
        snaps = {"valid": self._snapshot(model, users, items)}
        has = np.flatnonzero(split.valid >= 0)
        order = has[np.argsort(split.valid_ts[has], kind="stable")]
        self._learn(model, order, split.valid[order], rng)
        snaps["test"] = self._snapshot(model, users, items)
        return snaps

    def _learn(self, model: Any, users: np.ndarray, items: np.ndarray, rng: Any) -> None:
        negatives = rng.integers(0, self._split.n_items, size=(len(users), self.n_neg)).tolist()
        learn = model.learn_one
        for u, i, negs in zip(users.tolist(), items.tolist(), negatives, strict=True):
            learn(u, i, 1.0)
            for j in negs:
                learn(u, j, 0.0)

    @staticmethod
    def _snapshot(model: Any, users: range, items: range) -> tuple[np.ndarray, np.ndarray]:
        """User side [n_users, f + 2], item side [n_items, f + 2]: predict_one = U @ I.T."""
        u_lat = np.stack([np.asarray(model.u_latents[u], dtype=np.float64) for u in users])
        i_lat = np.stack([np.asarray(model.i_latents[i], dtype=np.float64) for i in items])
        u_const, i_bias = np.zeros(len(users)), np.zeros(len(items))
        if hasattr(model, "i_biases"):
            u_const += model.global_mean.get() + np.array([model.u_biases[u] for u in users])
            i_bias += np.array([model.i_biases[i] for i in items], dtype=np.float64)
        user_side = np.hstack([u_lat, np.ones((len(users), 1)), u_const[:, None]])
        item_side = np.hstack([i_lat, i_bias[:, None], np.ones((len(items), 1))])
        return user_side, item_side

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        user_side, item_side = self._snapshots[self._lr][phase]
        return user_side[users] @ item_side.T


def factories() -> Mapping[str, Callable[[], Recommender]]:
    """The baselines of this module by name (the harness's default registry)."""
    return {
        "most-popular": lambda: PopularityTimeDecayed(
            (math.inf,), causal=False, name="most-popular"
        ),
        "pop-decay": PopularityTimeDecayed,
        "time-decay-core": TimeDecayCore,
        "item-knn": ItemKNN,
        "river-biased-mf": lambda: RiverMF("biased"),
        "river-funk-mf": lambda: RiverMF("funk"),
    }
