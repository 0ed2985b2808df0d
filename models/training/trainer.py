"""Training loops of the learned GRU and of SASRec: seeded, early-stopped, resumable.

Both stop early on validation NDCG@10 under the full-ranking protocol of the
harness (all items scored, the history masked out) and keep the best epoch's
weights. With an ``out_dir`` a checkpoint is written after every epoch; a
run started again with the same config and seed resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.datasets import Interactions, Split
from models.evaluation.metrics import rank_metrics
from models.training.gru import FusedGru, GruConfig
from models.training.sasrec import Sasrec, SasrecConfig
from models.training.sequences import (
    UserSequences,
    gap_matrix,
    histories,
    inject_noise,
    pad_left,
    pad_right,
)

log = logging.getLogger("interest_stream.training")

Progress = Callable[[dict[str, Any]], None]


def split_fingerprint(split: Split) -> str:
    """A short hash of the training data, so a saved model is reused only on its own split."""
    h = hashlib.sha256()
    h.update(str((split.n_users, split.n_items)).encode())
    for arr in (*split.train, split.valid, split.test):
        h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


@dataclass
class TrainResult:
    """A trained model at its best validation epoch, and the curves."""

    model: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_ndcg: float = 0.0
    seconds: float = 0.0


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# -- the learned GRU ---------------------------------------------------------


def gru_batch(
    seqs: UserSequences, rows: np.ndarray, max_len: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Padded tensors (items, weights, gaps, lengths) of users ``rows``, last max_len events."""
    items = [seqs.items[r][-max_len:] for r in rows]
    weights = [seqs.weights[r][-max_len:] for r in rows]
    gaps = [gap_matrix(seqs.ts[r][-max_len:]) for r in rows]
    width = max(len(i) for i in items)
    return (
        torch.from_numpy(pad_right(items, width)).to(device),
        torch.from_numpy(pad_right(weights, width, dtype=np.float32)).to(device),
        torch.from_numpy(pad_right(gaps, width, dtype=np.float32)).to(device),
        torch.tensor([len(i) for i in items], dtype=torch.long, device=device),
    )


@torch.no_grad()
def gru_scores(
    model: FusedGru, seqs: UserSequences, users: np.ndarray, device: torch.device, batch: int = 256
) -> np.ndarray:
    """[len(users), n_items] scores after each user's whole history (torch, eval mode)."""
    model.eval()
    out = []
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        items, weights, gaps, lengths = gru_batch(seqs, rows, 10**9, device)
        out.append(model.final_scores(items, weights, gaps, lengths).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.text.shape[0]), np.float32)


