"""The functional core: ``step(state, events, catalogue, now) -> StepResult``.

No I/O, no clock, no randomness. The Faust agents call it per user and
micro-batch; the offline evaluation (`models.evaluation.baselines.TimeDecayCore`)
and the end-to-end tests call it over a whole log; both give the same states
because the interest update is applied one event at a time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from models import ann
from models.ann import AnnSpec
from models.behaviour import TYPE_WEIGHTS, Behaviour, EncodedPhrase, event_weight
from models.catalogue import Catalogue
from models.interest import composition, levels, shift
from models.interest.composition import CompositionSpec, Interest
from models.interest.levels import LevelSpec
from models.interest.popularity import PopularityParams, compose
from models.interest.shift import DetectorState, ShiftSpec
from models.interest.topics import shares, update_user_topics
from models.ranking import Ranked, top_k
from models.stages import stage
from models.state import LastQuery, PendingEvent, QueryPhrase, UserState, WindowEntry
from models.update import InterestUpdater, TimeDecayUpdater
from models.window import WindowSpec, slide, window_vector


@dataclass(frozen=True)
class CoreParams:
    """Settings of the core (not learned state).

    Parameters
    ----------
    k
        Length of the recommendation list.
    window
        Sliding-window bounds.
    composition
        Several interests per user (``max_interests = 1``: one vector).
    levels
        How the short, mid and long-term levels mix (`models.interest.levels`).
    type_weights
        How much each behaviour type moves the state (`models.behaviour.event_weight`).
    topic_decay
        Per-event decay of the user's topic masses.
    negative_strength
        How hard a query's negative phrases push matching items down, in
        standard deviations of score per unit of phrase weight.
    negative_margin
        Only items closer to a negative phrase than this many standard
        deviations above the catalogue's mean cosine are pushed: the items
        *about* the phrase, not its neighbourhood (MiniLM puts "space" half a
        standard deviation towards "jazz"; "space, nothing jazz" must keep
        space).
    dedup_ids
        How many recent event ids are remembered to apply duplicates once.
    max_pending
        How many events may wait for a missing item embedding.
    shift
        The interest-shift detector (`models.interest.shift`), or None: off.
    ann
        When ranking goes through an approximate index of the catalogue
        (`models.ann`, `rank_many`), and the index's settings.
    popularity
        The cold-start popularity prior: which users it ranks (`uses_prior`)
        and how it is composed with their query (`with_prior`). It applies
        only when a prior is handed to `step`, `rank` or `scores`.
    """

    k: int = 10
    window: WindowSpec = field(default_factory=WindowSpec)
    updater: InterestUpdater = field(default_factory=TimeDecayUpdater)
    composition: CompositionSpec = field(default_factory=CompositionSpec)
    levels: LevelSpec = field(default_factory=LevelSpec)
    type_weights: dict[str, float] = field(default_factory=lambda: dict(TYPE_WEIGHTS))
    topic_decay: float = 0.9
    negative_strength: float = 2.0
    negative_margin: float = 0.25
    dedup_ids: int = 512
    max_pending: int = 256
    shift: ShiftSpec | None = field(default_factory=ShiftSpec)
    ann: AnnSpec = field(default_factory=AnnSpec)
    popularity: PopularityParams = field(default_factory=PopularityParams)

    @property
    def short_term_weight(self) -> float:
        if _own_space(self.updater):
            return self.levels.learned_short_weight
        return self.levels.short_weight


@dataclass(frozen=True)
class Cause:
    """What made a delta: applied events and/or changed items, a replay, a request.

    ``kind`` is "events", "items" (catalogue changes only), "replay" (the
    batch was already applied: the delta restates the current version so a
    crash between the state write and the delta flush loses nothing) or
    "snapshot" (asked for: the current list, ``request_id`` says whose ask).
    """

    kind: str = "events"
    event_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    last_event_ts: float | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Delta:
    """What changed in one user's recommendations, at one state version."""

    user_id: str
    version: int
    ts: float
    cause: Cause
    added: tuple[tuple[str, float, int], ...]  # item, score, rank (0-based)
    removed: tuple[tuple[str, int], ...]  # item, previous rank
    reranked: tuple[tuple[str, float, int, int], ...]  # item, score, rank, previous rank
    top_k: tuple[Ranked, ...]
    interest: dict[str, object]
    #: The updater (model and version) that produced it: `UserState.updater`.
    model: str = ""


#: The popularity prior per catalogue row (`Catalogue.rows`) read at an event time:
#: what `step` takes as ``prior`` (a worker's `streams.shared_popularity`).
PriorAt = Callable[[float], np.ndarray]


@dataclass(frozen=True)
class StepResult:
    state: UserState | None
    delta: Delta | None
    changed: bool
    applied: tuple[Behaviour, ...] = ()
    duplicates: tuple[Behaviour, ...] = ()
    replayed: tuple[Behaviour, ...] = ()
    parked: tuple[Behaviour, ...] = ()
    #: Pending events pushed out because too many were waiting.
    overflow: tuple[PendingEvent, ...] = ()
    #: The updater whose interest vector was replaced by replaying the window
    #: through the current one (a model change), or None.
    migrated_from: str | None = None


def step(
    state: UserState | None,
    events: Sequence[Behaviour],
    catalogue: Catalogue,
    now: float,
    params: CoreParams,
    *,
    refresh: Sequence[str] = (),
    prior: PriorAt | None = None,
) -> StepResult:
    """Apply a micro-batch of one user's events and re-rank.

    ``refresh`` names items that changed (updated or removed) and concern
    this user: the list is re-ranked even without events. Events whose
    position is at or below the last applied offset of their partition are
    replays and skipped; events whose id was already applied are duplicates
    and skipped; events on items with no embedding wait in ``pending``.
    ``prior`` gives the popularity prior at an event time: a user the prior
    is for (`uses_prior`) is ranked with it, read at their latest event's
    time, and the delta's ``interest.popularity_prior`` says so.

    The same as `prepare`, `rank` of its state, then `finish`: a shell that
    holds many users' micro-batches prepares them all, ranks the ones that
    need it with one `rank_many`, and finishes each, with the same results.
    """
    prepared = prepare(state, events, catalogue, params, refresh=refresh)
    if prepared.result is not None:
        return prepared.result
    assert prepared.state is not None
    cold = prior_for(prepared.state, params, prior, now)
    ranked = rank(prepared.state, catalogue, params, cold)
    return finish(prepared, ranked, catalogue, now, params, with_popularity=cold is not None)


