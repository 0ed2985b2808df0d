"""The learned recurrent cell in numpy: item representation, one GRU step, scores.

The same equations as the torch training model (``models.training.gru``),
written for float32 numpy so that workers run them without torch:

* item representation ``r_i = [t_i W_t + b_t + e_i , t_i . w_b + c_i]``
  where ``t_i`` is the frozen text embedding and ``e_i``, ``c_i`` the learned
  id embedding and bias (zero for a cold item, which then rests on text alone);
* input ``x = [r_i, w, log1p(hours since previous event), first-event flag]``
  with ``w`` the signed behaviour weight (`models.behaviour.event_weight`);
* a GRU step (torch gate layout r, z, n) moves the hidden state ``h``;
* the score of item ``i`` is ``[h W_o^T + b_o, 1] . r_i``; with ``K`` query
  heads ``W_o`` stacks ``K`` maps (head-major rows) and head ``k``'s score is
  ``[h W_k^T + b_k, 1] . r_i``; the model's own score is the best head's.
"""

from __future__ import annotations

import numpy as np

from models.learned.artifact import Artifact

_HOUR = 3600.0


def gap_features(hidden_ts: float | None, ts: float) -> np.ndarray:
    """Features of the time since the previous event; a late event counts as no gap."""
    if hidden_ts is None:
        return np.array([0.0, 1.0], dtype=np.float32)
    dt = max(ts - hidden_ts, 0.0)
    return np.array([np.log1p(dt / _HOUR), 0.0], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a clipped argument: the same value in float32, and no overflow warning
    # for the large pre-activations the largest allowed weights produce.
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))).astype(np.float32)


