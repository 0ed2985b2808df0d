"""Embeddings of a list of texts, encoded once per encoder export and cached as ``.npy``.

Offline runs (the evaluation's time-decay model, training's frozen item
vectors) encode the same catalogue again and again; encoding 1,682 titles
takes a while on a CPU, loading them takes milliseconds. A file is keyed on
the export's manifest (source weights' sha256, tool versions, creation time)
and on the texts, so a re-exported encoder never serves the vectors of the
one before, and another catalogue never reads a stale file.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.atomic_write import write_atomic

from .artifact import MANIFEST_FILE, default_cache_dir, read_manifest
from .base import l2_normalize
from .export import EncoderExportError
from .onnx_encoder import OnnxEncoder


def default_embedding_cache_dir() -> Path:
    """``item-embeddings`` beside the default encoder cache."""
    return default_cache_dir().parent / "item-embeddings"


def cache_key(texts: Sequence[str], artifact: Path) -> str:
    """What the vectors of ``texts`` depend on: the export's manifest and the texts.

    An artifact without a readable manifest is refused: nothing would tell
    its vectors from those of another export.
    """
    manifest = read_manifest(artifact)
    if manifest is None:
        raise EncoderExportError(
            f"{artifact}: no readable {MANIFEST_FILE}, so cached embeddings could not be told "
            "apart from another export's; export it again (`interest-stream models export`)"
        )
    # JSON of the list keeps text boundaries (a joined string would not).
    blob = json.dumps({"encoder": manifest, "texts": list(texts)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached_embeddings(
    texts: Sequence[str], artifact: Path, cache_dir: Path | None = None
) -> np.ndarray:
    """[len(texts), dim] float32 unit rows of ``texts`` by the export in ``artifact``.

    Read from ``cache_dir`` (default `default_embedding_cache_dir`) when this
    export already encoded these texts; else encoded on the CPU and written
    there atomically (concurrent runs may both encode; the last write wins
    and both files are equal).
    """
    path = Path(cache_dir or default_embedding_cache_dir()) / f"{cache_key(texts, artifact)}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    vectors = l2_normalize(OnnxEncoder(artifact, device="cpu").encode(list(texts)))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    write_atomic(path, buf.getvalue())
    return vectors
