"""The exported learned updater: a folder with ``weights.npz`` and ``manifest.json``.

Why plain numpy weights and not ONNX: the cell is one GRU step on a few
hundred floats, called per event inside the pure core. A numpy step costs a
few microseconds of matrix-vector products, while an ONNX Runtime session
call costs tens of microseconds of fixed overhead per call, needs a session
object in every worker and an operator graph for a state that we feed one
event at a time anyway. Weights in an ``.npz`` (no pickle: ``allow_pickle``
stays off) are readable without torch, diffable, and the same arrays drive
the batched evaluation path and the parity test.

Layout (``FORMAT_VERSION`` 1)::

    <dir>/manifest.json   format_version, model_version (sha256 of the
                          weights), kind, dims, behaviour types, training
                          config and metrics, item-id vocabulary
    <dir>/weights.npz     float32 arrays named in ``WEIGHT_NAMES``

`load_artifact` refuses unknown format versions and weights whose hash does
not match the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic_write import write_atomic

FORMAT_VERSION = 1
KIND = "gru-fused-v1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"

#: Arrays of a format-1 artefact (torch ``nn.GRU`` gate layout: r, z, n).
WEIGHT_NAMES = (
    "text_w",  # [text_dim, d]   text embedding -> item space
    "text_b",  # [d]
    "text_bias_w",  # [text_dim]  text embedding -> item score bias
    "id_emb",  # [n_vocab, d]    learned item-id embeddings
    "id_bias",  # [n_vocab]      learned item score bias
    "w_ih",  # [3H, d + 1 + 1 + N_GAP]  input: item rep, bias slot, weight, gap features
    "w_hh",  # [3H, H]
    "b_ih",  # [3H]
    "b_hh",  # [3H]
    "out_w",  # [K * d, H]      hidden -> K queries in item space (K heads, head-major)
    "out_b",  # [K * d]
)

#: Gap features of an event: log1p(hours since the previous event), first-event flag.
N_GAP = 2


class ArtifactError(ValueError):
    """A learned-updater folder that this code cannot or must not load."""


@dataclass(frozen=True)
class Artifact:
    """Weights and manifest of one exported learned updater.

    Attributes
    ----------
    weights
        float32 arrays by name (see `WEIGHT_NAMES`).
    item_ids
        Catalogue item ids with a learned id embedding, row order of ``id_emb``.
    model_version
        Short hash of the weights; part of the updater's name.
    manifest
        The whole manifest (config, metrics, dims).
    """

    weights: dict[str, np.ndarray]
    item_ids: tuple[str, ...]
    model_version: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_dim(self) -> int:
        return int(self.weights["w_hh"].shape[1])

    @property
    def item_dim(self) -> int:
        return int(self.weights["text_w"].shape[1])

    @property
    def heads(self) -> int:
        """Query heads over the hidden state (1: the single-query cell)."""
        return int(self.weights["out_w"].shape[0]) // self.item_dim

    @property
    def text_dim(self) -> int:
        return int(self.weights["text_w"].shape[0])


def weights_hash(weights: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays in a fixed order (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name in WEIGHT_NAMES:
        arr = np.ascontiguousarray(weights[name], dtype="<f4")
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def check_shapes(weights: dict[str, np.ndarray], n_vocab: int) -> None:
    missing = [n for n in WEIGHT_NAMES if n not in weights]
    if missing:
        raise ArtifactError(f"weights missing: {', '.join(missing)}")
    text_dim, d = weights["text_w"].shape
    hidden = weights["w_hh"].shape[1]
    rows = weights["out_w"].shape[0]
    if rows == 0 or rows % d:
        raise ArtifactError(f"out_w has {rows} rows, not a multiple of the item width {d}")
    want = {
        "text_b": (d,),
        "text_bias_w": (text_dim,),
        "id_emb": (n_vocab, d),
        "id_bias": (n_vocab,),
        "w_ih": (3 * hidden, d + 2 + N_GAP),
        "w_hh": (3 * hidden, hidden),
        "b_ih": (3 * hidden,),
        "b_hh": (3 * hidden,),
        "out_w": (rows, hidden),
        "out_b": (rows,),
    }
    for name, shape in want.items():
        if tuple(weights[name].shape) != shape:
            raise ArtifactError(f"{name} has shape {weights[name].shape}, want {shape}")


def save_artifact(
    out_dir: str | Path,
    weights: dict[str, np.ndarray],
    item_ids: list[str] | tuple[str, ...],
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Artifact:
    """Write an artefact folder atomically (files written to temp names, then renamed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {n: np.ascontiguousarray(weights[n], dtype=np.float32) for n in WEIGHT_NAMES}
    check_shapes(arrays, len(item_ids))
    digest = weights_hash(arrays)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "model_version": digest[:16],
        "weights_sha256": digest,
        "text_dim": int(arrays["text_w"].shape[0]),
        "item_dim": int(arrays["text_w"].shape[1]),
        "hidden_dim": int(arrays["w_hh"].shape[1]),
        "heads": int(arrays["out_w"].shape[0]) // int(arrays["text_w"].shape[1]),
        "n_gap_features": N_GAP,
        "config": config or {},
        "metrics": metrics or {},
        "item_ids": list(item_ids),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(out / WEIGHTS, buf.getvalue())
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return Artifact(arrays, tuple(item_ids), manifest["model_version"], manifest)


def load_artifact(path: str | Path) -> Artifact:
    """Read and verify an artefact folder (no torch, no pickle)."""
    folder = Path(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{folder}: cannot read {MANIFEST}: {exc}") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{folder}: learned-updater format_version {version!r} is not supported "
            f"(this code reads {FORMAT_VERSION}); re-export with `interest-stream train`"
        )
    if manifest.get("kind") != KIND:
        raise ArtifactError(f"{folder}: unknown model kind {manifest.get('kind')!r}")
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
            weights = {n: npz[n].astype(np.float32) for n in WEIGHT_NAMES if n in npz.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder}: cannot read {WEIGHTS}: {exc}") from exc
    item_ids = tuple(manifest.get("item_ids", ()))
    check_shapes(weights, len(item_ids))
    digest = weights_hash(weights)
    if digest != manifest.get("weights_sha256"):
        raise ArtifactError(f"{folder}: weights do not match the manifest hash")
    return Artifact(weights, item_ids, manifest["model_version"], manifest)
