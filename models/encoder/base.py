"""The sentence-encoder contract shared by every backend.

Callers (catalogue embedding, interest updates) only depend on this protocol, so the
runtime can use the torch-free ONNX backend while tests compare it with the PyTorch
reference through exactly the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

#: Rows whose norm is below this are left as (near) zero instead of being blown up.
_NORM_EPS = 1e-12


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to L2-normalised float32 embeddings of a fixed dimension.

    Unit-norm rows make a dot product a cosine similarity, which is what the
    interest model relies on.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape ``(len(texts), dim)`` with unit-norm rows.

        An empty ``texts`` gives shape ``(0, dim)``; the input order is preserved.
        """
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Scale each row of ``x`` to unit L2 norm (float32).

    Backends already normalise in the graph; this guards against drift (e.g. fp16
    execution providers) and is handy for averaged embeddings.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        return (arr / max(float(np.linalg.norm(arr)), _NORM_EPS)).astype(np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return (arr / np.maximum(norms, _NORM_EPS)).astype(np.float32)


def empty_embeddings(dim: int) -> np.ndarray:
    """The ``(0, dim)`` float32 result for an empty batch."""
    return np.zeros((0, dim), dtype=np.float32)
