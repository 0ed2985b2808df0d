"""The ONNX export reproduces the PyTorch model; plumbing around it (cache, providers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import models.encoder.export as export
import models.encoder.onnx_encoder as onnx_encoder
from models.encoder import EncoderExportError, OnnxEncoder, ensure_exported, find_exported
from models.encoder.artifact import ARTIFACT_NAME, MANIFEST_FILE, ONNX_FILE
from models.encoder.onnx_encoder import select_providers
from tests.paths import require_ml100k

# Shared session fixtures (one export, one PyTorch model): encoder_artifact,
# onnx_cpu_encoder, torch_encoder.

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_COSINE = 0.9999


def _first_titles(n: int) -> list[str]:
    with open(require_ml100k() / "u.item", encoding="latin-1") as fh:
        return [line.split("|")[1] for line, _ in zip(fh, range(n), strict=False)]


@pytest.mark.torch
def test_onnx_matches_torch_on_movie_titles(
    onnx_cpu_encoder: OnnxEncoder,
    torch_encoder,
    record_property: pytest.RecordProperty,
) -> None:
    titles = _first_titles(300)
    assert len(titles) == 300
    a = onnx_cpu_encoder.encode(titles)
    b = torch_encoder.encode(titles)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    worst = float(cos.min())
    record_property("min_cosine", worst)
    print(f"\nONNX vs PyTorch on {len(titles)} titles: min cosine {worst:.9f}")
    assert worst >= MIN_COSINE, f"min cosine {worst} (title: {titles[int(cos.argmin())]!r})"


@pytest.fixture
def cache_copy(encoder_artifact: Path, tmp_path: Path) -> Path:
    """A private cache dir holding a copy of the session export."""
    cache = tmp_path / "cache"
    shutil.copytree(encoder_artifact, cache / ARTIFACT_NAME)
    return cache


def _count_exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = export.export_minilm

    def spy(out_dir: Path, **kwargs) -> Path:
        calls.append(out_dir)
        return real(out_dir, **kwargs)

    monkeypatch.setattr(export, "export_minilm", spy)
    return calls


@pytest.mark.torch
def test_ensure_exported_reuses_cache(cache_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_exports(monkeypatch)
    onnx_file = cache_copy / ARTIFACT_NAME / ONNX_FILE
    before = onnx_file.stat().st_mtime_ns
    ensure_exported(cache_copy)  # first call hashes the weights once
    started = time.perf_counter()
    artifact = ensure_exported(cache_copy)  # warm: memoised fingerprint
    elapsed = time.perf_counter() - started
    assert artifact == cache_copy / ARTIFACT_NAME
    assert calls == []
    assert onnx_file.stat().st_mtime_ns == before
    assert elapsed < 1.0, f"warm ensure_exported took {elapsed:.2f}s"


@pytest.mark.torch
def test_wrong_fingerprint_triggers_reexport(
    cache_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_exports(monkeypatch)
    artifact = cache_copy / ARTIFACT_NAME
    manifest_path = artifact / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    real_sha = manifest["source_sha256"]
    manifest["source_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))

    assert ensure_exported(cache_copy) == artifact
    assert calls == [artifact]
    assert json.loads(manifest_path.read_text())["source_sha256"] == real_sha
    # No temp/old dirs left next to the fresh export.
    assert sorted(p.name for p in cache_copy.iterdir() if p.is_dir()) == [ARTIFACT_NAME]
    out = OnnxEncoder(artifact, device="cpu").encode(["Toy Story (1995)"])
    assert out.shape == (1, 384)


@pytest.mark.torch
def test_export_is_one_self_contained_file(encoder_artifact: Path) -> None:
    assert sorted(p.name for p in encoder_artifact.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]
    manifest = json.loads((encoder_artifact / MANIFEST_FILE).read_text())
    assert manifest["dim"] == 384
    assert manifest["max_length"] == 256
    assert manifest["opset"] == 17
    assert len(manifest["source_sha256"]) == 64
    assert (encoder_artifact / ONNX_FILE).stat().st_size > 80_000_000  # weights inline


def test_find_exported_on_empty_dir(tmp_path: Path) -> None:
    assert find_exported(tmp_path) is None


def test_without_torch_and_no_export_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "_train_extra_available", lambda: False)
    with pytest.raises(EncoderExportError, match=r"pip install -e '\.\[train\]'"):
        ensure_exported(tmp_path)


@pytest.mark.torch
def test_without_torch_an_existing_export_is_used(
    cache_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "_train_extra_available", lambda: False)
    assert ensure_exported(cache_copy) == cache_copy / ARTIFACT_NAME


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, models.encoder\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.torch
def test_runtime_works_with_torch_blocked(cache_copy: Path, tmp_path: Path) -> None:
    """A worker without the train extra: uses an existing export, else fails clearly."""
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
from pathlib import Path
from models.encoder import EncoderExportError, OnnxEncoder, ensure_exported
try:
    ensure_exported(Path({str(tmp_path / "empty")!r}))
    raise SystemExit("expected EncoderExportError")
except EncoderExportError as exc:
    assert "pip install" in str(exc), exc
out = OnnxEncoder(ensure_exported(Path({str(cache_copy)!r}))).encode(["Toy Story (1995)"])
assert out.shape == (1, 384), out.shape
"""
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.torch
def test_onnx_encoder_reports_its_providers(onnx_cpu_encoder: OnnxEncoder) -> None:
    assert onnx_cpu_encoder.providers == ["CPUExecutionProvider"]


def test_provider_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    monkeypatch.setattr(onnx_encoder.ort, "get_available_providers", lambda: [cpu])
    assert select_providers("auto") == [cpu]
    assert select_providers("cpu") == [cpu]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        select_providers("cuda")
    with pytest.raises(ValueError, match="device"):
        select_providers("tpu")
    monkeypatch.setattr(onnx_encoder.ort, "get_available_providers", lambda: [cuda, cpu])
    assert select_providers("auto") == [cuda, cpu]
    assert select_providers("cuda") == [cuda, cpu]
    assert select_providers("cpu") == [cpu]
