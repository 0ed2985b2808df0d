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

import time
from collections.abc import Callable

from models.learned import LearnedUpdater
from models.learned.prototypes import ItemPrototypes
from streams.shared_blob import read_newer, write_merged
from streams.stores.base import Store


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
        self._use(*write_merged(
            self.store, self.blob, lambda: self.current.merged(observed),
            lambda: self.version, self._load, "item prototypes",
        ))  # fmt: skip

    def _use(self, prototypes: ItemPrototypes, version: int) -> None:
        self.current, self.version, self._loaded_at = prototypes, version, self.clock()
        self.updater.set_prototypes(prototypes)

    def _load(self) -> None:
        newer = read_newer(
            self.store, self.blob, self.version, ItemPrototypes.from_bytes, "item prototypes"
        )
        self._loaded_at = self.clock()
        if newer is None:
            return
        loaded, version = newer
        if loaded is None:
            self.version = version  # the next write replaces them
        else:
            self._use(loaded, version)
