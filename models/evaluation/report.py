"""Writing an evaluation report: ``eval.json`` and a Markdown table ``eval.md``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

_COLUMNS = (("hr", "HR@{k}"), ("ndcg", "NDCG@{k}"), ("mrr", "MRR"), ("coverage", "Coverage@{k}"))


def markdown_table(report: dict[str, Any], phase: str = "test") -> str:
    """One row per model: mean ± std over seeds of each metric, fit seconds, status."""
    k = report["protocol"]["k"]
    head = ["model", *(label.format(k=k) for _, label in _COLUMNS), "fit s", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["models"].items():
        if entry["status"] != "ok":
            reason = entry["reason"].strip().splitlines()[-1] if entry["reason"] else ""
            cells = [name, *(["–"] * len(_COLUMNS)), "–", f"{entry['status']}: {reason}"]
        else:
            mean, std = entry["mean"][phase], entry["std"][phase]
            cells = [
                name,
                *(f"{mean[m]:.4f} ± {std[m]:.4f}" for m, _ in _COLUMNS),
                f"{entry['fit_s_mean']:.1f}",
                str(len(entry["runs"])),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The whole eval.md: dataset, protocol, test and validation tables, chosen parameters."""
    ds, proto = report["dataset"], report["protocol"]
    parts = [
        f"# Evaluation: {ds.get('name') or 'interactions'}",
        "",
        f"{ds['n_users']} users, {ds['n_items']} items, {ds['n_rows']} events; "
        f"{ds['eval_users']} users with validation and test targets. "
        f"Seeds {', '.join(map(str, report['seeds']))}; wall {report.get('wall_s', 0):.0f} s.",
        "",
        f"Split: {proto['split']}. Candidates: {proto['candidates']}. Ties: {proto['ties']}.",
        "",
        "## Test (mean ± std over seeds)",
        "",
        markdown_table(report, "test"),
        "",
        "## Validation (hyper-parameters were tuned here)",
        "",
        markdown_table(report, "valid"),
        "",
        "## Hyper-parameters in use",
        "",
    ]
    for name, entry in report["models"].items():
        if entry["status"] == "ok" and entry["runs"]:
            params = ", ".join(f"{k}={v}" for k, v in entry["runs"][0]["params"].items())
            parts.append(f"- **{name}**: {params}")
    return "\n".join(parts) + "\n"


def write_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir`` (created); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "eval.json", out_dir / "eval.md"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown_report(report))
    return json_path, md_path


# ----------------------------------------------------------------------------- ablation


def ablation_table(entry: dict[str, Any], k: int, recall_at: int, phase: str = "test") -> str:
    """One dataset's ablation: a row per variant, metrics, cost, the chosen half-life."""
    head = ["variant", f"HR@{k}", f"NDCG@{k}", f"recall@{recall_at}", f"diversity@{k}",
            f"coverage@{k}", "ms/event", "half-life d"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in entry["variants"].items():
        if v["status"] != "ok":
            reason = v["reason"].strip().splitlines()[-1] if v.get("reason") else ""
            cells = [name, *(["–"] * (len(head) - 2)), f"{v['status']}: {reason}"]
        else:
            m = v[phase]
            cells = [
                name,
                *(f"{m[key]:.4f}" for key in ("hr", "ndcg", "recall", "diversity", "coverage")),
                f"{v['cost']['ms_per_event']:.3f}",
                _half_life(v["params"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _half_life(params: dict[str, Any]) -> str:
    days = params.get("half_life_days")
    return "–" if days is None else f"{days:g}"  # a fixed (learned) updater: none


def ablation_findings(entry: dict[str, Any], k: int, recall_at: int) -> list[str]:
    """The multi-interest ratios and the topics' cost of one dataset, as sentences."""
    out = []
    multi = entry.get("multi_interest")
    if multi:
        parts = [
            f"{label} {m['ratio']:.3f}x [{m['low']:.3f}, {m['high']:.3f}]"
            for m, label in (
                (multi["ndcg"], f"NDCG@{k}"),
                (multi["diversity"], f"diversity@{k}"),
                (multi["recall"], f"recall@{recall_at}"),
            )
        ]
        out.append(
            "full / no-multi (the same updater with one interest), test, ratio of means "
            "[95% paired bootstrap over users]: " + "; ".join(parts) + "."
        )
    cost = entry.get("topics_cost")
    if cost:
        overhead = cost["overhead"]
        share = f" ({overhead:+.1%})" if overhead is not None else ""
        same = "identical" if cost["same_scores"] else "DIFFERENT (a bug: topics must not rank)"
        out.append(
            f"Topics: {cost['ms_per_event_with']:.3f} ms/event with, "
            f"{cost['ms_per_event_without']:.3f} without{share}; metrics {same}."
        )
    return out


def ablation_markdown(report: dict[str, Any]) -> str:
    """The whole ablation.md: protocol, then per dataset its table and findings."""
    proto = report["protocol"]
    k, recall_at = proto["k"], proto["recall_at"]
    parts = [
        "# Ablation of the interest structure",
        "",
        f"Split: {proto['split']}. Candidates: {proto['candidates']}. Ties: {proto['ties']}. "
        f"Diversity@{k}: {proto['diversity']}. Cost: {proto['cost']}. Tuning: {proto['tuning']}. "
        f"Wall {report.get('wall_s', 0):.0f} s.",
        "",
        "Variants: " + "; ".join(f"`{n}`: {d}" for n, d in report["variants"].items()) + ".",
    ]
    for name, entry in report["datasets"].items():
        ds = entry["dataset"]
        parts += [
            "",
            f"## {name}",
            "",
            f"{ds.get('description') or name}. Log: {ds['n_users']} users, {ds['n_items']} "
            f"items, {ds['n_rows']} events, {ds['eval_users']} users scored; "
            f"{ds['topics']} topics. Test:",
            "",
            ablation_table(entry, k, recall_at),
        ]
        for line in ablation_findings(entry, k, recall_at):
            parts += ["", line]
    return "\n".join(parts) + "\n"


def write_ablation_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``ablation.json`` and ``ablation.md`` into ``out_dir`` (created); returns both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "ablation.json", out_dir / "ablation.md"
    json_path.write_text(json.dumps(_strict(report), indent=2, allow_nan=False) + "\n")
    md_path.write_text(ablation_markdown(report))
    return json_path, md_path


def _strict(value: Any) -> Any:
    """``value`` as strict JSON: numpy scalars as numbers, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
