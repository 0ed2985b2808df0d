"""Faster graphs derived from the export: transformer-fused fp32, int8 for CPUs, fp16 for CUDA.

The exported ``model.onnx`` is the reference: plain MatMul/Softmax/LayerNorm
nodes that any ONNX Runtime runs. ONNX Runtime's transformer optimizer fuses
them into its BERT kernels (``EmbedLayerNormalization``, ``Attention``,
``SkipLayerNormalization``, ``BiasGelu``); that fused graph is the base of the
other two variants:

- ``fp32``: the fused graph, numerically the export (cosine >= 0.99999). On
  a 2-core AVX2 CPU it ran at 0.997x the export's speed (geometric mean over
  `benchmarks/encoder_speed.py`'s grid): ONNX Runtime's CPU kernels gain
  nothing from the fused Attention at these sizes, so a CPU encoder runs the
  export as is (`OnnxEncoder`'s ``optimise=False``) and this graph is the base
  of the other two.
- ``int8``: the fused graph with its MatMul and Attention weights quantised
  to int8 per output channel, in 7 bits (``reduce_range``: AVX2 without VNNI
  saturates u8 x s8 products in 16 bits otherwise); dynamic quantisation,
  so activations are scaled per batch at run time. Measured on MovieLens
  texts against fp32 on that CPU: mean cosine 0.992 (titles and 128-token
  texts alike), 1.2-1.45x the speed of fp32 uint8 weights; uint8 weights were
  as accurate (0.993 / 0.991) and 3-19% slower; quantising the embedding
  Gathers too lost 0.0005-0.0016; per-tensor weights fell to 0.96-0.98.
  Because activation ranges are per batch, a text's int8 vector moves
  slightly (cosine >= 0.98) with the batch it is encoded in.
- ``fp16``: the fused graph (GPU fusions) in half precision, for the CUDA
  provider; the inputs and output stay int64/float32 and the pooling and
  normalisation nodes stay fp32, so padding counts and norms are exact.

Building a variant needs the ``onnx`` package (the ``train`` extra); a
runtime image gets them prebuilt by ``interest-stream models export``, which
calls `build_variants`. They live beside the export, in
``<artifact>.variants/<key>/``, where ``key`` hashes the export's manifest:
a re-export (new weights, new creation time) gets new files and the old
key's are deleted, and the export folder itself keeps its three files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
from pathlib import Path

from .artifact import DIM, MANIFEST_FILE, NUM_HEADS, ONNX_FILE, read_manifest
from .export import _locked

log = logging.getLogger("interest_stream.encoder")

PRECISIONS = ("fp32", "int8", "fp16")
#: Bumped when a recipe below changes, so old builds are not served as new ones.
RECIPE_VERSION = 1
_LOCK_FILE = ".build.lock"
# Kept fp32 in the fp16 graph: the mean pooling (sum, count clamp, divide) and
# the L2 norm; a count's 1e-9 floor is 0 in fp16, and sums of 256 rows lose bits.
_FP32_POOLING_OPS = ["ReduceSum", "ReduceL2", "Div", "Clip"]


class VariantUnavailable(RuntimeError):
    """A variant is not built and cannot be built here (no ``onnx`` package)."""


def variants_root(artifact_dir: Path) -> Path:
    """``<artifact>.variants`` beside the export folder."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.with_name(f"{artifact_dir.name}.variants")


def variant_key(artifact_dir: Path) -> str:
    """What a variant depends on: the export's manifest and the recipe version.

    An export without a readable manifest has no key: its variants could not
    be told from another export's.
    """
    manifest = read_manifest(artifact_dir)
    if manifest is None:
        raise VariantUnavailable(f"{artifact_dir}: no readable {MANIFEST_FILE}")
    blob = json.dumps({"manifest": manifest, "recipe": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def variant_path(artifact_dir: Path, precision: str) -> Path:
    """Where the ``precision`` variant of this export is (or will be) cached."""
    _check_precision(precision)
    return variants_root(artifact_dir) / variant_key(artifact_dir) / f"{precision}.onnx"


def can_build() -> bool:
    """Whether this environment can build variants (the optimizer needs ``onnx``)."""
    return importlib.util.find_spec("onnx") is not None


def ensure_variant(artifact_dir: Path, precision: str) -> Path:
    """Return the cached ``precision`` variant of the export, building it first if needed.

    Concurrent processes serialise on a lock file, so one builds and the
    others then find its file; a build writes a temp file renamed into place,
    so a crash never leaves a partial graph under the real name. Raises
    `VariantUnavailable` when the file is missing and cannot be built here.
    """
    path = variant_path(artifact_dir, precision)
    if path.is_file():
        return path
    if not can_build():
        raise VariantUnavailable(
            f"the {precision} encoder graph is not built ({path}) and building it needs the "
            "`onnx` package: run `interest-stream models export` where the `train` extra is "
            "installed (it builds every variant) and copy the cache folder"
        )
    base = _BASES.get(precision)
    base_path = ensure_variant(artifact_dir, base) if base else Path(artifact_dir) / ONNX_FILE
    root = variants_root(artifact_dir)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / _LOCK_FILE):
        if path.is_file():  # another process built it while we waited
            return path
        _remove_stale_keys(root, keep=path.parent.name)
        path.parent.mkdir(exist_ok=True)
        log.info("building the %s encoder graph of %s into %s", precision, artifact_dir, path)
        tmp = _tmp_beside(path)
        try:
            _BUILDERS[precision](base_path, tmp)
            os.replace(tmp, path)
        except Exception as exc:  # the optimizer and quantizer raise many kinds
            raise VariantUnavailable(f"building the {precision} graph failed: {exc!r}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return path


def build_variants(artifact_dir: Path, precisions: tuple[str, ...] = PRECISIONS) -> dict[str, Path]:
    """Build (or find) every variant of the export; ``models export`` calls this."""
    return {p: ensure_variant(artifact_dir, p) for p in precisions}


def _build_fp32(export: Path, out: Path) -> None:
    _fused(export, use_gpu=False).save_model_to_file(str(out))


def _build_int8(fused: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fused),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul", "Attention"],
        # Shape inference does not type the fused contrib ops' outputs.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _build_fp16(export: Path, out: Path) -> None:
    model = _fused(export, use_gpu=True)
    model.convert_float_to_float16(keep_io_types=True, op_block_list=_FP32_POOLING_OPS)
    model.save_model_to_file(str(out))


#: Each builder reads the export's model.onnx, or the variant named here.
_BASES = {"int8": "fp32"}
_BUILDERS = {"fp32": _build_fp32, "int8": _build_int8, "fp16": _build_fp16}


def _fused(onnx_file: Path, *, use_gpu: bool):  # -> onnxruntime.transformers.onnx_model.OnnxModel
    """The export with ONNX Runtime's BERT fusions applied (python passes only).

    ``opt_level=0``: the session applies ONNX Runtime's own graph
    optimisations when it loads the file, for the provider it runs on.
    """
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(onnx_file),
        model_type="bert",
        num_heads=NUM_HEADS,
        hidden_size=DIM,
        opt_level=0,
        use_gpu=use_gpu,
    )
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    log.info("encoder graph fusions: %s", fused)
    if not fused.get("Attention"):
        log.warning("the transformer optimizer fused no Attention node (%s)", fused)
    return model


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_stale_keys(root: Path, keep: str) -> None:
    """Delete the variants of earlier exports (caller holds the lock)."""
    for child in root.iterdir():
        if child.is_dir() and child.name != keep:
            shutil.rmtree(child, ignore_errors=True)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
