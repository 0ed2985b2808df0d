"""The evaluation harness: fit each registered model per seed, score both phases, report.

Protocol (leave-last-out, time-ordered): per user, events sorted by timestamp
(ties in file order); the last is the test target, the second-last the
validation target, everything before is training. Models learn from all
users' training events and tune on the validation targets; the test target
is ranked against the full catalogue with the user's training items and
validation item masked (see `models.evaluation.metrics` for the tie rule).

The models, and how to add one: `models.evaluation.registry`.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Interactions, leave_last_out
from models.evaluation.baselines import ModelUnavailable
from models.evaluation.metrics import evaluate
from models.evaluation.registry import MODELS
from models.evaluation.report import write_reports

log_ = logging.getLogger(__name__)

METRICS = ("hr", "ndcg", "mrr", "coverage")


def run_eval(
    log: Interactions,
    models: Sequence[str] | None,
    seeds: Sequence[int],
    out_dir: str | Path | None,
    *,
    k: int = 10,
    chunk: int = 512,
    dataset: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``models`` (None: all registered) for each seed; write eval.json and eval.md.

    Returns the report dict (also the content of eval.json). A model's run
    that raises is recorded as "failed" with its traceback; the others go on.
    Models that declare ``deterministic = True`` are fitted once and their
    result is reused for the other seeds.
    """
    started = time.perf_counter()
    say = progress or log_.info
    names = list(MODELS) if not models else list(models)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; registered: {sorted(MODELS)}")
    split = leave_last_out(log)
    users = split.eval_users()
    report: dict[str, Any] = {
        "dataset": {
            "name": dataset,
            "n_users": log.n_users,
            "n_items": log.n_items,
            "n_rows": log.n_rows,
            "eval_users": len(users),
        },
        "protocol": {
            "split": "leave-last-out per user, time-ordered (ties in file order)",
            "candidates": "full catalogue minus items the user had before the target",
            "ties": "pessimistic (rank = 1 + candidates scoring >= the target)",
            "k": k,
        },
        "seeds": list(seeds),
        "models": {},
    }
    for name in names:
        say(f"{name}: start")
        report["models"][name] = _run_model(name, split, log, seeds, users, k, chunk, say)
        entry = report["models"][name]
        if entry["status"] == "ok":
            m = entry["mean"]["test"]
            say(f"{name}: test NDCG@{k} {m['ndcg']:.4f} HR@{k} {m['hr']:.4f}")
        else:
            say(f"{name}: {entry['status']}: {entry['reason'].splitlines()[-1]}")
    report["wall_s"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        write_reports(report, Path(out_dir))
    return report


def _run_model(
    name: str,
    split: Any,
    log: Interactions,
    seeds: Sequence[int],
    users: np.ndarray,
    k: int,
    chunk: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        try:
            model = MODELS[name]()
            if runs and getattr(model, "deterministic", False):
                runs.append({**runs[0], "seed": seed, "reused_from_seed": runs[0]["seed"]})
                continue
            t0 = time.perf_counter()
            model.fit(split, log, seed)
            fit_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            valid = evaluate(model.scores, split, "valid", users=users, k=k, chunk=chunk)
            test = evaluate(model.scores, split, "test", users=users, k=k, chunk=chunk)
            score_s = time.perf_counter() - t1
        except (ImportError, ModelUnavailable) as exc:
            return {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}", "runs": runs}
        except Exception:
            return {"status": "failed", "reason": traceback.format_exc(), "runs": runs}
        runs.append(
            {
                "seed": seed,
                "valid": valid,
                "test": test,
                "fit_s": round(fit_s, 3),
                "score_s": round(score_s, 3),
                "params": _jsonable(getattr(model, "params", {})),
                "tuning": _jsonable(getattr(model, "tuning", [])),
            }
        )
        say(f"{name} seed {seed}: fit {fit_s:.1f}s, test NDCG@{k} {test['ndcg']:.4f}")
    return {"status": "ok", "runs": runs, **_aggregate(runs)}


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population) standard deviation over seeds, per phase and metric."""
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    for phase in ("valid", "test"):
        values = {m: np.array([r[phase][m] for r in runs], dtype=np.float64) for m in METRICS}
        mean[phase] = {m: float(v.mean()) for m, v in values.items()}
        std[phase] = {m: float(v.std()) for m, v in values.items()}
    fit = np.array([r["fit_s"] for r in runs if "reused_from_seed" not in r])
    return {"mean": mean, "std": std, "fit_s_mean": float(fit.mean()) if fit.size else 0.0}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)