@dataclass(frozen=True)
class Prepared:
    """The first half of `step`: the events applied, the list not yet ranked.

    ``result`` is the whole `StepResult` when nothing needs ranking (no
    state, or nothing changed); else ``state`` is the new state to rank
    (its ``top_k`` still the old list) and `finish` completes the step.
    """

    result: StepResult | None
    state: UserState | None = None
    before: UserState | None = None
    refresh: tuple[str, ...] = ()
    migrated_from: str | None = None
    overflow: tuple[PendingEvent, ...] = ()
    #: The step's scratch (`_Run`), read by `finish` only.
    run: _Run | None = None


def prepare(
    state: UserState | None,
    events: Sequence[Behaviour],
    catalogue: Catalogue,
    params: CoreParams,
    *,
    refresh: Sequence[str] = (),
) -> Prepared:
    """`step` up to the ranking: apply the events, build the new state (see `step`)."""
    migrated_from = None
    if state is None:
        if not events:
            return Prepared(StepResult(None, None, changed=False))
        state = new_state(events[0].user_id, catalogue.dim, params)
    elif state.updater != params.updater.name or any(
        i.hidden.shape != params.updater.initial(catalogue.dim).shape for i in state.interests
    ):
        migrated_from = state.updater
        state = rebase(state, catalogue, params.updater, params.composition)

    run = _Run(state, params, catalogue)
    ready = [p for p in state.pending if p.item_id in catalogue]
    run.pending = [p for p in state.pending if p.item_id not in catalogue]
    for p in ready:
        run.apply(p.item_id, p.type, p.ts, p.weight, p.event_id)
    for event in events:
        run.take(event)

    touched = bool(ready) or bool(run.applied) or bool(run.parked) or migrated_from is not None
    stale = any(item not in catalogue for item, _ in state.top_k)
    if not (touched or refresh or stale or run.offsets != state.offsets):
        return Prepared(
            StepResult(
                state,
                None,
                changed=False,
                duplicates=tuple(run.duplicates),
                replayed=tuple(run.replayed),
            )
        )

    pending, overflow = _bounded(run.pending, params.max_pending)
    new = replace(
        state,
        version=state.version + 1,
        interests=run.interests,
        long_term=run.long_term,
        long_term_ts=run.long_term_ts,
        topics=run.topics,
        last_event_ts=run.last_ts,
        gap_s=run.gap_s,
        query=run.query,
        window=run.window,
        consumed=frozenset(run.consumed),
        recent_event_ids=tuple(run.recent_ids[-params.dedup_ids :]),
        offsets=run.offsets,
        pending=tuple(pending),
        events_applied=state.events_applied + run.count,
        shift_detector=None if run.detector is None else run.detector.to_tuple(),
        shifts=run.shifts,
        last_shift_ts=run.last_shift_ts,
    )
    return Prepared(
        None,
        new,
        before=state,
        refresh=tuple(refresh),
        migrated_from=migrated_from,
        overflow=tuple(overflow),
        run=run,
    )


def finish(
    prepared: Prepared,
    ranked: Sequence[Ranked],
    catalogue: Catalogue,
    now: float,
    params: CoreParams,
    *,
    with_popularity: bool = False,
    summary: dict | None = None,
) -> StepResult:
    """`step` after the ranking: ``ranked`` (`rank` of ``prepared.state``) becomes the list.

    ``with_popularity``: it was ranked with the popularity prior (`prior_for`),
    which the delta's ``interest.popularity_prior`` says. ``summary``: the
    user's `interest_summary` when the caller made it already (`summaries_for`
    of the batch); computed here otherwise.
    """
    if prepared.result is not None:
        return prepared.result
    state, run = prepared.before, prepared.run
    assert prepared.state is not None and state is not None and run is not None
    new = replace(prepared.state, top_k=tuple(ranked))
    cause = Cause(
        kind="events" if run.count or run.parked else "items",
        event_ids=tuple(run.applied_ids),
        item_ids=tuple(sorted(prepared.refresh)),
        last_event_ts=max(run.applied_ts) if run.applied_ts else None,
    )
    if summary is None:
        with stage("summary"):
            summary = interest_summary(new, catalogue, params, before=state)
    else:
        summary = dict(summary)
    if with_popularity:
        summary["popularity_prior"] = {"query_weight": params.popularity.query_weight}
    if run.flagged:
        summary["shift"] = {**run.flagged[-1], "flags": len(run.flagged), "total": run.shifts}
    delta = diff(state.top_k, new.top_k, new, now, cause, summary)
    if delta is None and (run.flagged or any(e.type == "query" for e in run.applied)):
        # A query is answered, and a shift told, even when the list stays: they are news.
        delta = replace(restate(new, catalogue, now, params, cause), interest=summary)
    return StepResult(
        new,
        delta,
        changed=True,
        applied=tuple(run.applied),
        duplicates=tuple(run.duplicates),
        replayed=tuple(run.replayed),
        parked=tuple(run.parked),
        overflow=prepared.overflow,
        migrated_from=prepared.migrated_from,
    )


def summaries_for(
    prepared: Sequence[Prepared],
    lists: Sequence[Sequence[Ranked]],
    catalogue: Catalogue,
    params: CoreParams,
) -> list[dict | None]:
    """The `interest_summary` `finish` would make for each of ``prepared`` ranked
    ``lists``, in one `interest_summaries`; None where `finish` makes none."""
    todo = [n for n, p in enumerate(prepared) if p.result is None and p.state is not None]
    out: list[dict | None] = [None] * len(prepared)
    with stage("summary"):
        made = interest_summaries(
            [replace(prepared[n].state, top_k=tuple(lists[n])) for n in todo],  # type: ignore[arg-type]
            catalogue,
            params,
            [prepared[n].before for n in todo],
        )
    for n, summary in zip(todo, made, strict=True):
        out[n] = summary
    return out


def rebase(
    state: UserState,
    catalogue: Catalogue,
    updater: InterestUpdater,
    spec: CompositionSpec | None = None,
) -> UserState:
    """``state`` with its interest rebuilt by ``updater`` from the window's events.

    For a model change (another updater, or a new version of one): the old
    vector lives in another space, so it cannot be kept; replaying the
    window through the new model moves the user over instead of resetting
    them. Window items that left the catalogue are skipped. The latest
    query's positive phrases are opened again (`open_phrase`, as the query
    event opened them) at the query's place among the window's events, by
    time: a query is not in the window, and its interests would otherwise
    be lost. Its negative phrases live in the catalogue's space and stay.
    """
    spec = spec or CompositionSpec()
    query = state.query
    times = [e.ts for e in state.window]
    at = len(times) if query is None else bisect.bisect_right(times, query.ts)
    interests = _replay(state.window[:at], (), catalogue, updater, spec)
    if query is not None:
        for phrase, vec in query.positive_phrases():
            if vec.shape == (catalogue.dim,):
                weight = query.weight * phrase.weight
                interests = open_phrase(
                    interests, phrase.text, vec, weight, query.ts, updater, spec
                )
    interests = _replay(state.window[at:], interests, catalogue, updater, spec)
    return replace(state, interests=interests, updater=updater.name)


