"""The harness's view of SASRec and the learned GRU (`models.evaluation.harness`).

``fit`` trains through `models.training.pipeline` into a training folder and
reuses a model already there when its config, seed and training data match,
so a model trained on a GPU box (``interest-stream train``) is evaluated
here without retraining. The folder is ``INTEREST_STREAM_TRAIN_DIR``
(default ``.interest-stream/train``); ``INTEREST_STREAM_TRAIN_DEVICE`` picks
the torch device (default auto).

The learned GRU is scored by the exported numpy cell, the code the workers
run, not by torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Interactions, Split
from models.learned.artifact import load_artifact
from models.learned.cell import GruCell
from models.training.export import catalogue_ids
from models.training.gru import GruConfig
from models.training.pipeline import fit_gru, fit_sasrec
from models.training.sasrec import Sasrec, SasrecConfig
from models.training.sequences import histories
from models.training.text import text_embeddings
from models.training.trainer import sasrec_scores


def train_dir() -> Path:
    return Path(os.environ.get("INTEREST_STREAM_TRAIN_DIR", ".interest-stream/train"))


def train_device() -> str:
    return os.environ.get("INTEREST_STREAM_TRAIN_DEVICE", "auto")


class SasrecRecommender:
    """SASRec with its public defaults (BCE, one negative), early-stopped on validation."""

    name = "sasrec"

    def __init__(self, config: SasrecConfig | None = None, out: Path | None = None) -> None:
        self.config = config or SasrecConfig()
        self.out = out or train_dir()
        self.params: dict[str, Any] = self.config.to_dict()
        self._model: Sasrec | None = None
        self._split: Split | None = None

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self._split = split
        self._model, metrics = fit_sasrec(split, self.config, seed, self.out, device=train_device())
        self.params = {**self.config.to_dict(), "best_epoch": metrics["best_epoch"]}

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        assert self._model is not None and self._split is not None, "fit first"
        split = self._split
        hist = {int(u): split.history(int(u), phase) for u in users}
        dense = [hist.get(u, np.zeros(0, np.int64)) for u in range(split.n_users)]
        device = next(self._model.parameters()).device
        return sasrec_scores(self._model, dense, np.asarray(users), device)


class LearnedGruRecommender:
    """The learned recurrent updater, trained then scored through its exported artefact."""

    name = "learned-gru"

    def __init__(self, config: GruConfig | None = None, out: Path | None = None) -> None:
        self.config = config or GruConfig()
        self.out = out or train_dir()
        self.params: dict[str, Any] = self.config.to_dict()
        self._cell: GruCell | None = None
        self._reps: np.ndarray | None = None
        self._hist: dict[str, Any] = {}

    def fit(self, split: Split, log: Interactions, seed: int) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        text = text_embeddings(log, self.out / "text-embeddings")
        art_dir, metrics = fit_gru(
            log, split, text, self.config, seed, self.out, device=train_device()
        )
        artifact = load_artifact(art_dir)
        prefix = artifact.manifest["config"].get("id_prefix", "m")
        self._cell = GruCell(artifact)
        self._reps = self._cell.represent_many(catalogue_ids(log.item_ids, prefix), text)
        self._hist = {phase: histories(split, log, phase) for phase in ("valid", "test")}
        self.params = {
            **self.config.to_dict(),
            "best_epoch": metrics["best_epoch"],
            "model_version": artifact.model_version,
        }

    def scores(self, users: np.ndarray, phase: str) -> np.ndarray:
        assert self._cell is not None and self._reps is not None, "fit first"
        seqs = self._hist[phase]
        states = self._cell.final_states(
            [seqs.items[u] for u in users],
            [seqs.weights[u] for u in users],
            [seqs.ts[u] for u in users],
            self._reps,
        )
        return self._cell.scores(states, self._reps)
