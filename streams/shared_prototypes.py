"""The online collaborative part of new items, shared by every worker through the store.

`models.learned.prototypes.ItemPrototypes` of the running model live in the
store as the blob ``prototypes-<model version>``, so every worker ranks
new items with what all of them learned, and the part survives restarts.
After each micro-batch whose states were written, a worker adds that
batch's observations (for each applied event on an item the model never
saw, the user's ranking query before the batch) to the latest blob with
compare-and-set (`Store.put_blob`), reloading and adding again when
another worker wrote first, as `streams.shared_topics` does. It reloads the
blob at least every ``reload_seconds``. A crash between a state write and
the blob write loses that batch's observations (or, replayed, counts them
twice): these are statistics, not events, and the shrinkage makes one
observation more or less a small change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from models.learned import LearnedUpdater
from models.learned.prototypes import ItemPrototypes
from streams.failures import InfrastructureError
from streams.stores.base import Store

log = logging.getLogger("interest_stream.prototypes")

MAX_ATTEMPTS = 8


def blob_name(model_version: str) -> str:
    return f"prototypes-{model_version}"


class SharedPrototypes:
    """One worker's view of the shared prototypes of ``updater``'s model."""

    def __init__(
        self,
        store: Store,
        updater: LearnedUpdater,
        *,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.updater = store, updater
        self.reload_seconds, self.clock = reload_seconds, clock
        self.model_version = updater.artifact.model_version
        self.blob = blob_name(self.model_version)
        self.current = ItemPrototypes(self.model_version)
        self.version = 0
        self._loaded_at = -float("inf")

    def refresh(self, force: bool = False) -> None:
        """Read the latest prototypes from the store when forced or due, for the updater."""
        if force or self.clock() - self._loaded_at >= self.reload_seconds:
            self._load()

    def learn(self, observed: ItemPrototypes) -> None:
        """Add one batch's observations to the shared prototypes."""
        if not len(observed):
            return
        for _ in range(MAX_ATTEMPTS):
            merged = self.current.merged(observed)
            written = self.store.put_blob(self.blob, merged.to_bytes(), self.version)
            if written is not None:
                self._use(merged, written.version)
                return
            self._load()  # another worker wrote first: add ours on top of theirs
        raise InfrastructureError(f"item prototypes: {MAX_ATTEMPTS} concurrent writers in a row")

    def _use(self, prototypes: ItemPrototypes, version: int) -> None:
        self.current, self.version, self._loaded_at = prototypes, version, self.clock()
        self.updater.set_prototypes(prototypes)

    def _load(self) -> None:
        blob = self.store.get_blob(self.blob)
        self._loaded_at = self.clock()
        if blob is None or blob.version == self.version:
            return
        try:
            loaded = ItemPrototypes.from_bytes(blob.data)
        except ValueError as exc:
            log.error("item prototypes v%d in the store are unreadable: %s", blob.version, exc)
            self.version = blob.version  # the next write replaces them
            return
        self._use(loaded, blob.version)
