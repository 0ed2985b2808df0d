"""Torch-free inference of the learned recurrent updater.

`load_artifact` reads an exported model folder, `GruCell` runs its equations
in numpy and `LearnedUpdater` plugs it into the streaming core. Training and
export live in `models.training` (needs the ``train`` extra).
"""

from __future__ import annotations

from models.learned.artifact import (
    FORMAT_VERSION,
    Artifact,
    ArtifactError,
    load_artifact,
    save_artifact,
)
from models.learned.cell import GruCell, gap_features
from models.learned.updater import LearnedUpdater

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "ArtifactError",
    "GruCell",
    "LearnedUpdater",
    "gap_features",
    "load_artifact",
    "save_artifact",
]
