"""The one embedding cache: keyed on the encoder export and the texts, never stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import models.encoder.embedding_cache as embedding_cache
import models.training.text as training_text
from models.datasets import Interactions
from models.encoder.embedding_cache import cache_key, cached_embeddings
from models.encoder.export import EncoderExportError


class FakeEncoder:
    """Stands in for `OnnxEncoder`: its vectors depend on the export it was built from."""

    calls: ClassVar[list[list[str]]] = []

    def __init__(self, artifact: Path, *, device: str = "auto") -> None:
        manifest = json.loads((Path(artifact) / "manifest.json").read_text())
        self.seed = int(manifest["source_sha256"][:8], 16)

    def encode(self, texts: list[str]) -> np.ndarray:
        FakeEncoder.calls.append(list(texts))
        rng = np.random.default_rng(self.seed)
        return rng.normal(size=(len(texts), 8)).astype(np.float32)


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> type[FakeEncoder]:
    FakeEncoder.calls = []
    monkeypatch.setattr(embedding_cache, "OnnxEncoder", FakeEncoder)
    return FakeEncoder


def _export(folder: Path, sha: str, created_at: str) -> Path:
    """What an export leaves behind, as far as the cache is concerned: its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": 1, "source_sha256": sha, "created_at": created_at}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_second_call_reads_the_cache(tmp_path: Path, fake_encoder: type[FakeEncoder]) -> None:
    artifact = _export(tmp_path / "export", "a" * 64, "2024-01-01T00:00:00+00:00")
    first = cached_embeddings(["alpha", "beta"], artifact, tmp_path / "cache")
    again = cached_embeddings(["alpha", "beta"], artifact, tmp_path / "cache")
    assert fake_encoder.calls == [["alpha", "beta"]]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-6)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]  # no temp file left


def test_a_re_export_invalidates_the_cache(tmp_path: Path, fake_encoder: type[FakeEncoder]) -> None:
    artifact = _export(tmp_path / "export", "a" * 64, "2024-01-01T00:00:00+00:00")
    before = cached_embeddings(["alpha", "beta"], artifact, tmp_path / "cache")
    # New weights exported again into the same folder: same texts, another encoder.
    _export(artifact, "b" * 64, "2024-02-01T00:00:00+00:00")
    after = cached_embeddings(["alpha", "beta"], artifact, tmp_path / "cache")
    assert len(fake_encoder.calls) == 2, "the re-exported encoder was not asked"
    want = np.random.default_rng(int("b" * 8, 16)).normal(size=(2, 8))
    np.testing.assert_allclose(after, want / np.linalg.norm(want, axis=1, keepdims=True), 1e-6)
    assert not np.allclose(before, after)
    # The same weights exported once more count as another export too (a new manifest).
    _export(artifact, "b" * 64, "2024-03-01T00:00:00+00:00")
    cached_embeddings(["alpha", "beta"], artifact, tmp_path / "cache")
    assert len(fake_encoder.calls) == 3


def test_the_key_keeps_text_boundaries(tmp_path: Path) -> None:
    artifact = _export(tmp_path / "export", "a" * 64, "2024-01-01T00:00:00+00:00")
    assert cache_key(["a\nb"], artifact) != cache_key(["a", "b"], artifact)
    assert cache_key(["a", "b"], artifact) == cache_key(("a", "b"), artifact)


def test_an_export_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EncoderExportError, match="manifest"):
        cached_embeddings(["alpha"], tmp_path, tmp_path / "cache")


def test_training_text_embeddings_use_the_same_cache(
    tmp_path: Path, fake_encoder: type[FakeEncoder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training's frozen item vectors follow a re-export too (they were keyed on texts only)."""
    artifact = _export(tmp_path / "export", "a" * 64, "2024-01-01T00:00:00+00:00")
    monkeypatch.setattr(training_text, "ensure_exported", lambda: artifact)
    empty = np.zeros(0, np.int64)
    log = Interactions(
        empty, empty, np.zeros(0), np.zeros(0, np.float32), [], ["1", "2"],
        ["Alpha (1990)", ""], [("Comedy",), ()],
    )  # fmt: skip
    cache = tmp_path / "train" / "text-embeddings"
    first = training_text.text_embeddings(log, cache)
    assert fake_encoder.calls == [["Alpha (1990). Genres: Comedy", "item 2"]]
    np.testing.assert_array_equal(training_text.text_embeddings(log, cache), first)
    _export(artifact, "c" * 64, "2024-02-01T00:00:00+00:00")
    assert not np.allclose(training_text.text_embeddings(log, cache), first)
    assert len(fake_encoder.calls) == 2
