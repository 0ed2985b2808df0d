"""Frozen text embeddings of a log's items, encoded once and cached as ``.npz``.

The texts are the log's `item_text` (title and genres), encoded by the
project's ONNX MiniLM encoder, unit rows. The cache is keyed by a hash of
the texts, so another catalogue never reads a stale file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from models.evaluation.data import Interactions


def texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def item_texts(log: Interactions) -> list[str]:
    return [log.item_text(i) for i in range(log.n_items)]


def text_embeddings(log: Interactions, cache: str | Path | None = None) -> np.ndarray:
    """[n_items, 384] float32 unit embeddings of the items' texts (cached when ``cache``)."""
    texts = item_texts(log)
    key = texts_hash(texts)
    path = Path(cache) if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["texts_hash"]) == key:
                return npz["embeddings"].astype(np.float32)
    from models.encoder import OnnxEncoder, ensure_exported

    emb = OnnxEncoder(ensure_exported(), device="cpu").encode(texts).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, embeddings=emb, texts_hash=np.array(key), item_ids=np.array(log.item_ids))
        tmp.replace(path)
    return emb
