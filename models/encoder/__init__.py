"""Sentence encoders: the torch-free ONNX runtime backend and its PyTorch reference.

Importing this package never imports torch; ``TorchEncoder`` is resolved on first
access because it needs the ``train`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .artifact import default_cache_dir, find_exported
from .base import Encoder, l2_normalize
from .export import EncoderExportError, ensure_exported, export_minilm
from .onnx_encoder import OnnxEncoder

if TYPE_CHECKING:
    from .torch_encoder import TorchEncoder

__all__ = [
    "Encoder",
    "EncoderExportError",
    "OnnxEncoder",
    "TorchEncoder",
    "default_cache_dir",
    "ensure_exported",
    "export_minilm",
    "find_exported",
    "l2_normalize",
]


def __getattr__(name: str) -> Any:
    if name == "TorchEncoder":
        from .torch_encoder import TorchEncoder

        return TorchEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
