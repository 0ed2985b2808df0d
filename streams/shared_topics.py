"""The online topic model, shared by every worker through the store.

The model (`models.interest.topics.OnlineTopics`) lives in the store as the
blob ``topics``, next to the catalogue, so topic ids are the same on every
worker and survive restarts. The item agent teaches it: for each batch of
new or changed items it reads the latest model, lets it observe them, and
writes it back with compare-and-set (`Store.put_blob`); a writer that lost
the race reloads and applies its items again. It does so *before* the items
reach the store's change feed, so a worker that sees an item in the feed
finds a model that knows it. Every worker reloads the model when the feed
shows item changes, and at least every ``reload_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from models.interest.topics import OnlineTopics
from streams.shared_blob import read_newer, write_merged
from streams.stores.base import Store

BLOB = "topics"
#: Compare-and-set attempts before the batch is retried as a whole.


class SharedTopics:
    """One worker's view of the shared topic model.

    Parameters
    ----------
    store
        Where the model lives (blob ``topics``).
    dim
        Width of the item embeddings.
    max_topics, seed
        For a model created from nothing (the first item ever).
    reload_seconds
        Longest a worker goes without checking the store for a newer model.
    """

    def __init__(
        self,
        store: Store,
        dim: int,
        *,
        max_topics: int = 32,
        seed: int = 0,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.dim, self.max_topics, self.seed = store, dim, max_topics, seed
        self.reload_seconds, self.clock = reload_seconds, clock
        self.model: OnlineTopics | None = None
        self.version = 0
        self._loaded_at = -float("inf")

    def refresh(self, force: bool = False) -> OnlineTopics | None:
        """The latest model, read from the store when forced or due."""
        if force or self.clock() - self._loaded_at >= self.reload_seconds:
            self._load()
        return self.model

    def learn(
        self, observed: Sequence[tuple[str, np.ndarray, str]], forgotten: Sequence[str]
    ) -> None:
        """Teach the shared model new or changed items ``(id, vector, text)`` and removed ids."""
        if not observed and not forgotten:
            return

        def build() -> OnlineTopics:
            model = self._fresh_copy()
            for item_id, vector, text in observed:
                model.observe(item_id, vector, text)
            for item_id in forgotten:
                model.forget(item_id)
            return model

        self.model, self.version = write_merged(
            self.store, BLOB, build, lambda: self.version, self._load, "topic model"
        )
        self._loaded_at = self.clock()

    def _fresh_copy(self) -> OnlineTopics:
        if self.model is None:
            return OnlineTopics(self.dim, max_topics=self.max_topics, seed=self.seed)
        return OnlineTopics.from_bytes(self.model.to_bytes())

    def _load(self) -> None:
        newer = read_newer(self.store, BLOB, self.version, OnlineTopics.from_bytes, "topic model")
        self._loaded_at = self.clock()
        if newer is None:
            return
        loaded, self.version = newer
        if loaded is not None:  # unreadable: keep ours; the items agent's next write replaces it
            self.model = loaded