def _replay(
    entries: Sequence[WindowEntry],
    interests: tuple[Interest, ...],
    catalogue: Catalogue,
    updater: InterestUpdater,
    spec: CompositionSpec,
) -> tuple[Interest, ...]:
    """``interests`` with window ``entries`` absorbed in order (items no longer known skipped)."""
    for entry in entries:
        vec = catalogue.vector(entry.item_id)
        if vec is not None:
            item = updater.represent(entry.item_id, vec)
            interests, _ = composition.absorb(
                interests, vec, item, entry.weight, entry.ts, updater, spec
            )
    return interests


def open_phrase(
    interests: tuple[Interest, ...],
    text: str,
    vector: np.ndarray,
    weight: float,
    ts: float,
    updater: InterestUpdater,
    spec: CompositionSpec,
) -> tuple[Interest, ...]:
    """The interests with a positive query phrase absorbed, as an item ``query:<text>`` would be.

    The phrase opens an interest of its own or moves the closest one
    (`models.interest.composition.absorb`); the updater represents it from
    its vector, like an item it never saw. A query event (`step`) and a
    rebase (`rebase`) open phrases only through here.
    """
    item = updater.represent(f"query:{text}", vector)
    interests, _ = composition.absorb(interests, vector, item, weight, ts, updater, spec)
    return interests


def new_state(user_id: str, dim: int, params: CoreParams) -> UserState:
    return UserState(user_id=user_id, updater=params.updater.name)


def diff(
    old: Sequence[Ranked],
    new: Sequence[Ranked],
    state: UserState,
    now: float,
    cause: Cause,
    interest: dict[str, object],
) -> Delta | None:
    """The delta from one top-K list to the next; None when nothing moved.

    >>> d = diff([("a", 0.9), ("b", 0.8)], [("b", 0.85), ("c", 0.5)],
    ...          UserState("u", version=3), 0.0, Cause(), {})
    >>> d.added, d.removed, d.reranked
    ((('c', 0.5, 1),), (('a', 0),), (('b', 0.85, 0, 1),))
    """
    old_rank = {item: rank for rank, (item, _) in enumerate(old)}
    new_rank = {item: rank for rank, (item, _) in enumerate(new)}
    added = tuple((i, s, r) for r, (i, s) in enumerate(new) if i not in old_rank)
    removed = tuple((i, r) for r, (i, _) in enumerate(old) if i not in new_rank)
    reranked = tuple(
        (i, s, r, old_rank[i]) for r, (i, s) in enumerate(new) if old_rank.get(i, r) != r
    )
    if not (added or removed or reranked):
        return None
    return Delta(
        user_id=state.user_id,
        version=state.version,
        ts=now,
        cause=cause,
        added=added,
        removed=removed,
        reranked=reranked,
        top_k=tuple(new),
        interest=interest,
        model=state.updater,
    )


def restate(
    state: UserState,
    catalogue: Catalogue,
    now: float,
    params: CoreParams,
    cause: Cause | None = None,
) -> Delta:
    """The current list as a delta with nothing added or removed.

    Re-sent after a replay (the default cause) and sent when a snapshot is
    asked for. A user with no state yet is ``new_state``: version 0, empty list.
    """
    return Delta(
        user_id=state.user_id,
        version=state.version,
        ts=now,
        cause=cause or Cause(kind="replay"),
        added=(),
        removed=(),
        reranked=(),
        top_k=state.top_k,
        interest=interest_summary(state, catalogue, params, before=state),
        model=state.updater or params.updater.name,
    )


