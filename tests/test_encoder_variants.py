"""The encoder's graph variants: int8 accuracy, fp16 on CPU, the cache beside the export.

The fused fp32 graph and int8 run here; fp16 and CUDA I/O binding are for
GPU workers, so on this CPU-only machine the tests check that they fall back
cleanly, that the fp16 graph itself is sound (ONNX Runtime's CPU provider
runs it, slowly), and that the binding code gives the plain run's result.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import models.encoder.variants as variants
from models.encoder import OnnxEncoder
from models.encoder.artifact import ARTIFACT_NAME, MANIFEST_FILE, ONNX_FILE
from models.encoder.onnx_encoder import effective_precision
from streams.settings import ENCODER_PRECISIONS, Settings, SettingsError
from tests.paths import require_ml100k

# Shared session fixtures: encoder_artifact, onnx_cpu_encoder, onnx_int8_encoder.

CPU, CUDA = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _titles(n: int) -> list[str]:
    with open(require_ml100k() / "u.item", encoding="latin-1") as fh:
        return [line.split("|")[1] for line, _ in zip(fh, range(n), strict=False)]


@pytest.fixture
def artifact_copy(encoder_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the session export, without its variants."""
    copy = tmp_path / "cache" / ARTIFACT_NAME
    shutil.copytree(encoder_artifact, copy)
    return copy


def _count_fusions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    real = variants._fused

    def spy(onnx_file: Path, *, use_gpu: bool):
        calls.append(use_gpu)
        return real(onnx_file, use_gpu=use_gpu)

    monkeypatch.setattr(variants, "_fused", spy)
    return calls


@pytest.mark.parametrize(
    ("requested", "providers", "runs"),
    [
        ("fp32", CPU, "fp32"),
        ("int8", CPU, "int8"),
        ("fp16", CPU, "fp32"),
        ("fp16", CUDA, "fp16"),
        ("int8", CUDA, "fp32"),
        ("fp32", CUDA, "fp32"),
    ],
)
def test_effective_precision(requested: str, providers: list[str], runs: str) -> None:
    assert effective_precision(requested, providers) == runs


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        effective_precision("bf16", CPU)
    with pytest.raises(SettingsError, match="encoder_precision"):
        Settings(encoder_precision="bf16")
    assert variants.PRECISIONS == ENCODER_PRECISIONS


def test_items_agent_batches_by_the_encoder_settings() -> None:
    settings = Settings(batch_max=500, batch_within_seconds=0.05,
                        encoder_batch_max=64, encoder_batch_wait_ms=20)  # fmt: skip
    assert settings.batching("items") == (64, 0.02)
    assert settings.batching("behaviours") == (500, 0.05)
    for bad in ({"encoder_batch_max": 0}, {"encoder_batch_wait_ms": 0}):
        with pytest.raises(SettingsError, match="encoder_batch"):
            Settings(**bad)


