"""Train, export and report: what ``interest-stream train`` runs.

Output folder layout::

    text-embeddings/             item text embeddings (cache, keyed by the encoder and texts)
    checkpoints/                 per model and seed, resumable
    learned-gru-seed<S>/         exported learned updater (manifest.json, weights.npz)
    sasrec-seed<S>.pt            SASRec weights and config
    report.json, report.png      curves and validation/test numbers per model and seed

Running the same command again resumes unfinished runs and reuses finished ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.datasets import Interactions, Split, leave_last_out, load_movielens
from models.evaluation.metrics import rank_metrics
from models.learned.artifact import load_artifact
from models.learned.cell import GruCell
from models.training.export import catalogue_ids, export_gru
from models.training.gru import FusedGru, GruConfig
from models.training.report import write_report
from models.training.sasrec import Sasrec, SasrecConfig
from models.training.sequences import histories
from models.training.text import text_embeddings
from models.training.trainer import (
    Progress,
    TrainResult,
    gru_scores,
    pick_device,
    sasrec_scores,
    split_fingerprint,
    train_gru,
    train_sasrec,
)

log = logging.getLogger("interest_stream.training")

MODELS = ("learned-gru", "sasrec")


def _at_10(scores: np.ndarray, seen: list[np.ndarray], targets: np.ndarray) -> dict:
    """NDCG@10 and HR@10 as the evaluation harness computes them, named as the report has them."""
    at10 = rank_metrics(scores, seen, targets, k=10)
    return {"ndcg10": at10["ndcg"], "hr10": at10["hr"]}


def gru_numpy_scores(
    cell: GruCell,
    log_: Interactions,
    split: Split,
    text: np.ndarray,
    users: np.ndarray,
    phase: str,
    id_prefix: str,
) -> np.ndarray:
    """Scores from the exported numpy cell (the workers' code path)."""
    seqs = histories(split, log_, phase)
    reps = cell.represent_many(catalogue_ids(log_.item_ids, id_prefix), text)
    states = cell.final_states(
        [seqs.items[u] for u in users],
        [seqs.weights[u] for u in users],
        [seqs.ts[u] for u in users],
        reps,
    )
    return cell.scores(states, reps)


def fit_gru(
    log_: Interactions,
    split: Split,
    text: np.ndarray,
    cfg: GruConfig,
    seed: int,
    out: Path,
    *,
    device: str = "auto",
    id_prefix: str = "m",
    progress: Progress | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train (or resume), export, and measure one seed; returns the artefact folder."""
    art_dir = out / f"learned-gru-seed{seed}"
    manifest = art_dir / "manifest.json"
    config = {
        "train": cfg.to_dict(),
        "seed": seed,
        "id_prefix": id_prefix,
        "data": split_fingerprint(split),
    }
    if manifest.is_file() and json.loads(manifest.read_text()).get("config") == config:
        log.info("learned-gru seed %d: reusing %s", seed, art_dir)
        return art_dir, json.loads(manifest.read_text())["metrics"]
    res = train_gru(
        split, log_, text, cfg, seed, device=device, out_dir=_ckpt(out), progress=progress
    )
    model: FusedGru = res.model  # type: ignore[assignment]
    users = split.eval_users()
    cell_ids = catalogue_ids(log_.item_ids, id_prefix)
    metrics = _summary(res)
    art = export_gru(
        model,
        cell_ids,
        art_dir,
        config=config,
        metrics=metrics,
    )
    cell = GruCell(load_artifact(art_dir))
    test = gru_numpy_scores(cell, log_, split, text, users, "test", id_prefix)
    metrics["test"] = _at_10(test, [split.history(u, "test") for u in users], split.test[users])
    # The numpy cell must agree with torch: a cheap end-to-end parity check.
    torch_scores = gru_scores(
        model, histories(split, log_, "test"), users[:64], pick_device(device)
    )
    metrics["numpy_vs_torch_max_abs"] = float(np.abs(torch_scores - test[:64]).max())
    export_gru(model, cell_ids, art_dir, config=art.manifest["config"], metrics=metrics)
    return art_dir, metrics


def fit_sasrec(
    split: Split,
    cfg: SasrecConfig,
    seed: int,
    out: Path,
    *,
    device: str = "auto",
    progress: Progress | None = None,
) -> tuple[Sasrec, dict[str, Any]]:
    path = out / f"sasrec-seed{seed}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        data = split_fingerprint(split)
        if saved["config"] == cfg.to_dict() and saved["seed"] == seed and saved["data"] == data:
            model = Sasrec(split.n_items, cfg)
            model.load_state_dict(saved["model"])
            return model.to(pick_device(device)).eval(), saved["metrics"]
    res = train_sasrec(split, cfg, seed, device=device, out_dir=_ckpt(out), progress=progress)
    model: Sasrec = res.model  # type: ignore[no-redef]
    users = split.eval_users()
    hist = [split.history(u, "test") for u in range(split.n_users)]
    test = sasrec_scores(model, hist, users, pick_device(device))
    metrics = _summary(res)
    metrics["test"] = _at_10(test, [hist[u] for u in users], split.test[users])
    torch.save(
        {
            "config": cfg.to_dict(),
            "seed": seed,
            "data": split_fingerprint(split),
            "model": model.state_dict(),
            "metrics": metrics,
        },
        path,
    )
    return model, metrics


def train_all(
    data: str | Path, out: str | Path, *, max_users: int | None = None, **options: Any
) -> list[dict[str, Any]]:
    """`train_log` on a MovieLens folder: every model, every seed; writes the report.

    ``options`` are `train_log`'s (models, seeds, device, gru, sasrec, id_prefix, progress).
    """
    return train_log(load_movielens(data, max_users=max_users), out, **options)


def train_log(
    log_: Interactions,
    out: str | Path,
    *,
    texts: list[str] | None = None,
    models: tuple[str, ...] = MODELS,
    seeds: tuple[int, ...] = (0,),
    device: str = "auto",
    gru: GruConfig | None = None,
    sasrec: SasrecConfig | None = None,
    id_prefix: str = "m",
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Train every model for every seed on the leave-last-out split of ``log_``; write the report.

    ``texts`` (one per item) is what the workers embed, when not title and genres.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = leave_last_out(log_)
    runs: list[dict[str, Any]] = []
    text = (
        text_embeddings(log_, out / "text-embeddings", texts) if "learned-gru" in models else None
    )
    for seed in seeds:
        for name in models:
            if name == "learned-gru":
                assert text is not None
                path, metrics = fit_gru(
                    log_, split, text, gru or GruConfig(), seed, out,
                    device=device, id_prefix=id_prefix, progress=progress,
                )  # fmt: skip
                runs.append({"model": name, "seed": seed, "artifact": str(path), **metrics})
            elif name == "sasrec":
                _, metrics = fit_sasrec(
                    split, sasrec or SasrecConfig(), seed, out, device=device, progress=progress
                )
                runs.append({"model": name, "seed": seed, **metrics})
            else:
                raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
            write_report(runs, out)
    return runs


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A config dataclass with some fields replaced (values cast to the field's type)."""
    known = {f.name for f in fields(cfg)}
    cast = {}
    for k, v in overrides.items():
        if k not in known:
            raise ValueError(f"{k}={v}: unknown setting (known: {', '.join(sorted(known))})")
        try:
            cast[k] = type(getattr(cfg, k))(v)
        except ValueError as exc:
            raise ValueError(f"{k}={v}: {exc}") from exc
    return replace(cfg, **cast)


def _summary(res: TrainResult) -> dict[str, Any]:
    return {
        "best_epoch": res.best_epoch,
        "valid_ndcg10": res.best_valid_ndcg,
        "epochs_run": len(res.history),
        "train_seconds": res.seconds,
        "history": res.history,
    }


def _ckpt(out: Path) -> Path:
    path = out / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path