class GruCell:
    """Pure numpy inference of an exported `Artifact`; holds no per-user state.

    Parameters
    ----------
    artifact
        Loaded weights and vocabulary.

    Attributes
    ----------
    vocab
        Item id -> row of the learned id embedding.
    """

    def __init__(self, artifact: Artifact) -> None:
        w = artifact.weights
        self.artifact = artifact
        self.hidden_dim = artifact.hidden_dim
        self.item_dim = artifact.item_dim
        self.vocab = {item: row for row, item in enumerate(artifact.item_ids)}
        self._text_w, self._text_b = w["text_w"], w["text_b"]
        self._text_bias_w = w["text_bias_w"]
        self._id_emb, self._id_bias = w["id_emb"], w["id_bias"]
        self._w_ih, self._b_ih = w["w_ih"], w["b_ih"]
        self._w_hh, self._b_hh = w["w_hh"], w["b_hh"]
        self.heads = artifact.heads
        d = self.item_dim
        # [K, d, H] and [K, d]: one query map per head.
        self._out_w = w["out_w"].reshape(self.heads, d, self.hidden_dim)
        self._out_b = w["out_b"].reshape(self.heads, d)

    # -- items -------------------------------------------------------------

    def represent(self, item_id: str, text: np.ndarray) -> np.ndarray:
        """The item's vector (``item_dim + 1``): fused text and id, text alone when cold."""
        text = np.asarray(text, dtype=np.float32)
        rep = np.empty(self.item_dim + 1, dtype=np.float32)
        rep[:-1] = text @ self._text_w + self._text_b
        rep[-1] = text @ self._text_bias_w
        row = self.vocab.get(item_id)
        if row is not None:
            rep[:-1] += self._id_emb[row]
            rep[-1] += self._id_bias[row]
        return rep

    def represent_many(self, item_ids: list[str], texts: np.ndarray) -> np.ndarray:
        """`represent` for many items at once: [n, item_dim + 1]."""
        texts = np.asarray(texts, dtype=np.float32)
        reps = np.empty((len(item_ids), self.item_dim + 1), dtype=np.float32)
        reps[:, :-1] = texts @ self._text_w + self._text_b
        reps[:, -1] = texts @ self._text_bias_w
        rows = np.array([self.vocab.get(i, -1) for i in item_ids], dtype=np.int64)
        known = rows >= 0
        reps[known, :-1] += self._id_emb[rows[known]]
        reps[known, -1] += self._id_bias[rows[known]]
        return reps

    # -- state -------------------------------------------------------------

    def initial(self, n: int | None = None) -> np.ndarray:
        shape = (self.hidden_dim,) if n is None else (n, self.hidden_dim)
        return np.zeros(shape, dtype=np.float32)

    def step(
        self, hidden: np.ndarray, rep: np.ndarray, weight: np.ndarray, gap: np.ndarray
    ) -> np.ndarray:
        """One GRU step; works on one state ``[H]`` or a batch ``[n, H]``.

        ``rep`` is ``[.., item_dim + 1]``, ``weight`` a scalar or ``[n]``,
        ``gap`` ``[.., 2]`` (see `gap_features`).
        """
        weight = np.asarray(weight, dtype=np.float32)[..., None]
        x = np.concatenate([rep, weight, gap], axis=-1).astype(np.float32)
        gi = x @ self._w_ih.T + self._b_ih
        gh = hidden @ self._w_hh.T + self._b_hh
        h = self.hidden_dim
        r = _sigmoid(gi[..., :h] + gh[..., :h])
        z = _sigmoid(gi[..., h : 2 * h] + gh[..., h : 2 * h])
        n = np.tanh(gi[..., 2 * h :] + r * gh[..., 2 * h :])
        return ((1.0 - z) * n + z * hidden).astype(np.float32)

    def run(
        self, hidden: np.ndarray, reps: np.ndarray, weights: np.ndarray, ts: np.ndarray
    ) -> np.ndarray:
        """Feed one user's events in order (``reps`` [L, item_dim + 1]); the final state."""
        hidden_ts: float | None = None
        for rep, weight, t in zip(reps, weights, ts, strict=True):
            hidden = self.step(hidden, rep, weight, gap_features(hidden_ts, float(t)))
            hidden_ts = float(t) if hidden_ts is None else max(hidden_ts, float(t))
        return hidden

    def final_states(
        self,
        items: list[np.ndarray],
        weights: list[np.ndarray],
        ts: list[np.ndarray],
        reps: np.ndarray,
    ) -> np.ndarray:
        """[n, H] states after each sequence, batched across sequences step by step.

        ``items`` index rows of ``reps`` ([n_items, item_dim + 1], e.g. from
        `represent_many`); the math is `run`'s, row for row.
        """
        n = len(items)
        hidden = self.initial(n)
        last_ts = np.zeros(n, dtype=np.float64)
        longest = max((len(i) for i in items), default=0)
        lengths = np.array([len(i) for i in items])
        for t in range(longest):
            rows = np.flatnonzero(lengths > t)
            cur = np.array([ts[r][t] for r in rows], dtype=np.float64)
            gap = np.zeros((len(rows), 2), dtype=np.float32)
            if t == 0:
                gap[:, 1] = 1.0
            else:
                gap[:, 0] = np.log1p(np.maximum(cur - last_ts[rows], 0.0) / _HOUR)
            rep = reps[np.array([items[r][t] for r in rows], dtype=np.int64)]
            w = np.array([weights[r][t] for r in rows], dtype=np.float32)
            hidden[rows] = self.step(hidden[rows], rep, w, gap)
            last_ts[rows] = cur if t == 0 else np.maximum(last_ts[rows], cur)
        return hidden

    # -- ranking -----------------------------------------------------------

    def queries(self, hidden: np.ndarray) -> np.ndarray:
        """Every head's query in item space: [K, item_dim + 1] for [H], [n, K, item_dim + 1]
        for [n, H] (last component 1, for the bias)."""
        q = np.einsum("...h,kdh->...kd", hidden, self._out_w) + self._out_b
        ones = np.ones((*q.shape[:-1], 1), dtype=np.float32)
        return np.concatenate([q, ones], axis=-1).astype(np.float32)

    def query(self, hidden: np.ndarray, head: int = 0) -> np.ndarray:
        """Head ``head``'s query in item space (``item_dim + 1``, last component 1)."""
        q = hidden @ self._out_w[head].T + self._out_b[head]
        ones = np.ones((*q.shape[:-1], 1), dtype=np.float32)
        return np.concatenate([q, ones], axis=-1).astype(np.float32)

    def scores(self, hidden: np.ndarray, reps: np.ndarray, head: int | None = None) -> np.ndarray:
        """Scores of items ``reps`` [m, item_dim + 1] for states [H] or [n, H].

        ``head`` None: the model's own score, each item's best head (the one
        head's score for a one-head cell); else that head's.
        """
        if head is not None:
            return self.query(hidden, head) @ reps.T
        if self.heads == 1:
            return self.query(hidden, 0) @ reps.T
        return (self.queries(hidden) @ reps.T).max(axis=-2)

    def text_query(self, hidden: np.ndarray, head: int = 0) -> np.ndarray:
        """The direction in text space that head ``head``'s score follows for a cold item.

        A cold item scores ``t . (W_t q + w_b) + b_t . q``: ranking cold items
        by this unit vector against the catalogue gives the head's order.
        """
        q = hidden @ self._out_w[head].T + self._out_b[head]
        v = q @ self._text_w.T + self._text_bias_w
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 1e-12 else np.zeros_like(v)