def scores(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """The score of every catalogue row (`Catalogue.rows`) for ``state``; -inf where undefined.

    The levels' scores, each standardised over the catalogue, mixed by
    `models.interest.levels.level_weights` (levels with no direction yet
    drop out and the others share their weight):

    - short-term: cosine with the window's direction, per interest: each
      window event goes with the interest closest to it, and the parts are
      composed by their window weights (so a window of two tastes is not
      blurred into one in-between direction);
    - mid-term: the interests' scores by the updater (`InterestUpdater.scores`),
      composed by their softmax weights (`models.interest.composition.compose`);
    - long-term: cosine with the long-term profile.

    For a user the popularity prior is for (`uses_prior`), with ``prior``
    given (per catalogue row), those scores are composed with it
    (`with_prior`). The latest query's negative phrases then push down the
    items close to them: ``negative_strength * weight * max(0, z -
    negative_margin)`` of each phrase's cosine z-score (after the prior, so
    a popular item the query refuses is still pushed out).
    `rank` ranks with exactly this (below `AnnSpec.min_items`, or with a
    prior; above, it scores the index's candidates with the same formula);
    the offline evaluation scores with it.
    """
    return scores_many([state], catalogue, params, [prior])[0]


def scores_many(
    states: Sequence[UserState],
    catalogue: Catalogue,
    params: CoreParams,
    priors: Sequence[np.ndarray | None] | None = None,
) -> list[np.ndarray]:
    """`scores` of each of ``states``, the same numbers, the batch's directions in one block.

    Every direction any user's levels score by (its interests', the
    short-term parts', the long-term profile's, a query's phrases) is scored
    against the catalogue in `Catalogue.scores_many` at once and z-scored
    row by row (`_Block`); each user's formula then reads its rows. A
    direction's scores do not depend on what it is scored beside
    (`models.catalogue.blocked_product`), so each user gets what `scores`
    gives it alone, bit for bit.
    """
    priors = [None] * len(states) if priors is None else list(priors)
    plans = [_plan(state, catalogue, params) for state in states]
    block = _Block(catalogue, [d for plan in plans for d in plan.directions()])
    return [
        _combine(state, params, plan, block, prior)
        for state, plan, prior in zip(states, plans, priors, strict=True)
    ]


def rank(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    prior: np.ndarray | None = None,
) -> list[Ranked]:
    """The k best items for ``state``, consumed ones excluded (`rank_many` of one user)."""
    return rank_many([state], catalogue, params, [prior])[0]


def rank_many(
    states: Sequence[UserState],
    catalogue: Catalogue,
    params: CoreParams,
    priors: Sequence[np.ndarray | None] | None = None,
) -> list[list[Ranked]]:
    """`rank` of each of ``states``, the index searched once for all of them.

    ``priors``, one per state (or None), are popularity priors per catalogue
    row (`prior_for`); a user ranked with one is ranked exactly: the prior
    favours items no direction of theirs would fetch from the index.

    Each list is the one `rank` gives that user alone, exactly: the batch
    shares work only where sharing cannot change a number.

    - Exact (a catalogue of at most ``params.ann.min_items`` items, the
      ``"quota"`` composition, or a graph that cannot answer): `scores_many`
      of the users (their directions scored against the catalogue in one
      block of fixed-width products, so each user's numbers are those it
      gets alone: a score that moved in its last bit would move the
      6-decimal score a delta carries), `models.ranking.top_k`, the consumed
      items excluded.
    - Through the index (`models.ann`): the directions every user's levels
      score by (each interest's, the short-term parts', the long-term
      profile's) go to the graph in one search per fetch width
      (`AnnSpec.fetch_width`: the consumed items are fetched, then dropped);
      an updater that scores in an item space of its own (overrides
      `InterestUpdater.scores`: the learned cell) has its mid-term level
      scored over every row, in its space, and adds its best rows. Each
      user's candidates are then scored with `scores`' formula, the
      z-scores those of the whole catalogue (`Catalogue.moments`). A query's
      negative phrases fetch nothing: they only push items down.
    """
    if not states:
        return []
    priors = [None] * len(states) if priors is None else list(priors)
    with stage("rank"):
        out: list[list[Ranked] | None] = [None] * len(states)
        rest = [u for u, p in enumerate(priors) if p is None]
        if rest and params.ann.applies(catalogue) and params.composition.mode == "softmax":
            approx = _rank_approximate([states[u] for u in rest], catalogue, params)
            for at, u in enumerate(rest if approx is not None else ()):
                out[u] = approx[at]
        exact = [u for u, ranked in enumerate(out) if ranked is None]
        ranked = _rank_exact_many([states[u] for u in exact], catalogue, params,
                                  [priors[u] for u in exact])  # fmt: skip
        for u, one in zip(exact, ranked, strict=True):
            out[u] = one
        return out  # type: ignore[return-value]


def _rank_exact_many(
    states: Sequence[UserState],
    catalogue: Catalogue,
    params: CoreParams,
    priors: Sequence[np.ndarray | None],
) -> list[list[Ranked]]:
    """`rank_exact` of each of ``states``, scored together (`scores_many`)."""
    if not states:
        return []
    ids = catalogue.rows()[0]
    return [
        top_k(ids, user_scores, params.k, catalogue.rows_of(state.consumed))
        for state, user_scores in zip(
            states, scores_many(states, catalogue, params, priors), strict=True
        )
    ]


def _rank_approximate(
    states: Sequence[UserState], catalogue: Catalogue, params: CoreParams
) -> list[list[Ranked]] | None:
    """`rank_many` through the index; None when the graph cannot answer (rank exactly)."""
    index = ann.index_for(catalogue, params.ann)
    queries = [_fetch_directions(state, catalogue, params) for state in states]
    widths = [params.ann.fetch_width(len(state.consumed)) for state in states]
    fetched: list[list[np.ndarray]] = [[] for _ in states]
    for width in sorted(set(widths)):
        users = [u for u, w in enumerate(widths) if w == width and len(queries[u])]
        if not users:
            continue
        with stage("ann_search"):  # its own stage: the breakdown shows that the index ranked
            found = index.search(np.concatenate([queries[u] for u in users]), width)
        if found is None:
            return None
        at = 0
        for u in users:
            fetched[u] = found[at : at + len(queries[u])]
            at += len(queries[u])
    ids = catalogue.rows()[0]
    out = []
    for state, rows, width in zip(states, fetched, widths, strict=True):
        own = _own_mid(state, catalogue, params)
        if own is not None:
            rows = [*rows, _best_rows(own, width)]
        view = _Candidates(catalogue, rows, catalogue.rows_of(state.consumed), own)
        if not len(view.rows):
            out.append([])
            continue
        cand_ids = [ids[r] for r in view.rows.tolist()]
        out.append(top_k(cand_ids, _level_scores(state, catalogue, params, view), params.k))
    return out


class _AllRows:
    """Every catalogue row, z-scores by `composition.standardise` over them: the exact path."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.size = len(catalogue.rows()[0])

    def z_many(self, dirs: np.ndarray) -> np.ndarray:
        """[q, rows]: each direction's z-scores (all -inf for a zero direction)."""
        return composition.standardise_rows(self.catalogue.scores_many(dirs))

    def z_one(self, vec: np.ndarray) -> np.ndarray:
        return composition.standardise(self.catalogue.scores(vec))

    def own_mid(self, state: UserState, params: CoreParams) -> np.ndarray | None:
        """An own-space updater's mid-term level on this view's rows (`_own_mid`)."""
        return _own_mid(state, self.catalogue, params)


class _Block(_AllRows):
    """`_AllRows` with given directions' z-scores computed up front, in one block.

    ``directions`` are scored together (`Catalogue.scores_many`) and z-scored
    row by row (`composition.standardise_rows`: each row as `standardise`
    alone). A direction asked for later is looked up by its float32 bits; one
    not given (or all zeros) is computed as `_AllRows` computes it. The rows
    are read-only: the formula composes them into new arrays.
    """

    def __init__(self, catalogue: Catalogue, directions: Sequence[np.ndarray]) -> None:
        super().__init__(catalogue)
        self._z: dict[bytes, np.ndarray] = {}
        unique: dict[bytes, np.ndarray] = {}
        for d in directions:
            v = np.asarray(d, dtype=np.float32)
            if v.shape == (catalogue.dim,) and v.any():
                unique.setdefault(v.tobytes(), v)
        if unique:
            z = composition.standardise_rows(catalogue.scores_many(np.stack(list(unique.values()))))
            z.flags.writeable = False
            self._z = dict(zip(unique, z, strict=True))

    def _row(self, vec: np.ndarray) -> np.ndarray | None:
        return self._z.get(np.asarray(vec, dtype=np.float32).tobytes())

    def z_many(self, dirs: np.ndarray) -> np.ndarray:
        rows = [self._row(d) for d in dirs]
        if any(r is None for r in rows):
            return super().z_many(dirs)
        return np.stack(rows)

    def z_one(self, vec: np.ndarray) -> np.ndarray:
        row = self._row(vec)
        return super().z_one(vec) if row is None else row


class _Candidates:
    """Some catalogue rows, z-scored as over the whole catalogue from its moments.

    For a direction ``q`` the alive rows' scores have mean ``sum . q / n``
    and variance ``q^T (X^T X) q / n - mean^2`` (`Catalogue.moments`), so a
    row's z-score here is the one `_AllRows` gives it, up to float rounding.
    ``rows`` are the fetched ones, unique and sorted, less ``exclude`` (the
    consumed) and removed ones.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        fetched: Sequence[np.ndarray],
        exclude: Sequence[int],
        own: np.ndarray | None = None,
    ) -> None:
        _, matrix, alive = catalogue.rows()
        rows = np.unique(np.concatenate([*fetched, np.zeros(0, dtype=np.int64)]))
        rows = rows[(rows >= 0) & (rows < len(alive))]
        rows = rows[alive[rows] & ~np.isin(rows, np.asarray(exclude, dtype=np.int64))]
        self.rows = rows
        self.size = len(rows)
        self._sub = matrix[rows]
        self._n, self._sum, self._second = catalogue.moments()
        self._own = own

    def z_many(self, dirs: np.ndarray) -> np.ndarray:
        d = np.asarray(dirs, dtype=np.float32).reshape(len(dirs), -1)
        raw = (self._sub @ d.T).T.astype(np.float64)
        d64 = d.astype(np.float64)
        mean = d64 @ self._sum / self._n
        var = ((d64 @ self._second) * d64).sum(axis=1) / self._n - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        ok = std > 1e-12
        z = np.where(ok[:, None], (raw - mean[:, None]) / np.where(ok, std, 1.0)[:, None], 0.0)
        z[~d.any(axis=1)] = -np.inf  # as `Catalogue.scores_many`: a zero query is undefined
        return z

    def z_one(self, vec: np.ndarray) -> np.ndarray:
        v = np.asarray(vec, dtype=np.float32)
        if not v.any():  # `Catalogue.scores` of zeros: constant, so z-scores of zero
            return np.zeros(self.size)
        return self.z_many(v[None])[0]

    def own_mid(self, state: UserState, params: CoreParams) -> np.ndarray | None:
        """The own-space mid-term level given at construction (every row's), on these rows."""
        return None if self._own is None else self._own[self.rows]


@dataclass(frozen=True)
class _Plan:
    """What `scores`' formula scores a user by, before any catalogue product.

    ``mid``: the mid-term level's directions, composed by ``mid_shares``
    (a cold user's query phrases) or, when None, by the interests' weights
    (`_composed_mid`); ``own_mid``: the updater scores the mid-term level in
    its own item space instead. ``short``: the short-term parts and their
    shares (None: the window's one direction). ``negatives``: a query's
    negative phrases with their weights.
    """

    shares: dict[str, float]
    mid: np.ndarray | None = None
    mid_shares: np.ndarray | None = None
    own_mid: bool = False
    short: tuple[np.ndarray, np.ndarray | None] | None = None
    long: np.ndarray | None = None
    negatives: tuple[tuple[np.ndarray, float], ...] = ()

    def directions(self) -> list[np.ndarray]:
        """Every catalogue-space direction the formula z-scores (for `_Block`)."""
        out = [] if self.mid is None else list(self.mid)
        if self.short is not None:
            out.extend(self.short[0])
        if self.long is not None:
            out.append(self.long)
        out.extend(vec for vec, _ in self.negatives)
        return out


def _plan(state: UserState, catalogue: Catalogue, params: CoreParams) -> _Plan:
    """The directions `scores`' formula needs for ``state`` (see `scores`)."""
    mid, mid_shares, own_mid = None, None, False
    dirs = composition.directions(state.interests, params.updater)
    if state.interests:
        phrases = _phrase_directions(state, params)
        if phrases is not None:
            mid, mid_shares = phrases
        elif _own_space(params.updater):
            own_mid = True
        else:
            mid = dirs  # each interest's `InterestUpdater.query`
    long = levels.unit(state.long_term)
    negatives: tuple[tuple[np.ndarray, float], ...] = ()
    if state.query is not None and params.negative_strength > 0:
        pairs = zip(state.query.negatives, state.query.negative_weights(), strict=False)
        negatives = tuple((v, w) for v, w in pairs if v.shape == (catalogue.dim,))
    return _Plan(
        shares=level_weights(state, params),
        mid=mid,
        mid_shares=mid_shares,
        own_mid=own_mid,
        short=_short_directions(state, catalogue, params, dirs),
        long=long if long.shape == (catalogue.dim,) and long.any() else None,
        negatives=negatives,
    )


def _level_scores(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    view: _AllRows | _Candidates,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """`scores`' formula over the rows of ``view`` (every row, or the index's candidates).

    ``prior``, when given, is per row of the view.
    """
    return _combine(state, params, _plan(state, catalogue, params), view, prior)


def _combine(
    state: UserState,
    params: CoreParams,
    plan: _Plan,
    view: _AllRows | _Candidates,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """`scores`' formula for ``plan`` over the rows of ``view``."""
    n = view.size
    spec = params.composition
    parts: list[tuple[float, np.ndarray]] = []
    mid = None
    if plan.mid is not None:
        zs = view.z_many(plan.mid)
        mid = (
            _composed_mid(state, params, zs)
            if plan.mid_shares is None
            else composition.compose_standardised(zs, plan.mid_shares, spec.temperature, spec.mode)
        )
    elif plan.own_mid:
        mid = view.own_mid(state, params)
    if mid is not None:
        parts.append((plan.shares["mid"], mid))
    if plan.short is not None:
        dirs, shares_ = plan.short
        short = (
            view.z_one(dirs[0])
            if shares_ is None
            else composition.compose_standardised(
                view.z_many(dirs), shares_, spec.temperature, spec.mode
            )
        )
        parts.append((plan.shares["short"], short))
    if plan.long is not None:
        parts.append((plan.shares["long"], view.z_one(plan.long)))
    parts = [(w, s) for w, s in parts if w > 0]
    if not parts or n == 0:
        return np.full(n, -np.inf)
    total = sum(w for w, _ in parts)
    out = sum(w * s for w, s in parts) / total
    if prior is not None and uses_prior(state, params):
        out = with_prior(out, prior, params)
    for vec, weight in plan.negatives:
        push = np.maximum(view.z_one(vec) - params.negative_margin, 0.0)
        out = out - params.negative_strength * weight * push
    return out


def rank_exact(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    prior: np.ndarray | None = None,
) -> list[Ranked]:
    """`rank` over every catalogue row, whatever its size: what the index path is held to."""
    return _rank_exact_many([state], catalogue, params, [prior])[0]


def prior_for(
    state: UserState, params: CoreParams, prior: PriorAt | None, now: float
) -> np.ndarray | None:
    """The popularity prior ``state`` is ranked with, or None (not cold, or no prior).

    Read at the user's latest event time (``now`` before any), so a replay
    ranks as the live run did.
    """
    if prior is None or not uses_prior(state, params):
        return None
    return prior(now if state.last_event_ts is None else state.last_event_ts)


def uses_prior(state: UserState, params: CoreParams) -> bool:
    """Whether ``state`` is ranked with the popularity prior (when one is given).

    A user who sent a query and has consumed fewer than
    ``params.popularity.cold_items`` items: the query alone says little
    (on MovieLens-100K genre words add nothing measurable over the prior,
    `benchmarks/cold_start.py`), what new users took lately says more.

    >>> from models.state import LastQuery
    >>> asked = UserState("u", query=LastQuery("jazz", 0.0, ()))
    >>> uses_prior(asked, CoreParams()), uses_prior(UserState("u"), CoreParams())
    (True, False)
    """
    return state.query is not None and len(state.consumed) < params.popularity.cold_items


def with_prior(query_scores: np.ndarray, prior: np.ndarray, params: CoreParams) -> np.ndarray:
    """A cold user's scores: `models.interest.popularity.compose` with the prior.

    ``prior + query_weight * standardise(query_scores)``; rows the scores
    leave out (``-inf``) stay out. What `benchmarks/cold_start.py` measures.
    """
    return compose(query_scores, prior, params.popularity.query_weight)


def level_weights(state: UserState, params: CoreParams) -> dict[str, float]:
    """The levels' shares for ``state`` (`models.interest.levels.level_weights` of its gap)."""
    return levels.level_weights(state.gap_s, params.levels, _own_space(params.updater))


def _own_space(updater: InterestUpdater) -> bool:
    """Whether the updater scores in an item space of its own (not a cosine with `query`)."""
    return type(updater).scores is not InterestUpdater.scores


def _phrase_directions(
    state: UserState, params: CoreParams
) -> tuple[np.ndarray, np.ndarray] | None:
    """A cold user's query phrases, when a learned model would rank the user's mid term.

    A model with an item space of its own learned from item sequences, not
    from phrases: its state after a query alone is a few steps on items it
    never saw, and on the demo's catalogue "space and cooking" ranked only
    space. Until the user has consumed ``params.popularity.cold_items``
    items, the mid-term level is the positive phrases' catalogue-space
    directions composed by their weights, as the time-decayed rule's phrase
    interests are; None otherwise (and for every other updater).
    """
    if (
        state.query is None
        or not _own_space(params.updater)
        or len(state.consumed) >= params.popularity.cold_items
    ):
        return None
    pairs = [(p.weight, v) for p, v in state.query.positive_phrases() if v.any()]
    if not pairs:
        return None
    weights = np.array([max(w, composition.MIN_MASS) for w, _ in pairs], dtype=np.float64)
    return np.stack([v for _, v in pairs]).astype(np.float32), weights / weights.sum()


def _composed_mid(state: UserState, params: CoreParams, zs: np.ndarray) -> np.ndarray | None:
    kept = [n for n, z in enumerate(zs) if np.isfinite(z).any()]
    if not kept:
        return None
    w = composition.weights(state.interests, state.last_event_ts, params.composition)[kept]
    return composition.compose_standardised(
        zs[kept], w / w.sum(), params.composition.temperature, params.composition.mode
    )


def _own_mid(state: UserState, catalogue: Catalogue, params: CoreParams) -> np.ndarray | None:
    """An own-space updater's mid-term level over every row (its scores are not cosines
    with catalogue vectors, so no index holds them: its item space is scanned, exactly)."""
    updater = params.updater
    if not state.interests or not _own_space(updater):
        return None
    raw = updater.scores_many([i.hidden for i in state.interests], catalogue)
    zs = composition.standardise_rows(np.asarray(raw))
    return _composed_mid(state, params, zs)


def _best_rows(level: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` rows of ``level`` with the highest finite values."""
    ok = np.flatnonzero(np.isfinite(level))
    if len(ok) <= width:
        return ok
    return ok[np.argpartition(-level[ok], width - 1)[:width]]


def _short_directions(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    dirs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The short-term level's directions and shares; shares None: the window's one direction.

    Each window event goes with the interest closest to it; each interest's
    events give one direction, weighted by their mass. With at most one
    interest (or interests in another space) it is the window's direction.
    ``dirs``: the interests' `composition.directions`, when the caller has them.
    """
    entries = [(e, catalogue.vector(e.item_id)) for e in state.window]
    entries = [(e.weight, v) for e, v in entries if v is not None]
    if not entries:
        return None
    if dirs is None:
        dirs = composition.directions(state.interests, params.updater)
    if dirs.shape[0] <= 1 or dirs.shape[1] != catalogue.dim:
        short = window_vector(state.window, catalogue)
        return (short[None], None) if short.any() else None
    vecs = np.stack([v for _, v in entries])
    weights = np.array([w for w, _ in entries], dtype=np.float64)
    owner = np.argmax(vecs @ dirs.T, axis=1)
    # [interests, events]: 1 where the event goes with the interest
    mine = (owner[None, :] == np.arange(len(dirs))[:, None]).astype(np.float64)
    totals = (mine * weights) @ vecs.astype(np.float64)  # each interest's events' weighted sum
    norms = np.sqrt(np.einsum("kd,kd->k", totals, totals))
    ok = mine.any(axis=1) & np.isfinite(norms) & (norms >= 1e-12)
    if not ok.any():
        return None
    mass = np.maximum(mine[ok] @ weights.clip(min=0), composition.MIN_MASS)
    return (totals[ok] / norms[ok, None]).astype(np.float32), mass / mass.sum()


#: Fetch directions closer than this cosine share one fetch (`_fetch_directions`).
SAME_FETCH = 0.99


def _fetch_directions(state: UserState, catalogue: Catalogue, params: CoreParams) -> np.ndarray:
    """[q, dim]: the catalogue-space directions whose best rows are a user's candidates.

    Every direction a level scores by: the interests' (unless the updater
    scores in its own space, `_own_mid`), the short-term parts', the
    long-term profile's. Zero directions (undefined) fetch nothing, and of
    directions within `SAME_FETCH` of each other only the first fetches.
    """
    out: list[np.ndarray] = []
    if state.interests and not _own_space(params.updater):
        out.extend(params.updater.query(i.hidden) for i in state.interests)
    phrases = _phrase_directions(state, params)
    if phrases is not None:
        out.extend(phrases[0])
    short = _short_directions(state, catalogue, params)
    if short is not None:
        out.extend(short[0])
    long = levels.unit(state.long_term)
    if long.shape == (catalogue.dim,) and long.any():
        out.append(long)
    dirs = [np.asarray(d, dtype=np.float32) for d in out if d.shape == (catalogue.dim,) and d.any()]
    if not dirs:
        return np.zeros((0, catalogue.dim), dtype=np.float32)
    stacked = np.stack(dirs)
    unit = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    cos = np.triu(unit @ unit.T, k=1)
    # One fetch for directions that would fetch the same rows: an interest of
    # one event and its short-term part are the same item's vector.
    return stacked[~(cos >= SAME_FETCH).any(axis=0)]


def mid_direction(state: UserState, params: CoreParams) -> np.ndarray:
    """The interests' directions averaged by their weights (a unit vector, or zeros)."""
    if not state.interests:
        return np.zeros(0, dtype=np.float32)
    dirs = composition.directions(state.interests, params.updater)
    w = composition.weights(state.interests, state.last_event_ts, params.composition)
    return levels.unit(w @ dirs)


def interest_summary(
    state: UserState, catalogue: Catalogue, params: CoreParams, before: UserState | None = None
) -> dict:
    """The readable interest of ``state`` a delta carries (README: "Delta contract").

    ``short_term`` / ``mid_term`` are the closest tags (schema 1); ``topics``
    the user's topics with how their share moved since ``before``; ``levels``
    each level's weight and topics; ``interests`` each interest's weight and
    topics; ``query`` the latest query's phrases.
    """
    return interest_summaries([state], catalogue, params, [before])[0]


def interest_summaries(
    states: Sequence[UserState],
    catalogue: Catalogue,
    params: CoreParams,
    befores: Sequence[UserState | None],
) -> list[dict]:
    """`interest_summary` of each of ``states``, all their directions read in one block.

    The tags and topics of every user's levels and interests come from one
    `Catalogue.tag_weights_many` and one `OnlineTopics.distribution_many`,
    whose products are blocked (`models.catalogue.blocked_product`): each
    summary is the one its user gets alone.
    """
    parts = [_summary_directions(state, catalogue, params) for state in states]
    views = _readable_many([v for vecs, _ in parts for v in vecs], catalogue)
    out, at = [], 0
    for state, before, (vecs, w) in zip(states, befores, parts, strict=True):
        out.append(_summary(state, catalogue, params, before, w, views[at : at + len(vecs)]))
        at += len(vecs)
    return out


def _summary_directions(
    state: UserState, catalogue: Catalogue, params: CoreParams
) -> tuple[list[np.ndarray], np.ndarray]:
    """The directions a summary reads (short, mid, long, then each interest's), and the
    interests' weights."""
    short = window_vector(state.window, catalogue)
    w = composition.weights(state.interests, state.last_event_ts, params.composition)
    dirs = params.updater.readable_directions([i.hidden for i in state.interests], catalogue)
    mid = levels.unit(w @ dirs) if state.interests else np.zeros(0, dtype=np.float32)
    return [short, mid, levels.unit(state.long_term), *dirs], w


def _summary(
    state: UserState,
    catalogue: Catalogue,
    params: CoreParams,
    before: UserState | None,
    w: np.ndarray,
    views: list[dict[str, object]],
) -> dict:
    """`interest_summary` from its directions' readable ``views`` (`_summary_directions`)."""
    readable = dict(zip(("short", "mid", "long"), views[:3], strict=True))
    out: dict[str, object] = {
        "events": state.events_applied,
        "short_term": readable["short"]["tags"],
        "mid_term": readable["mid"]["tags"],
        "pending": len(state.pending),
    }
    level_share = level_weights(state, params)
    out["levels"] = {
        name: {"weight": round(level_share[name], 3), **readable[name]} for name in readable
    }
    out["interests"] = [
        {"weight": round(float(w[n]), 3), "events": i.events, **views[3 + n]}
        for n, i in enumerate(state.interests)
    ]
    topics = catalogue.topics
    if topics is not None:
        was = dict(shares(before.topics, n=len(before.topics))) if before is not None else {}
        out["topics"] = [
            {
                "id": t,
                "label": topics.label(t).text,
                "share": round(share, 3),
                "change": round(share - was.get(t, 0.0), 3),
            }
            for t, share in shares(state.topics, n=3)
            if t in topics.topics()
        ]
        out["next"] = [
            {"id": t, "label": topics.label(t).text, "share": round(share, 3)}
            for t, share in next_topics(state, catalogue)
            if t in topics.topics()
        ]
    if state.query is not None:
        out["query"] = {
            "text": state.query.text,
            "phrases": [
                {
                    "text": p.text,
                    "polarity": "positive" if p.polarity > 0 else "negative",
                    "weight": round(p.weight, 3),
                }
                for p in state.query.phrases
            ],
        }
    return out


#: `next_topics`: the share of the prediction that comes from the user's list
#: (the rest is the user's topic mix). Measured by benchmarks/next_interest.py.
NEXT_LIST_SHARE = 0.1


def next_topics(
    state: UserState, catalogue: Catalogue, n: int = 3, list_share: float = NEXT_LIST_SHARE
) -> list[tuple[int, float]]:
    """The ``n`` topics the user's next events are predicted in, with shares, best first.

    The core's list is its prediction of the next items: each listed item's
    topic counts ``1 / log2(rank + 2)`` (the list normalised to sum to 1),
    blended with the user's own topic mix (``UserState.topics``) as
    ``list_share`` to ``1 - list_share``. Empty without a topic model or
    before any event.
    """
    topics = catalogue.topics
    if topics is None:
        return []
    mass: dict[int, float] = {}
    listed = [
        (topics.topic_of(item), 1.0 / np.log2(r + 2)) for r, (item, _) in enumerate(state.top_k)
    ]
    listed = [(t, w) for t, w in listed if t is not None]
    total = sum(w for _, w in listed)
    mix = shares(state.topics, n=len(state.topics))
    share = list_share if mix else 1.0
    if total > 0:
        for t, w in listed:
            mass[t] = mass.get(t, 0.0) + share * w / total
    else:
        share = 0.0
    for t, s in mix:
        mass[t] = mass.get(t, 0.0) + (1.0 - share) * s
    norm = sum(mass.values())
    if norm <= 0:
        return []
    positive = [(t, m) for t, m in mass.items() if m > 0]
    best = sorted(positive, key=lambda tm: (-tm[1], tm[0]))[: max(n, 0)]
    return [(t, m / norm) for t, m in best]


def _readable_many(vecs: list[np.ndarray], catalogue: Catalogue) -> list[dict[str, object]]:
    """Each direction's closest tags and, with a topic model, its topics (one product each)."""
    topics = catalogue.topics
    empty = {"tags": [], **({"topics": []} if topics is not None else {})}
    rows = [n for n, v in enumerate(vecs) if v.shape == (catalogue.dim,) and v.any()]
    out: list[dict[str, object]] = [dict(empty) for _ in vecs]
    if not rows:
        return out
    matrix = np.stack([vecs[n] for n in rows])
    tags = catalogue.tag_weights_many(matrix)
    dists = topics.distribution_many(matrix, n=3) if topics is not None else None
    for k, n in enumerate(rows):
        out[n] = {"tags": tags[k]}
        if dists is not None:
            out[n]["topics"] = [
                {"id": t, "label": topics.label(t).text, "share": round(share, 3)}
                for t, share in dists[k]
            ]
    return out


class _Run:
    """Mutable scratch space for one `step`; never escapes it (but to `finish`, via `Prepared`)."""

    def __init__(self, state: UserState, params: CoreParams, catalogue: Catalogue) -> None:
        self.params, self.catalogue = params, catalogue
        self.interests = state.interests
        self.long_term, self.long_term_ts = state.long_term, state.long_term_ts
        self.topics = state.topics
        self.last_ts, self.gap_s = state.last_event_ts, state.gap_s
        self.query = state.query
        self.window = state.window
        self.detector = (
            None if state.shift_detector is None else DetectorState.from_tuple(state.shift_detector)
        )
        self.shifts, self.last_shift_ts = state.shifts, state.last_shift_ts
        #: The shifts flagged in this step, readable (the delta's ``interest.shift``).
        self.flagged: list[dict[str, object]] = []
        self.consumed = set(state.consumed)
        self.recent_ids = list(state.recent_event_ids)
        self._seen = set(self.recent_ids) | {p.event_id for p in state.pending}
        self.offsets = dict(state.offsets)
        self.pending: list[PendingEvent] = []
        self.applied: list[Behaviour] = []
        self.applied_ids: list[str] = []
        self.applied_ts: list[float] = []
        self.duplicates: list[Behaviour] = []
        self.replayed: list[Behaviour] = []
        self.parked: list[Behaviour] = []
        self.count = 0

    def take(self, event: Behaviour) -> None:
        pos = event.position
        if pos is not None:
            if self.offsets.get(pos.tp, -1) >= pos.offset:
                self.replayed.append(event)
                return
            self.offsets[pos.tp] = pos.offset
        if event.event_id in self._seen:
            self.duplicates.append(event)
            return
        self._seen.add(event.event_id)
        weight = event_weight(event, self.params.type_weights)
        if event.type == "query":
            self.applied.append(event)
            self.apply_query(event, weight)
            return
        if event.item_id not in self.catalogue:
            self.pending.append(
                PendingEvent(event.item_id, event.type, event.ts, weight, event.event_id, pos)
            )
            self.parked.append(event)
            return
        self.applied.append(event)
        self.apply(event.item_id, event.type, event.ts, weight, event.event_id)

    def apply(self, item_id: str, type_: str, ts: float, weight: float, event_id: str) -> None:
        vec = self.catalogue.vector(item_id)
        assert vec is not None
        params = self.params
        self.interests, _ = composition.absorb(
            self.interests,
            vec,
            params.updater.represent(item_id, vec),
            weight,
            ts,
            params.updater,
            params.composition,
        )
        self.long_term, self.long_term_ts = levels.update_long(
            self.long_term, self.long_term_ts, vec, weight, ts, params.levels.long_half_life_s
        )
        topics = self.catalogue.topics
        if topics is not None:
            topic = topics.topic_of(item_id)
            topic = topics.assign(vec) if topic is None else topic
            self.topics = update_user_topics(self.topics, topic, weight, params.topic_decay)
        self.window = slide(self.window, WindowEntry(item_id, type_, ts, weight), params.window)
        if weight > 0 and params.shift is not None:
            self._watch_shift(event_id, ts, params.shift)
        self.consumed.add(item_id)
        self._mark(event_id, ts)

    def _watch_shift(self, event_id: str, ts: float, spec: ShiftSpec) -> None:
        """Feed the window's block distance to the detector; on a flag, record before/after."""
        pair = shift.blocks(self.window, self.catalogue, spec)
        if pair is None:
            return
        recent, reference = pair
        signal = shift.distance(recent, reference)  # shift.block_distance, blocks kept
        self.detector, flagged = shift.observe(self.detector, signal, spec)
        if not flagged:
            return
        self.shifts += 1
        self.last_shift_ts = ts
        before, after = _readable_many([reference, recent], self.catalogue)
        self.flagged.append(
            {
                "event_id": event_id,
                "ts": ts,
                "signal": round(signal, 4),
                "before": before,
                "after": after,
            }
        )

    def apply_query(self, event: Behaviour, weight: float) -> None:
        """Positive phrases become (or move) interests; negative ones are kept to push down."""
        params, topics = self.params, self.catalogue.topics
        for phrase in event.phrases:
            if phrase.polarity <= 0 or phrase.vector.shape != (self.catalogue.dim,):
                continue
            self.interests = open_phrase(
                self.interests,
                phrase.text,
                phrase.vector,
                weight * phrase.weight,
                event.ts,
                params.updater,
                params.composition,
            )
            if topics is not None:
                self.topics = update_user_topics(
                    self.topics, topics.assign(phrase.vector), weight * phrase.weight, 1.0
                )
        self.query = LastQuery(
            text=event.text or "",
            ts=event.ts,
            phrases=tuple(QueryPhrase(p.text, p.polarity, p.weight) for p in event.phrases),
            negatives=_negatives(event.phrases),
            positives=tuple(
                np.asarray(p.vector, dtype=np.float32) for p in event.phrases if p.polarity > 0
            ),
            weight=weight,
        )
        self._mark(event.event_id, event.ts)

    def _mark(self, event_id: str, ts: float) -> None:
        if self.last_ts is None or ts > self.last_ts:
            self.gap_s = None if self.last_ts is None else ts - self.last_ts
            self.last_ts = ts
        self.recent_ids.append(event_id)
        self.applied_ids.append(event_id)
        self.applied_ts.append(ts)
        self.count += 1


def _negatives(phrases: tuple[EncodedPhrase, ...]) -> tuple[np.ndarray, ...]:
    """Each negative phrase's vector less its part along the query's positive phrases.

    "space, nothing jazz": MiniLM puts "jazz" partly along "space", so the
    raw vector would push the space items the user asked for. Only the
    remainder (Gram-Schmidt against the positive phrases' span) pushes.
    """
    positives = [np.asarray(p.vector, dtype=np.float64) for p in phrases if p.polarity > 0]
    basis: list[np.ndarray] = []
    for v in positives:
        for b in basis:
            v = v - (v @ b) * b
        norm = float(np.linalg.norm(v))
        if norm > 1e-6:
            basis.append(v / norm)
    out = []
    for p in phrases:
        if p.polarity < 0:
            v = np.asarray(p.vector, dtype=np.float64)
            for b in basis:
                v = v - (v @ b) * b
            out.append(v.astype(np.float32))
    return tuple(out)


def _bounded(
    pending: list[PendingEvent], limit: int
) -> tuple[list[PendingEvent], list[PendingEvent]]:
    if len(pending) <= limit:
        return pending, []
    return pending[-limit:], pending[:-limit]
