"""Runtime sentence encoder: the exported ONNX graph + the Rust `tokenizers` library.

Needs neither torch nor transformers, so stream workers stay small; the artifact comes
from :func:`models.encoder.export.ensure_exported` (or a copied export folder). The
graph it runs is the export itself (fp32, by default) or one of the variants of
`models.encoder.variants` (fused fp32, int8 for CPUs, fp16 for CUDA); a variant
that can be neither found nor built here falls back to the export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .artifact import DIM, ONNX_FILE, TOKENIZER_FILE, read_manifest
from .base import empty_embeddings, l2_normalize
from .variants import PRECISIONS, VariantUnavailable, ensure_variant

log = logging.getLogger("interest_stream.encoder")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# What onnxruntime raises for a file it cannot load (plain Exception subclasses).
_FALLBACK_ERRORS: tuple[type[BaseException], ...] = (
    VariantUnavailable,
    OSError,
    *(
        getattr(ort.capi.onnxruntime_pybind11_state, name)
        for name in ("Fail", "InvalidGraph", "InvalidProtobuf", "NotImplemented")
    ),
)
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


def effective_precision(precision: str, providers: Sequence[str]) -> str:
    """The precision that runs: fp16 needs the CUDA provider, int8 is a CPU graph.

    A request the providers cannot serve runs fp32, with a warning, so a
    worker configured for a GPU still starts (slower) on a machine without one.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    on_cuda = _CUDA in providers
    if precision == "fp16" and not on_cuda:
        log.warning("encoder precision fp16 needs the CUDA provider (have %s): running fp32",
                    list(providers))  # fmt: skip
        return "fp32"
    if precision == "int8" and on_cuda:
        log.warning("encoder precision int8 is a CPU graph (dynamic quantisation has no CUDA "
                    "kernels): running fp32 on CUDA")  # fmt: skip
        return "fp32"
    return precision


class OnnxEncoder:
    """all-MiniLM-L6-v2 on onnxruntime; implements :class:`models.encoder.base.Encoder`.

    Parameters
    ----------
    device
        "auto" (CUDA when onnxruntime has it), "cuda" (required) or "cpu".
    precision
        "fp32", "int8" (CPU: about 0.99 mean cosine to fp32) or "fp16" (CUDA);
        see `effective_precision` for what runs when the device cannot serve it.
    optimise
        Run fp32 on the transformer-fused graph (`models.encoder.variants`)
        rather than the export as is; off by default, as it measured no faster
        on CPU. int8 and fp16 always run fused graphs.
    io_binding
        Bind inputs and output as device buffers (`session.io_binding`); None:
        on when the CUDA provider runs, where it saves a copy of the output.
    batch_size, max_length, intra_op_threads
        Texts per session run, tokens kept per text, CPU threads (None: ORT's).

    Attributes
    ----------
    providers, precision, graph
        The providers the session runs on, the precision it runs, the file.
    """

    name = "minilm-l6-v2-onnx"

    def __init__(
        self,
        artifact_dir: Path,
        *,
        device: str = "auto",
        precision: str = "fp32",
        optimise: bool = False,
        io_binding: bool | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        intra_op_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        providers = select_providers(device)
        self.precision = effective_precision(precision, providers)
        artifact_dir = Path(artifact_dir)
        manifest = read_manifest(artifact_dir) or {}
        self.dim: int = int(manifest.get("dim", DIM))
        self.batch_size = batch_size

        self._tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        # The saved tokenizer pads/truncates to a fixed 128; we pad per batch ourselves.
        self._tokenizer.no_padding()
        self.max_length = max_length
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self._session = self._open(
            artifact_dir, optimise or self.precision != "fp32", options, providers
        )
        self.providers: list[str] = list(self._session.get_providers())
        if device == "cuda" and _CUDA not in self.providers:
            raise RuntimeError(
                "device='cuda' but onnxruntime could not start the CUDA provider "
                "(check the CUDA/cuDNN libraries onnxruntime-gpu needs)."
            )
        if self.precision != "fp32":
            self.name = f"{OnnxEncoder.name}-{self.precision}"  # re-encode items on a switch
        on_cuda = _CUDA in self.providers
        self.io_binding = on_cuda if io_binding is None else io_binding
        self._bind_device = "cuda" if on_cuda else "cpu"

    def _open(
        self,
        artifact_dir: Path,
        fused: bool,
        options: ort.SessionOptions,
        providers: list[str],
    ) -> ort.InferenceSession:
        """A session on this precision's variant; on the export itself when none can be had.

        A variant that cannot be built here, or that this onnxruntime cannot
        load (built by a newer one), costs speed, not the worker: it runs the
        fp32 export, with a warning.
        """
        export = artifact_dir / ONNX_FILE
        if fused:
            try:
                self.graph = ensure_variant(artifact_dir, self.precision)
                return ort.InferenceSession(
                    str(self.graph), sess_options=options, providers=providers
                )
            except _FALLBACK_ERRORS as exc:
                log.warning("encoder %s graph unavailable (%s); running the fp32 export",
                            self.precision, exc)  # fmt: skip
                self.precision = "fp32"
        self.graph = export
        return ort.InferenceSession(str(export), sess_options=options, providers=providers)

    @property
    def max_length(self) -> int:
        """Tokens kept per text ([CLS] and [SEP] included); longer texts are cut."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        if not 2 <= value <= _MAX_POSITIONS:
            raise ValueError(f"max_length must be in [2, {_MAX_POSITIONS}]")
        self._max_length = value
        self._tokenizer.enable_truncation(max_length=value)

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
            out[rows] = self._run(ids, mask)
        # The graph normalises; int8 and fp16 arithmetic leaves norms a little off 1.
        return out if self.precision == "fp32" else l2_normalize(out)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return self._session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]
        # Inputs copied to the device once, output allocated there by ORT and
        # copied back once: no intermediate host buffers per run.
        binding = self._session.io_binding()
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(array, self._bind_device, 0)
            )
        binding.bind_output("embeddings", self._bind_device)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _pad(self, seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask
