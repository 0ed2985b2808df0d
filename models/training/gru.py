"""The learned recurrent updater in torch: fused item representations and a GRU.

The equations are those of `models.learned.cell` (its docstring is the
reference); training runs ``nn.GRU`` over whole sequences, export writes the
same weights for the numpy cell. Items without training events are "cold":
their id embedding and bias are masked to zero, so they rank on text alone,
and random id dropout during training keeps that text path useful.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.learned.artifact import N_GAP


@dataclass(frozen=True)
class GruConfig:
    """Hyper-parameters of the learned cell and its training."""

    item_dim: int = 100
    hidden_dim: int = 100
    dropout: float = 0.4
    id_dropout: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 10
    max_len: int = 400
    p_drop: float = 0.1
    p_swap: float = 0.05
    #: Sampled-softmax negatives per position; 0 means the full softmax over all items.
    negatives: int = 0
    #: Multi-task: weight of an auxiliary loss, the squared error of predicting
    #: the next event's signed behaviour weight (its rating, or its type: a
    #: like from a view from a skip) from the same state; 0 turns it off. The
    #: auxiliary head is not exported: it only shapes the state during training.
    #: 0.3 on MovieLens-100K, CPU, seeds 0-2: valid NDCG@10 0.1374 against
    #: 0.1316 without, test 0.1233 against 0.1164.
    aux_weight: float = 0.3
    #: Query heads over the one hidden state (several interests, as ComiRec's
    #: and MIND's): each head maps the state to its own query, and an item's
    #: score is its best head's, in training's softmax as in ranking, so heads
    #: specialise. (ComiRec's rule, each next item scored by the head closest
    #: to it alone, trained heads whose scores do not compare: 4 heads,
    #: valid NDCG@10 0.085 at epoch 10 against one head's 0.117.) 1 is the
    #: single-query cell of earlier versions, weight for weight.
    heads: int = 1

    def __post_init__(self) -> None:
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


class FusedGru(nn.Module):
    """Item representations fused from text and id, a GRU over events, dot-product scores.

    Parameters
    ----------
    text
        [n_items, text_dim] frozen text embeddings (unit rows).
    warm
        [n_items] bool: items with a learned id embedding.
    """

    def __init__(self, text: torch.Tensor, warm: torch.Tensor, cfg: GruConfig) -> None:
        super().__init__()
        n_items, text_dim = text.shape
        self.cfg = cfg
        self.register_buffer("text", text.float())
        self.register_buffer("warm", warm.float())
        self.text_proj = nn.Linear(text_dim, cfg.item_dim)
        self.text_bias = nn.Linear(text_dim, 1, bias=False)
        self.id_emb = nn.Embedding(n_items, cfg.item_dim)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        self.id_bias = nn.Parameter(torch.zeros(n_items))
        self.gru = nn.GRU(cfg.item_dim + 2 + N_GAP, cfg.hidden_dim, batch_first=True)
        self.out = nn.Linear(cfg.hidden_dim, cfg.item_dim * cfg.heads)
        self.drop = nn.Dropout(cfg.dropout)
        # Made only when used, so that without it the initialisation is as before.
        self.aux = nn.Linear(cfg.hidden_dim, 1) if cfg.aux_weight > 0 else None

    def item_reps(self) -> torch.Tensor:
        """[n_items, item_dim + 1]: fused vector and score bias in the last column."""
        mask = self.warm
        if self.training and self.cfg.id_dropout > 0:
            mask = mask * (torch.rand_like(mask) >= self.cfg.id_dropout).float()
        vec = self.text_proj(self.text) + self.id_emb.weight * mask[:, None]
        bias = self.text_bias(self.text)[:, 0] + self.id_bias * mask
        return torch.cat([vec, bias[:, None]], dim=1)

    def hidden_states(
        self,
        reps: torch.Tensor,
        items: torch.Tensor,
        weights: torch.Tensor,
        gaps: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """[B, L, H] states after each event (right-padded batch)."""
        x = torch.cat([self.drop(reps[items]), weights[..., None], gaps], dim=-1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=items.shape[1])
        return out

    def next_weight(self, hidden: torch.Tensor) -> torch.Tensor:
        """The auxiliary head: the predicted signed weight of the next event, per state."""
        if self.aux is None:
            raise ValueError("this model has no auxiliary head (aux_weight is 0)")
        return self.aux(self.drop(hidden))[..., 0]

    def queries(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., heads, item_dim + 1]: every head's query (last component 1, for the bias)."""
        q = self.out(self.drop(hidden)).unflatten(-1, (self.cfg.heads, self.cfg.item_dim))
        return torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)

    def head_scores(self, hidden: torch.Tensor, reps: torch.Tensor) -> torch.Tensor:
        """[..., n_items]: each item's score by the head that scores it highest (one head: its).

        What training's loss and the model's own ranking use: an item is as
        likely as the best of the user's interests makes it.
        """
        q = self.queries(hidden)
        if self.cfg.heads == 1:
            return q[..., 0, :] @ reps.T
        return (q @ reps.T).amax(dim=-2)

    def final_scores(
        self,
        items: torch.Tensor,
        weights: torch.Tensor,
        gaps: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """[B, n_items] scores after each user's last event."""
        reps = self.item_reps()
        h = self.hidden_states(reps, items, weights, gaps, lengths)
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]
        return self.head_scores(last, reps)

    def export_weights(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """numpy arrays named as `models.learned.artifact.WEIGHT_NAMES`, and the warm rows."""
        warm = self.warm.detach().cpu().numpy() > 0

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().float().numpy().copy()

        weights = {
            "text_w": arr(self.text_proj.weight).T.copy(),
            "text_b": arr(self.text_proj.bias),
            "text_bias_w": arr(self.text_bias.weight)[0],
            "id_emb": arr(self.id_emb.weight)[warm],
            "id_bias": arr(self.id_bias)[warm],
            "w_ih": arr(self.gru.weight_ih_l0),
            "w_hh": arr(self.gru.weight_hh_l0),
            "b_ih": arr(self.gru.bias_ih_l0),
            "b_hh": arr(self.gru.bias_hh_l0),
            "out_w": arr(self.out.weight),
            "out_b": arr(self.out.bias),
        }
        return weights, np.flatnonzero(warm)
