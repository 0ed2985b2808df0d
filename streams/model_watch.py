"""Hot reload: a running worker picks up a newly exported model without a restart.

The ``updater`` setting names a learned-model folder; every
``updater_watch_seconds`` the worker reads that folder's manifest, and when
its ``model_version`` differs from the one it runs it loads the new export
(`LearnedUpdater.load` verifies the weights against the manifest's hash, so
an export caught half-written is refused and tried again at the next poll)
and runs it from the next micro-batch on. Users move over lazily: the
core sees a state written under another updater and rebuilds it by
replaying the user's window through the new model (`models.core.step`,
``migrated_from``), so no state is reset and no event is applied twice.
Every delta names the model that produced it (``model``).

Rolling out: export the new model to a temporary folder next to the
watched one and rename it over the watched one's files, or write it in
place with `interest-stream train --out` (the export is atomic per file).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from models.learned import ArtifactError, LearnedUpdater
from models.learned.artifact import MANIFEST
from models.update import InterestUpdater

log = logging.getLogger("interest_stream.model_watch")


class ModelWatch:
    """Polls a model folder and hands back a new updater when its version changed.

    Parameters
    ----------
    folder
        The learned-model folder the worker was started with.
    current
        The model version the worker runs now.
    interval
        Seconds between two reads of the manifest.
    """

    def __init__(
        self,
        folder: str | Path,
        current: str,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder, self.current = Path(folder), current
        self.interval, self.clock = interval, clock
        self._next = clock() + interval
        self._refused: str | None = None

    def poll(self) -> InterestUpdater | None:
        """The new model's updater when one was exported since; None otherwise."""
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval
        try:
            version = json.loads((self.folder / MANIFEST).read_text()).get("model_version")
        except (OSError, ValueError):
            return None  # mid-rename, or removed for a moment: keep the running model
        if not version or version == self.current:
            return None
        try:
            updater = LearnedUpdater.load(self.folder)
        except (ArtifactError, OSError) as exc:
            if self._refused != version:  # say it once per version, retry every poll
                log.warning("model %s in %s not loaded (yet): %s", version, self.folder, exc)
                self._refused = version
            return None
        log.warning(
            "hot reload: model %s -> %s from %s; users move over on their next event",
            self.current, updater.artifact.model_version, self.folder,
        )  # fmt: skip
        self.current = updater.artifact.model_version
        return updater
