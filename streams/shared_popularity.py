"""The cold-start popularity prior's counts, shared by every worker through the store.

The counter (`models.interest.popularity.KeyedPopularity`: decayed counts
per item id) lives in the store as the blob ``popularity-<half-life>``, so a
new user who sends a query is ranked by what *every* worker's newcomers
consumed lately (`models.core.uses_prior`, `models.core.with_prior`), and
the counts survive restarts. The half-life is in the name because counters
of two half-lives cannot be merged: workers on different settings during a
rolling change keep apart instead of overwriting each other.

Each micro-batch's written users add their counted events (`newcomer_weight`
of each consumption event, `streams.processor.BehaviourProcessor`) to a
pending counter in memory. The pending counts go to the store only when at
least ``flush_events`` events are pending or ``flush_seconds`` passed since
the last write: one compare-and-set write per micro-batch at most, none for
a batch that counted nothing, reloading and adding again when another worker
wrote first (`streams.shared_prototypes` does the same). The worker's own
pending counts are part of the prior it ranks with. It reloads the blob at
least every ``reload_seconds``. A crash loses the pending counts (at most
``flush_events`` events, or ``flush_seconds`` of them), and a replayed batch
counts twice: these are statistics, not events, and the prior is
log-scaled and standardised, so a few events more or less barely move it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from models.catalogue import Catalogue
from models.core import PriorAt
from models.interest.popularity import KeyedPopularity, PopularityParams
from streams.shared_blob import read_newer, write_merged
from streams.stores.base import Store


def blob_name(half_life_s: float) -> str:
    """The blob of the counter of one half-life.

    >>> blob_name(2592000.0), blob_name(math.inf)
    ('popularity-2592000', 'popularity-inf')
    """
    return f"popularity-{half_life_s:.15g}"


class SharedPopularity:
    """One worker's view of the shared popularity counter, and its pending counts.

    Parameters
    ----------
    store
        Where the counter lives (`blob_name` of ``params.half_life_s``).
    params
        The prior's settings (half-life; `models.core` reads the rest).
    flush_events, flush_seconds
        Pending counts are written once this many events are pending, or
        this long after the last write, whichever comes first.
    reload_seconds
        Longest a worker goes without reading the other workers' counts.
    """

    def __init__(
        self,
        store: Store,
        params: PopularityParams,
        *,
        flush_events: int = 200,
        flush_seconds: float = 5.0,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_events < 1 or not (flush_seconds >= 0 and math.isfinite(flush_seconds)):
            raise ValueError("flush_events must be >= 1 and flush_seconds a finite number >= 0")
        self.store, self.params = store, params
        self.flush_events, self.flush_seconds = flush_events, flush_seconds
        self.reload_seconds, self.clock = reload_seconds, clock
        self.blob = blob_name(params.half_life_s)
        self.current = KeyedPopularity.empty(params.half_life_s)
        self.version = 0
        self.pending = KeyedPopularity.empty(params.half_life_s)
        self.pending_events = 0
        #: Successful blob writes so far (for the log and the tests).
        self.writes = 0
        self._loaded_at = -math.inf
        self._flushed_at = clock()
        self._view: KeyedPopularity | None = None
        self._rows: tuple[tuple[str, ...], tuple[int, int], np.ndarray] | None = None

    def refresh(self, force: bool = False) -> None:
        """Read the other workers' latest counts when forced or due."""
        if force or self.clock() - self._loaded_at >= self.reload_seconds:
            self._load()

    def count(self, item_ids: Sequence[str], ts: Sequence[float], weights: Sequence[float]) -> None:
        """Add one batch's counted events (item id, event time, weight) to the pending counts."""
        kept = [(i, t, w) for i, t, w in zip(item_ids, ts, weights, strict=True) if w > 0.0]
        if not kept:
            return
        items, times, ws = zip(*kept, strict=True)
        self.pending = self.pending.observe(list(items), list(times), list(ws))
        self.pending_events += len(kept)
        self._view = None

    def flush(self, force: bool = False) -> bool:
        """Write the pending counts when due (or forced); True when it wrote."""
        if not self.pending_events:
            return False
        due = (
            self.pending_events >= self.flush_events
            or self.clock() - self._flushed_at >= self.flush_seconds
        )
        if not (due or force):
            return False
        self.current, self.version = write_merged(
            self.store, self.blob, lambda: self.current.merge(self.pending),
            lambda: self.version, self._load, "popularity",
        )  # fmt: skip
        self._loaded_at = self._flushed_at = self.clock()
        self.pending = KeyedPopularity.empty(self.params.half_life_s)
        self.pending_events = 0
        self.writes += 1
        self._view = None
        return True

    def prior_at(self, catalogue: Catalogue) -> PriorAt:
        """The prior over ``catalogue``'s rows at an event time, for `models.core.step`.

        The store's counts plus this worker's pending ones, as they are at
        the first read. Read only for a user the prior is for; each event
        time is computed once per call of `prior_at` (one micro-batch).
        """
        memo: dict[float, np.ndarray] = {}
        read: list[tuple[KeyedPopularity, np.ndarray, np.ndarray]] = []

        def at(ts: float) -> np.ndarray:
            if not read:  # first cold user of the batch: most batches have none
                view = self._counts()
                ids, _, alive = catalogue.rows()
                read.append((view, self._index(view, catalogue, ids), alive))
            if ts not in memo:
                view, index, alive = read[0]
                memo[ts] = view.prior_rows(ts, index, alive, self.params.prior_events)
            return memo[ts]

        return at

    def _counts(self) -> KeyedPopularity:
        if self._view is None:
            pending = self.pending
            self._view = self.current.merge(pending) if self.pending_events else self.current
        return self._view

    def _index(self, view: KeyedPopularity, catalogue: Catalogue, ids: list[str]) -> np.ndarray:
        """The counter's row of each catalogue row, cached while neither changes.

        A counter keeps its ids tuple (the same object) until an id is added.
        """
        revision = catalogue.revision
        cached = self._rows
        if cached is None or cached[0] is not view.ids or cached[1] != revision:
            cached = self._rows = (view.ids, revision, view.rows_of(ids))
        return cached[2]

    def _load(self) -> None:
        newer = read_newer(self.store, self.blob, self.version, self._decode, "popularity counts")
        self._loaded_at = self.clock()
        if newer is None:
            return
        loaded, self.version = newer
        if loaded is not None:
            self.current, self._view = loaded, None

    def _decode(self, data: bytes) -> KeyedPopularity:
        loaded = KeyedPopularity.from_bytes(data)
        if loaded.half_life_s != self.params.half_life_s:
            raise ValueError(f"half-life {loaded.half_life_s}, not {self.params.half_life_s}")
        return loaded
