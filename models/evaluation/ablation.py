"""The ablation of the interest structure: the full core, then each part switched off.

Every variant is the time-decay core (`models.evaluation.baselines.TimeDecayCore`)
with the workers' default `models.core.CoreParams` (or the ``base`` given to
`run_ablation`) and one part taken away:

- ``full``: several interests, short/mid/long-term levels, the topic model;
- ``no-multi``: one interest (``max_interests = 1``);
- ``no-short``: no short-term level (``short_weight = 0``);
- ``no-long``: no long-term level (``long_weight = long_return_weight = 0``);
- ``no-topics``: no topic model on the catalogue. Topics never rank, so its
  metrics equal ``full``'s; what it measures is the topics' cost per event;
- ``single-vector``: the core before the interest structure: one interest,
  the window, no long-term level.

Each variant is replayed through `models.core.step` over the whole log,
leave-last-out as the harness does (`models.evaluation.harness`), and its
updater half-life is tuned on the validation targets (the same grid for
all; ``no-topics`` takes ``full``'s, its scores being the same). Per
variant: HR@k, NDCG@k, recall@n (HR@n: one target per user), the
intra-list genre diversity of the top k
(`models.evaluation.metrics.intra_list_diversity`), coverage and the wall
time of ``step`` per event in the same run. ``full`` is compared with
``no-multi`` (the same updater with one interest) by the ratio of the means,
with a paired bootstrap interval over users.

A new variant is one `register_variant` call.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.core import CoreParams
from models.datasets import Interactions, Split, leave_last_out
from models.evaluation.baselines import TimeDecayCore
from models.evaluation.metrics import MetricAccumulator, accumulate

if TYPE_CHECKING:
    from models.interest.topics import OnlineTopics
    from models.update import InterestUpdater

log_ = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One configuration of the core in the ablation.

    Parameters
    ----------
    name
        Row label.
    description
        What is switched off, in words.
    change
        The variant's `models.core.CoreParams` from the base ones.
    topics
        Whether the catalogue carries the topic model.
    tuned_as
        A variant that ranks exactly as this one (same settings): its chosen
        half-life is reused rather than tuned again.
    """

    name: str
    description: str
    change: Callable[[CoreParams], CoreParams] = field(default=lambda p: p)
    topics: bool = True
    tuned_as: str | None = None


#: The variants by name, in table order.
VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> None:
    """Add (or replace) a variant under its name."""
    VARIANTS[variant.name] = variant


def _one_interest(p: CoreParams) -> CoreParams:
    return replace(p, composition=replace(p.composition, max_interests=1))


def _no_long(p: CoreParams) -> CoreParams:
    return replace(p, levels=replace(p.levels, long_weight=0.0, long_return_weight=0.0))


register_variant(Variant("full", "several interests, short/mid/long levels, topics"))
register_variant(Variant("no-multi", "one interest (max_interests=1)", _one_interest))
register_variant(
    Variant(
        "no-short",
        "no short-term level (short_weight=0)",
        lambda p: replace(p, levels=replace(p.levels, short_weight=0.0)),
    )
)
register_variant(Variant("no-long", "no long-term level (long weights 0)", _no_long))
register_variant(
    Variant("no-topics", "no topic model (catalogue.topics None)", topics=False, tuned_as="full")
)
register_variant(
    Variant(
        "single-vector",
        "one interest, window, no long term (the core before interests)",
        lambda p: _no_long(_one_interest(p)),
        topics=False,
    )
)


@dataclass(frozen=True)
class AblationData:
    """A log to run the ablation on, with its item vectors and texts.

    Parameters
    ----------
    name
        Label in reports.
    log
        The interactions; ``log.genres`` are the genres diversity is measured on.
    embeddings
        [n_items, dim] item vectors, in dense order.
    texts
        Per item, its text (the topic model's labels).
    event_type
        How a row enters ``step``: "rating" (weighted by its stars) or "view".
    description
        One line on where the log comes from.
    """

    name: str
    log: Interactions
    embeddings: np.ndarray
    texts: Sequence[str]
    event_type: str = "rating"
    description: str = ""


def build_topics(
    embeddings: np.ndarray, texts: Sequence[str], item_ids: Sequence[str], seed: int
) -> OnlineTopics:
    """A topic model fed every item in dense order, as the workers' shared one is."""
    from models.interest.topics import OnlineTopics

    topics = OnlineTopics(embeddings.shape[1], seed=seed)
    for item_id, vector, text in zip(item_ids, embeddings, texts, strict=True):
        topics.observe(item_id, vector, text)
    return topics


