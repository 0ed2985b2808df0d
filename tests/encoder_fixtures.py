"""Shared session fixtures for the encoder tests.

Loaded by ``tests/conftest.py`` through ``pytest_plugins``, so pytest registers
them once: the export and the PyTorch model are built once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.encoder import OnnxEncoder, export_minilm
from models.encoder.artifact import ARTIFACT_NAME

# Small batches so the contract tests cross batch boundaries.
BATCH_SIZE = 4


@pytest.fixture(scope="session")
def encoder_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export for the whole session; tests must not modify it."""
    return export_minilm(tmp_path_factory.mktemp("encoder-cache") / ARTIFACT_NAME)


@pytest.fixture(scope="session")
def onnx_cpu_encoder(encoder_artifact: Path) -> OnnxEncoder:
    return OnnxEncoder(encoder_artifact, device="cpu", batch_size=BATCH_SIZE)


@pytest.fixture(scope="session")
def onnx_int8_encoder(encoder_artifact: Path) -> OnnxEncoder:
    """The int8 variant (built beside the session export on first use)."""
    return OnnxEncoder(encoder_artifact, device="cpu", precision="int8", batch_size=BATCH_SIZE)


@pytest.fixture(scope="session")
def torch_encoder():  # -> TorchEncoder; imported lazily because it needs torch
    from models.encoder import TorchEncoder

    return TorchEncoder(batch_size=BATCH_SIZE)
