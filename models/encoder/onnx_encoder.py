"""Runtime sentence encoder: the exported ONNX graph + the Rust `tokenizers` library.

Needs neither torch nor transformers, so stream workers stay small; the artifact comes
from :func:`models.encoder.export.ensure_exported` (or a copied export folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .artifact import DIM, ONNX_FILE, TOKENIZER_FILE, read_manifest
from .base import empty_embeddings

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# BERT position embeddings stop here.
_MAX_POSITIONS = 512


def select_providers(device: str) -> list[str]:
    """Map ``device`` ("auto", "cuda", "cpu") to onnxruntime providers, in priority order."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if device == "cuda":
        if _CUDA not in available:
            raise RuntimeError(
                f"device='cuda' but onnxruntime offers no CUDA provider (available: {available}); "
                "install the `gpu` extra (onnxruntime-gpu) in place of onnxruntime, "
                "or use device='cpu'."
            )
        return [_CUDA, _CPU]
    if device == "auto":
        return [_CUDA, _CPU] if _CUDA in available else [_CPU]
    raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', not {device!r}")


class OnnxEncoder:
    """all-MiniLM-L6-v2 on onnxruntime; implements :class:`models.encoder.base.Encoder`."""

    name = "minilm-l6-v2-onnx"

    def __init__(
        self,
        artifact_dir: Path,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 256,
        intra_op_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 2 <= max_length <= _MAX_POSITIONS:
            raise ValueError(f"max_length must be in [2, {_MAX_POSITIONS}]")
        artifact_dir = Path(artifact_dir)
        manifest = read_manifest(artifact_dir) or {}
        self.dim: int = int(manifest.get("dim", DIM))
        self.batch_size = batch_size
        self.max_length = max_length

        self._tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        # The saved tokenizer pads/truncates to a fixed 128; we pad per batch ourselves.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(
            str(artifact_dir / ONNX_FILE),
            sess_options=options,
            providers=select_providers(device),
        )
        self.providers: list[str] = list(self._session.get_providers())
        if device == "cuda" and _CUDA not in self.providers:
            raise RuntimeError(
                "device='cuda' but onnxruntime could not start the CUDA provider "
                "(check the CUDA/cuDNN libraries onnxruntime-gpu needs)."
            )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` in input order (batched by token length to cut padding)."""
        if len(texts) == 0:
            return empty_embeddings(self.dim)
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            ids, mask = self._pad([encodings[i].ids for i in rows], int(lengths[rows].max()))
            (emb,) = self._session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})
            out[rows] = emb
        return out

    def _pad(self, seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask
