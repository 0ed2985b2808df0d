"""The functional core: ``step(state, events, catalogue, now) -> StepResult``.

No I/O, no clock, no randomness. The Faust agents call it per user and
micro-batch; the offline evaluation (`models.evaluation.baselines.TimeDecayCore`)
and the end-to-end tests call it over a whole log; both give the same states
because the interest update is applied one event at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from models.behaviour import Behaviour, event_weight
from models.catalogue import Catalogue
from models.ranking import Ranked
from models.state import PendingEvent, UserState, WindowEntry
from models.update import InterestUpdater, TimeDecayUpdater, mix
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
    short_term_weight
        Share of the window (short-term) direction in the ranking query; the
        rest is the updater's (mid-term) direction.
    dedup_ids
        How many recent event ids are remembered to apply duplicates once.
    max_pending
        How many events may wait for a missing item embedding.
    """

    k: int = 10
    window: WindowSpec = field(default_factory=WindowSpec)
    updater: InterestUpdater = field(default_factory=TimeDecayUpdater)
    short_term_weight: float = 0.3
    dedup_ids: int = 512
    max_pending: int = 256


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
) -> StepResult:
    """Apply a micro-batch of one user's events and re-rank.

    ``refresh`` names items that changed (updated or removed) and concern
    this user: the list is re-ranked even without events. Events whose
    position is at or below the last applied offset of their partition are
    replays and skipped; events whose id was already applied are duplicates
    and skipped; events on items with no embedding wait in ``pending``.
    """
    migrated_from = None
    if state is None:
        if not events:
            return StepResult(None, None, changed=False)
        state = new_state(events[0].user_id, catalogue.dim, params)
    elif (
        state.updater != params.updater.name
        or state.interest.shape != params.updater.initial(catalogue.dim).shape
    ):
        migrated_from = state.updater
        state = rebase(state, catalogue, params.updater)

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
        return StepResult(
            state,
            None,
            changed=False,
            duplicates=tuple(run.duplicates),
            replayed=tuple(run.replayed),
        )

    top_k = tuple(run.top_k())
    pending, overflow = _bounded(run.pending, params.max_pending)
    new = replace(
        state,
        version=state.version + 1,
        interest=run.hidden,
        interest_ts=run.hidden_ts,
        window=run.window,
        consumed=frozenset(run.consumed),
        recent_event_ids=tuple(run.recent_ids[-params.dedup_ids :]),
        offsets=run.offsets,
        pending=tuple(pending),
        top_k=top_k,
        events_applied=state.events_applied + run.count,
    )
    cause = Cause(
        kind="events" if run.count or run.parked else "items",
        event_ids=tuple(run.applied_ids),
        item_ids=tuple(sorted(refresh)),
        last_event_ts=max(run.applied_ts) if run.applied_ts else None,
    )
    delta = diff(state.top_k, top_k, new, now, cause, interest_summary(new, catalogue, params))
    return StepResult(
        new,
        delta,
        changed=True,
        applied=tuple(run.applied),
        duplicates=tuple(run.duplicates),
        replayed=tuple(run.replayed),
        parked=tuple(run.parked),
        overflow=tuple(overflow),
        migrated_from=migrated_from,
    )


def rebase(state: UserState, catalogue: Catalogue, updater: InterestUpdater) -> UserState:
    """``state`` with its interest rebuilt by ``updater`` from the window's events.

    For a model change (another updater, or a new version of one): the old
    vector lives in another space, so it cannot be kept; replaying the
    window through the new model moves the user over instead of resetting
    them. Window items that left the catalogue are skipped.
    """
    hidden, hidden_ts = updater.initial(catalogue.dim), None
    for entry in state.window:
        vec = catalogue.vector(entry.item_id)
        if vec is not None:
            item = updater.represent(entry.item_id, vec)
            hidden, hidden_ts = updater.apply(hidden, hidden_ts, item, entry.weight, entry.ts)
    return replace(state, interest=hidden, interest_ts=hidden_ts, updater=updater.name)


def new_state(user_id: str, dim: int, params: CoreParams) -> UserState:
    return UserState(
        user_id=user_id,
        interest=params.updater.initial(dim),
        updater=params.updater.name,
    )


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
        interest=interest_summary(state, catalogue, params),
    )


def interest_summary(state: UserState, catalogue: Catalogue, params: CoreParams) -> dict:
    """A readable summary: the closest tags of the short and mid-term interest."""
    return {
        "events": state.events_applied,
        "short_term": catalogue.tag_weights(window_vector(state.window, catalogue)),
        "mid_term": catalogue.tag_weights(params.updater.query(state.interest)),
        "pending": len(state.pending),
    }


def query_vector(state: UserState, catalogue: Catalogue, params: CoreParams) -> np.ndarray:
    """The unit vector the core ranks ``state``'s items with (zeros when undefined).

    A mix of the updater's (mid-term) direction and the window's (short-term)
    direction, ``params.short_term_weight`` of the latter. `step` ranks with
    exactly this when the updater keeps the default `InterestUpdater.scores`
    (cosine ranking); offline evaluation scores the whole catalogue with it.
    """
    return _query(state.interest, state.window, catalogue, params)


def _query(
    hidden: np.ndarray,
    window: tuple[WindowEntry, ...],
    catalogue: Catalogue,
    params: CoreParams,
) -> np.ndarray:
    short = window_vector(window, catalogue)
    return mix(params.updater.query(hidden), short, params.short_term_weight)


class _Run:
    """Mutable scratch space for one `step`; never escapes it."""

    def __init__(self, state: UserState, params: CoreParams, catalogue: Catalogue) -> None:
        self.params, self.catalogue = params, catalogue
        self.hidden, self.hidden_ts = state.interest, state.interest_ts
        self.window = state.window
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
        weight = event_weight(event)
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
        vec = self.params.updater.represent(item_id, vec)
        self.hidden, self.hidden_ts = self.params.updater.apply(
            self.hidden, self.hidden_ts, vec, weight, ts
        )
        self.window = slide(
            self.window, WindowEntry(item_id, type_, ts, weight), self.params.window
        )
        self.consumed.add(item_id)
        self.recent_ids.append(event_id)
        self.applied_ids.append(event_id)
        self.applied_ts.append(ts)
        self.count += 1

    def top_k(self) -> list[Ranked]:
        short = window_vector(self.window, self.catalogue)
        params = self.params
        return params.updater.rank(
            self.hidden, short, self.catalogue, params.k, self.consumed, params.short_term_weight
        )


def _bounded(
    pending: list[PendingEvent], limit: int
) -> tuple[list[PendingEvent], list[PendingEvent]]:
    if len(pending) <= limit:
        return pending, []
    return pending[-limit:], pending[:-limit]