def run_ablation(
    datasets: Sequence[AblationData],
    variants: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    base: CoreParams | None = None,
    half_lives_days: Sequence[float] = (0.01, 0.05, 1.0, 30.0),
    k: int = 10,
    recall_at: int = 50,
    batch_size: int = 16,
    seed: int = 0,
    bootstrap: int = 2000,
    timing_users: int = 200,
    timing_repeats: int = 3,
    tie_mass_half_life: bool = False,
    updater: InterestUpdater | None = None,
    id_prefix: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``variants`` (None: all registered) on each dataset; write ablation.json and .md.

    ``base`` is the full model's settings (None: the workers' defaults);
    ``seed`` seeds the topic model, the timed users and the bootstrap. A
    variant that raises is recorded as "failed" with its traceback; the
    others go on. The cost per event is timed after all variants are fitted:
    ``timing_users`` users replayed again per variant, the variants taking
    turns user by user, ``timing_repeats`` rounds, the fastest round kept
    (the least disturbed by whatever else runs on the machine). With
    ``tie_mass_half_life`` the interests' mass half-life follows the tuned
    updater half-life (`TimeDecayCore`'s option of that name).

    ``updater`` replaces the time-decayed rule in every variant (a learned
    model, whose catalogue ids are the log's with ``id_prefix``); the
    half-life grid then tunes nothing (only the mass half-life when tied),
    so its first value alone is run.
    """
    from models.evaluation.report import write_ablation_reports

    started = time.perf_counter()
    say = progress or log_.info
    names = list(VARIANTS) if not variants else list(variants)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; registered: {list(VARIANTS)}")
    base = base or CoreParams()
    if updater is not None and not tie_mass_half_life:
        half_lives_days = tuple(half_lives_days)[:1]
    fixed = {"updater": updater, "id_prefix": id_prefix}
    report: dict[str, Any] = {
        "protocol": {
            "split": "leave-last-out per user, time-ordered (ties in file order)",
            "candidates": "full catalogue minus items the user had before the target",
            "ties": "pessimistic (rank = 1 + candidates scoring >= the target)",
            "k": k,
            "recall_at": recall_at,
            "diversity": f"mean over users of 1 - mean pairwise Jaccard of the genre sets "
            f"of their top {k}",
            "cost": f"wall time in models.core.step per event, training events in "
            f"micro-batches of {batch_size} then the validation event alone, of up to "
            f"{timing_users} users replayed again, variants taking turns user by user, "
            f"fastest of {timing_repeats} rounds",
            "tuning": (
                f"updater half-life (days) from {list(half_lives_days)} on validation "
                "NDCG, per variant"
                + ("; the interests' mass half-life set to it" if tie_mass_half_life else "")
                if updater is None
                else "none (a fixed updater)"
            ),
            "updater": "time-decay" if updater is None else updater.name,
            "base": _describe(base),
            "seed": seed,
        },
        "variants": {n: VARIANTS[n].description for n in names},
        "datasets": {},
    }
    for data in datasets:
        say(f"{data.name}: {data.log.n_users} users, {data.log.n_items} items, "
            f"{data.log.n_rows} events")  # fmt: skip
        report["datasets"][data.name] = _run_dataset(
            data, names, base, tuple(half_lives_days), k, recall_at, batch_size, seed, bootstrap,
            (timing_users, timing_repeats), tie_mass_half_life, say, fixed,
        )  # fmt: skip
    report["wall_s"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        write_ablation_reports(report, Path(out_dir))
    return report


def _run_dataset(
    data: AblationData,
    names: list[str],
    base: CoreParams,
    half_lives: tuple[float, ...],
    k: int,
    recall_at: int,
    batch_size: int,
    seed: int,
    bootstrap: int,
    timing: tuple[int, int],
    tie: bool,
    say: Callable[[str], None],
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    log = data.log
    split = leave_last_out(log)
    users = split.eval_users()
    t0 = time.perf_counter()
    topics = build_topics(data.embeddings, data.texts, log.item_ids, seed)
    topics_s = time.perf_counter() - t0
    entries: dict[str, dict[str, Any]] = {}
    accs: dict[str, MetricAccumulator] = {}
    fitted: dict[str, TimeDecayCore] = {}
    for name in names:
        variant = VARIANTS[name]
        twin = entries.get(variant.tuned_as or "", {})
        grid = (twin["params"]["half_life_days"],) if twin.get("status") == "ok" else half_lives
        try:
            entry, model, test = _fit_variant(
                variant, data, split, base, grid, k, recall_at, batch_size, seed,
                topics if variant.topics else None, tie, fixed,
            )  # fmt: skip
        except Exception:
            entries[name] = {"status": "failed", "reason": traceback.format_exc()}
            say(f"{data.name} {name}: failed: {entries[name]['reason'].splitlines()[-1]}")
            continue
        entries[name], fitted[name], accs[name] = entry, model, test
        m = entry["test"]
        say(f"{data.name} {name}: NDCG@{k} {m['ndcg']:.4f} HR@{k} {m['hr']:.4f} "
            f"recall@{recall_at} {m['recall']:.4f} diversity {m['diversity']:.4f} "
            f"(fit {entry['fit_s']:.0f} s)")  # fmt: skip
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(users)[: timing[0]])
    for name, cost in time_variants(fitted, sample, timing[1]).items():
        entries[name]["cost"] = {
            **cost,
            "fit_replay_ms_per_event": round(fitted[name].cost["ms_per_event"], 5),
        }
        say(f"{data.name} {name}: {cost['ms_per_event']:.3f} ms/event")
    out: dict[str, Any] = {
        "dataset": {
            "description": data.description,
            "n_users": log.n_users,
            "n_items": log.n_items,
            "n_rows": log.n_rows,
            "eval_users": len(users),
            "event_type": data.event_type,
            "topics": len(topics.topics()),
            "topics_build_s": round(topics_s, 3),
        },
        "variants": entries,
    }
    if "full" in accs and "no-multi" in accs:
        out["multi_interest"] = compare(
            accs["full"], accs["no-multi"], k=k, recall_at=recall_at, n=bootstrap, seed=seed
        )
    with_t, without = entries.get("full", {}), entries.get("no-topics", {})
    if with_t.get("status") == "ok" and without.get("status") == "ok":
        a, b = with_t["cost"]["ms_per_event"], without["cost"]["ms_per_event"]
        out["topics_cost"] = {
            "ms_per_event_with": a,
            "ms_per_event_without": b,
            "overhead": round(a / b - 1.0, 4) if b > 0 else None,
            "same_scores": all(
                with_t[phase][m] == without[phase][m]
                for phase in ("valid", "test")
                for m in ("hr", "ndcg", "recall", "diversity")
            ),
        }
    return out


def _fit_variant(
    variant: Variant,
    data: AblationData,
    split: Split,
    base: CoreParams,
    half_lives: tuple[float, ...],
    k: int,
    recall_at: int,
    batch_size: int,
    seed: int,
    topics: OnlineTopics | None,
    tie: bool = False,
    fixed: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], TimeDecayCore, MetricAccumulator]:
    """One variant fitted (its half-life tuned on validation) and scored on both phases."""
    params = variant.change(base)
    model = TimeDecayCore(
        half_lives_days=half_lives,
        short_term_weights=(params.levels.short_weight,),
        event_types=(data.event_type,),
        batch_size=batch_size,
        window=params.window,
        embeddings=data.embeddings,
        base=params,
        topics=topics,
        tie_mass_half_life=tie,
        name=variant.name,
        **(fixed or {}),
    )
    t0 = time.perf_counter()
    model.fit(split, data.log, seed)
    fit_s = time.perf_counter() - t0
    kw = {"k": k, "recall_at": (recall_at,), "genres": data.log.genres}
    valid = accumulate(model.scores, split, "valid", **kw)
    test = accumulate(model.scores, split, "test", **kw)
    core = model.core_params
    entry = {
        "status": "ok",
        "valid": _rename(valid.result(), recall_at),
        "test": _rename(test.result(), recall_at),
        "fit_s": round(fit_s, 2),
        "params": {
            "updater": core.updater.name,
            "half_life_days": model.params["half_life_days"] if model.updater is None else None,
            "short_weight": core.levels.short_weight,
            "long_weight": core.levels.long_weight,
            "long_return_weight": core.levels.long_return_weight,
            "max_interests": core.composition.max_interests,
            "mass_half_life_s": core.composition.half_life_s,
            "topics": topics is not None,
        },
        "tuning": model.tuning,
    }
    return entry, model, test


def time_variants(
    models: dict[str, TimeDecayCore], users: np.ndarray, repeats: int
) -> dict[str, dict[str, float]]:
    """Per fitted model, the fastest of ``repeats`` rounds of `TimeDecayCore.time_replay`.

    Within a round the models take turns user by user (the order rotating),
    so a busy spell on the machine falls on every model alike rather than
    on whichever ran then; the fastest round is the least disturbed.
    """
    names = list(models)
    rounds = max(repeats, 1)
    best: dict[str, dict[str, float]] = {}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        counts = {n: [0, 0] for n in names}
        for j, u in enumerate(users.tolist()):
            shift = (j + r) % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                cost = models[name].time_replay([u])
                spent[name] += cost["replay_s"]
                counts[name][0] += cost["events"]
                counts[name][1] += cost["steps"]
        for name in names:
            if name not in best or spent[name] < best[name]["replay_s"]:
                events, steps = counts[name]
                best[name] = {
                    "replay_s": round(spent[name], 4),
                    "events": events,
                    "steps": steps,
                    "ms_per_event": round(1000.0 * spent[name] / max(events, 1), 5),
                }
    return {n: {**c, "users": len(users), "repeats": rounds} for n, c in best.items()}


def _rename(result: dict[str, float], recall_at: int) -> dict[str, float]:
    out = dict(result)
    out["recall"] = out.pop(f"recall@{recall_at}")
    return out


def per_user(acc: MetricAccumulator, k: int, recall_at: int) -> dict[str, np.ndarray]:
    """Per user: ndcg, hr, recall (at ``recall_at``) and diversity of an accumulator."""
    ranks = acc.ranks.astype(np.float64)
    hit = ranks <= k
    return {
        "ndcg": np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0),
        "hr": hit.astype(np.float64),
        "recall": (ranks <= recall_at).astype(np.float64),
        "diversity": acc.diversity,
    }


def compare(
    a: MetricAccumulator,
    b: MetricAccumulator,
    *,
    k: int = 10,
    recall_at: int = 50,
    n: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Ratio of means ``a / b`` per metric, with a 95% paired bootstrap interval over users.

    Both accumulators must hold the same users in the same order. Users
    resampled with replacement ``n`` times (seeded); NaN entries (a list
    with no pairs) are left out of both means of a resample.

    >>> x, y = MetricAccumulator(4, k=1), MetricAccumulator(4, k=1)
    >>> for acc, first in ((x, 0), (y, 1)):
    ...     for target in (0, 0, 0, 1):
    ...         s = np.zeros((1, 4)); s[0, first] = 1.0
    ...         acc.update(s, np.array([target]), np.zeros((1, 4), dtype=bool))
    >>> r = compare(x, y, k=1, recall_at=1, n=200)["hr"]
    >>> r["ratio"], r["low"] <= r["ratio"] <= r["high"]
    (3.0, True)
    """
    pa, pb = per_user(a, k, recall_at), per_user(b, k, recall_at)
    if len(pa["ndcg"]) != len(pb["ndcg"]):
        raise ValueError("the two runs scored different users")
    rng = np.random.default_rng(seed)
    m = len(pa["ndcg"])
    draws = rng.integers(0, m, size=(n, m)) if m else np.zeros((n, 0), dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for metric in ("ndcg", "hr", "recall", "diversity"):
        x, y = pa[metric], pb[metric]
        ok = np.isfinite(x) & np.isfinite(y)
        ratio = _ratio(x[ok], y[ok])
        boot = []
        for idx in draws:
            keep = idx[ok[idx]]
            boot.append(_ratio(x[keep], y[keep]))
        boot_arr = np.array([r for r in boot if math.isfinite(r)])
        low, high = np.quantile(boot_arr, [0.025, 0.975]) if boot_arr.size else (math.nan, math.nan)
        out[metric] = {
            "a": float(np.mean(x[ok])) if ok.any() else math.nan,
            "b": float(np.mean(y[ok])) if ok.any() else math.nan,
            "ratio": round(ratio, 4),
            "low": round(float(low), 4),
            "high": round(float(high), 4),
        }
    return out


def _ratio(x: np.ndarray, y: np.ndarray) -> float:
    den = float(np.mean(y)) if y.size else 0.0
    return float(np.mean(x)) / den if den > 0 else math.nan


def _describe(params: CoreParams) -> dict[str, Any]:
    """The settings the variants start from, JSON-able."""
    c, lv = params.composition, params.levels
    return {
        "composition": {
            "max_interests": c.max_interests,
            "open_below": c.open_below,
            "merge_above": c.merge_above,
            "half_life_s": c.half_life_s,
            "temperature": c.temperature,
        },
        "levels": {
            "short_weight": lv.short_weight,
            "long_weight": lv.long_weight,
            "long_return_weight": lv.long_return_weight,
            "return_scale_s": lv.return_scale_s,
            "long_half_life_s": lv.long_half_life_s,
        },
        "window": {"max_events": params.window.max_events, "max_age_s": params.window.max_age_s},
        "k": params.k,
    }