@pytest.mark.torch
def test_int8_agrees_with_fp32_and_is_deterministic(
    onnx_cpu_encoder: OnnxEncoder,
    onnx_int8_encoder: OnnxEncoder,
    record_property: pytest.RecordProperty,
) -> None:
    titles = _titles(64)
    fp32 = onnx_cpu_encoder.encode(titles)
    int8 = onnx_int8_encoder.encode(titles)
    cos = np.sum(fp32 * int8, axis=1)
    record_property("int8_mean_cosine", float(cos.mean()))
    print(f"\nint8 vs fp32 on {len(titles)} titles: mean {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.99 and cos.min() >= 0.97
    np.testing.assert_array_equal(int8, onnx_int8_encoder.encode(titles))
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    # Stored vectors of another precision are re-encoded (the content hash has the name).
    assert onnx_int8_encoder.name != onnx_cpu_encoder.name
    assert onnx_int8_encoder.precision == "int8"
    assert onnx_int8_encoder.graph.name == "int8.onnx"


@pytest.mark.torch
def test_fp16_without_cuda_runs_fp32_with_a_warning(
    encoder_artifact: Path, onnx_cpu_encoder: OnnxEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="interest_stream.encoder"):
        enc = OnnxEncoder(encoder_artifact, device="cpu", precision="fp16")
    assert "fp16 needs the CUDA provider" in caplog.text
    assert (enc.precision, enc.name, enc.providers) == ("fp32", onnx_cpu_encoder.name, CPU)
    assert not enc.io_binding
    np.testing.assert_allclose(
        enc.encode(["Toy Story (1995)"]), onnx_cpu_encoder.encode(["Toy Story (1995)"]), atol=1e-6
    )


@pytest.mark.torch
def test_fused_graph_is_cached_and_reused(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_fusions(monkeypatch)
    first = OnnxEncoder(artifact_copy, device="cpu", optimise=True)
    assert calls == [False]
    graph = first.graph
    assert graph.parent.parent == artifact_copy.with_name(f"{ARTIFACT_NAME}.variants")
    built = graph.stat().st_mtime_ns
    second = OnnxEncoder(artifact_copy, device="cpu", optimise=True)
    assert calls == [False] and second.graph == graph
    assert graph.stat().st_mtime_ns == built
    # The export folder keeps its three files; no temp file is left.
    assert sorted(p.name for p in artifact_copy.iterdir()) == [
        "manifest.json", "model.onnx", "tokenizer.json"
    ]  # fmt: skip
    assert sorted(p.name for p in graph.parent.iterdir()) == ["fp32.onnx"]
    np.testing.assert_allclose(
        first.encode(["Star Wars (1977)"]),
        OnnxEncoder(artifact_copy, device="cpu").encode(["Star Wars (1977)"]),
        atol=1e-5,
    )


@pytest.mark.torch
def test_a_new_export_gets_new_variants_and_the_old_ones_go(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = OnnxEncoder(artifact_copy, device="cpu", optimise=True).graph
    manifest = json.loads((artifact_copy / MANIFEST_FILE).read_text())
    manifest["created_at"] = "2030-01-01T00:00:00+00:00"  # as a re-export would write
    (artifact_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    calls = _count_fusions(monkeypatch)
    new = OnnxEncoder(artifact_copy, device="cpu", optimise=True).graph
    assert calls == [False] and new != old
    assert not old.parent.exists()


@pytest.mark.torch
def test_without_onnx_an_unbuilt_variant_falls_back_to_the_export(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(variants, "can_build", lambda: False)
    with caplog.at_level(logging.WARNING, logger="interest_stream.encoder"):
        enc = OnnxEncoder(artifact_copy, device="cpu", precision="int8")
    assert "models export" in caplog.text
    assert (enc.precision, enc.graph) == ("fp32", artifact_copy / ONNX_FILE)
    assert enc.encode(["Toy Story (1995)"]).shape == (1, 384)


@pytest.mark.torch
def test_fp16_graph_keeps_io_types_and_matches_fp32(
    encoder_artifact: Path, onnx_cpu_encoder: OnnxEncoder
) -> None:
    """Built and run on the CPU provider: the conversion is checked without a GPU."""
    path = variants.ensure_variant(encoder_artifact, "fp16")
    session = ort.InferenceSession(str(path), providers=CPU)
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)", "tensor(int64)"]
    assert [o.type for o in session.get_outputs()] == ["tensor(float)"]
    titles = _titles(16)
    rows = [onnx_cpu_encoder._tokenizer.encode(t).ids for t in titles]
    ids, mask = onnx_cpu_encoder._pad(rows, max(map(len, rows)))
    fp16 = session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]
    fp16 /= np.linalg.norm(fp16, axis=1, keepdims=True)
    cos = np.sum(fp16 * onnx_cpu_encoder.encode(titles), axis=1)
    assert cos.min() >= 0.999, cos.min()


@pytest.mark.torch
def test_io_binding_gives_the_plain_runs_result(
    encoder_artifact: Path, onnx_cpu_encoder: OnnxEncoder
) -> None:
    """The binding path CUDA workers take, bound to CPU buffers here."""
    bound = OnnxEncoder(encoder_artifact, device="cpu", io_binding=True, batch_size=4)
    assert bound.io_binding and not onnx_cpu_encoder.io_binding
    titles = _titles(10)
    np.testing.assert_allclose(bound.encode(titles), onnx_cpu_encoder.encode(titles), atol=1e-6)
