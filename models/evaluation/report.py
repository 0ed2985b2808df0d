"""Writing an evaluation report: ``eval.json`` and a Markdown table ``eval.md``."""

from __future__ import annotations

import json
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
