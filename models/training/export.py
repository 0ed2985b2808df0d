"""Export a trained `FusedGru` as a torch-free artefact (see `models.learned.artifact`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.learned.artifact import Artifact, save_artifact
from models.training.gru import FusedGru


def catalogue_ids(raw_ids: list[str], prefix: str) -> list[str]:
    """The ids the workers' catalogue uses for the log's items (``m`` + MovieLens id)."""
    return [f"{prefix}{i}" for i in raw_ids]


def export_gru(
    model: FusedGru,
    item_ids: list[str],
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Artifact:
    """Write the model's weights with the catalogue ids of its warm items.

    ``item_ids`` are the catalogue ids of all the model's item rows; only
    items seen in training get an id embedding in the artefact.
    """
    weights, warm_rows = model.export_weights()
    vocab = [item_ids[r] for r in warm_rows]
    return save_artifact(out_dir, weights, vocab, config=config, metrics=metrics)