def _gru_epoch(
    model: FusedGru,
    opt: torch.optim.Optimizer,
    train: UserSequences,
    cfg: GruConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    model.train()
    users = [u for u in range(len(train)) if len(train.items[u]) >= 2]
    noisy_items, noisy_weights, noisy_ts = [], [], []
    for u in users:
        i, w, t = inject_noise(
            train.items[u], train.weights[u], train.ts[u], rng, cfg.p_drop, cfg.p_swap
        )
        noisy_items.append(i)
        noisy_weights.append(w)
        noisy_ts.append(t)
    noisy = UserSequences(noisy_items, noisy_weights, noisy_ts)
    order = rng.permutation(len(users))
    total, count = 0.0, 0
    n_items = model.text.shape[0]
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        items, weights, gaps, lengths = gru_batch(noisy, rows, cfg.max_len + 1, device)
        # Each state predicts the next event: inputs drop the last event.
        inputs_len = lengths - 1
        reps = model.item_reps()
        h = model.hidden_states(reps, items[:, :-1], weights[:, :-1], gaps[:, :-1], inputs_len)
        mask = torch.arange(h.shape[1], device=device)[None] < inputs_len[:, None]
        target = items[:, 1:][mask]
        states = h[mask]
        if cfg.negatives > 0:
            neg = torch.randint(0, n_items, (cfg.negatives,), device=device)
            cand = torch.cat([target, neg])
            logits = model.head_scores(states, reps[cand])
            hit = target[:, None] == neg[None]  # a sampled negative equal to the target
            logits[:, len(target) :] = logits[:, len(target) :].masked_fill(hit, -1e9)
            labels = torch.arange(len(target), device=device)
            loss = F.cross_entropy(logits, labels)
        else:
            loss = F.cross_entropy(model.head_scores(states, reps), target)
        if cfg.aux_weight > 0:  # multi-task: also predict how the user will act next
            next_w = weights[:, 1:][mask]
            loss = loss + cfg.aux_weight * F.mse_loss(model.next_weight(h[mask]), next_w)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total += float(loss.detach()) * len(target)
        count += len(target)
    return total / max(count, 1)


def train_gru(
    split: Split,
    log_: Interactions,
    text: np.ndarray,
    cfg: GruConfig,
    seed: int,
    *,
    device: str = "auto",
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train the learned cell on ``split.train``; early stopping on validation NDCG@10."""
    dev = pick_device(device)
    rng = seed_everything(seed)
    train = histories(split, log_, "train")
    valid_hist = histories(split, log_, "valid")
    eval_users = split.eval_users()
    counts = np.bincount(np.concatenate(split.train), minlength=split.n_items)
    model = FusedGru(torch.from_numpy(text), torch.from_numpy(counts > 0), cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def evaluate() -> float:
        scores = gru_scores(model, valid_hist, eval_users, dev)
        seen = [valid_hist.items[u] for u in eval_users]
        return rank_metrics(scores, seen, split.valid[eval_users])["ndcg"]

    return _loop(
        "learned-gru",
        model,
        opt,
        lambda: _gru_epoch(model, opt, train, cfg, rng, dev),
        evaluate,
        {**cfg.to_dict(), "data": split_fingerprint(split)},
        cfg.max_epochs,
        cfg.patience,
        seed,
        rng,
        out_dir,
        progress,
    )


# -- SASRec ------------------------------------------------------------------


def _sasrec_epoch(
    model: Sasrec,
    opt: torch.optim.Optimizer,
    train: list[np.ndarray],
    n_items: int,
    cfg: SasrecConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    model.train()
    users = np.array([u for u in range(len(train)) if len(train[u]) >= 2])
    order = rng.permutation(users)
    total, count = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        seqs = [train[u][-(cfg.max_len + 1) :] + 1 for u in rows]
        inp = torch.from_numpy(pad_left([s[:-1] for s in seqs], cfg.max_len)).to(device)
        pos = torch.from_numpy(pad_left([s[1:] for s in seqs], cfg.max_len)).to(device)
        h = model.encode(inp)
        mask = pos > 0
        if cfg.loss == "ce":
            logits = h[mask] @ model.item_matrix().T
            loss = F.cross_entropy(logits, pos[mask] - 1)
        else:
            neg_rows = []
            for u, s in zip(rows, seqs, strict=True):
                seen = set(train[u].tolist())
                neg = rng.integers(0, n_items, size=len(s) - 1)
                for j in range(len(neg)):
                    while int(neg[j]) in seen:
                        neg[j] = rng.integers(0, n_items)
                neg_rows.append(neg + 1)
            neg = torch.from_numpy(pad_left(neg_rows, cfg.max_len)).to(device)
            pos_logit = (h * model.item_emb(pos)).sum(-1)[mask]
            neg_logit = (h * model.item_emb(neg)).sum(-1)[mask]
            loss = F.binary_cross_entropy_with_logits(
                pos_logit, torch.ones_like(pos_logit)
            ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = int(mask.sum())
        total += float(loss.detach()) * n
        count += n
    return total / max(count, 1)


@torch.no_grad()
def sasrec_scores(
    model: Sasrec,
    hist: list[np.ndarray],
    users: np.ndarray,
    device: torch.device,
    batch: int = 256,
) -> np.ndarray:
    """[len(users), n_items] scores from the last position of each user's history."""
    model.eval()
    items = model.item_matrix()
    out = []
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        seqs = torch.from_numpy(pad_left([hist[u] + 1 for u in rows], model.cfg.max_len))
        h = model.encode(seqs.to(device))[:, -1]
        out.append((h @ items.T).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, items.shape[0]), np.float32)


def train_sasrec(
    split: Split,
    cfg: SasrecConfig,
    seed: int,
    *,
    device: str = "auto",
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train SASRec on ``split.train``; early stopping on validation NDCG@10."""
    dev = pick_device(device)
    rng = seed_everything(seed)
    model = Sasrec(split.n_items, cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    eval_users = split.eval_users()

    def evaluate() -> float:
        scores = sasrec_scores(model, split.train, eval_users, dev)
        seen = [split.train[u] for u in eval_users]
        return rank_metrics(scores, seen, split.valid[eval_users])["ndcg"]

    return _loop(
        "sasrec",
        model,
        opt,
        lambda: _sasrec_epoch(model, opt, split.train, split.n_items, cfg, rng, dev),
        evaluate,
        cfg.to_dict(),
        cfg.max_epochs,
        cfg.patience,
        seed,
        rng,
        out_dir,
        progress,
    )


# -- the shared loop ---------------------------------------------------------


def _loop(
    name: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    run_epoch: Callable[[], float],
    evaluate: Callable[[], float],
    config: dict[str, Any],
    max_epochs: int,
    patience: int,
    seed: int,
    rng: np.random.Generator,
    out_dir: Path | None,
    progress: Progress | None,
) -> TrainResult:
    started = time.perf_counter()
    result = TrainResult(model)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch = 0
    ckpt = out_dir / f"checkpoint-{name}-seed{seed}.pt" if out_dir else None
    signature = json.dumps({"config": config, "seed": seed}, sort_keys=True)
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        if saved.get("signature") == signature:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            best_state = saved["best_state"]
            result.history = saved["history"]
            result.best_epoch = saved["best_epoch"]
            result.best_valid_ndcg = saved["best_valid_ndcg"]
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"])
            start_epoch = saved["epoch"] + 1
            log.info("%s: resumed from %s at epoch %d", name, ckpt, start_epoch)
        else:
            log.warning("%s: checkpoint %s has another config or seed; starting over", name, ckpt)
    for epoch in range(start_epoch, max_epochs):
        if result.best_epoch >= 0 and epoch - result.best_epoch > patience:
            break
        tick = time.perf_counter()
        loss = run_epoch()
        ndcg = evaluate()
        row = {"epoch": epoch, "loss": loss, "valid_ndcg10": ndcg, "seconds": 0.0}
        row["seconds"] = time.perf_counter() - tick
        result.history.append(row)
        if ndcg > result.best_valid_ndcg or result.best_epoch < 0:
            result.best_epoch, result.best_valid_ndcg = epoch, ndcg
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress is not None:
            progress({"model": name, "best_epoch": result.best_epoch, **row})
        if ckpt is not None:
            torch.save(
                {
                    "signature": signature,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "best_state": best_state,
                    "history": result.history,
                    "best_epoch": result.best_epoch,
                    "best_valid_ndcg": result.best_valid_ndcg,
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch,
                },
                ckpt,
            )
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
