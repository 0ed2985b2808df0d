"""Frozen text embeddings of a log's items: the text half of the learned item vectors.

The texts are `models.datasets.item_texts` (title and genres), encoded by
the project's ONNX MiniLM export (the one the workers run), unit rows,
cached by `models.encoder.embedding_cache` (keyed on the export's manifest
and the texts, so a re-exported encoder is never served stale vectors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.datasets import Interactions, item_texts
from models.encoder import ensure_exported
from models.encoder.embedding_cache import cached_embeddings


def text_embeddings(
    log: Interactions, cache_dir: str | Path | None = None, texts: list[str] | None = None
) -> np.ndarray:
    """[n_items, 384] float32 unit embeddings of the items' texts (cached in ``cache_dir``).

    ``texts`` (one per dense item) replaces `item_texts` where the workers
    embed another text than title and genres (item records with a ``text``).
    The export is the default one (`models.encoder.ensure_exported`), made
    here when missing (training has the `train` extra).
    """
    texts = item_texts(log) if texts is None else texts
    if len(texts) != len(log.item_ids):
        raise ValueError(f"{len(texts)} texts for {len(log.item_ids)} items")
    return cached_embeddings(
        texts, ensure_exported(), Path(cache_dir) if cache_dir is not None else None
    )
