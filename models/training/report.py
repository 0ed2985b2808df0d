"""The training report: loss and validation curves as a PNG, numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(runs: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``runs``: dicts with model, seed, history (epoch, loss, valid_ndcg10) and metrics.

    Writes ``report.json`` and ``report.png`` (one column per model: training
    loss on top, validation NDCG@10 below, one line per seed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(runs, indent=1))
    models = sorted({r["model"] for r in runs})
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, name in enumerate(models):
        for r in (r for r in runs if r["model"] == name):
            epochs = [h["epoch"] for h in r["history"]]
            label = f"seed {r['seed']}"
            axes[0, col].plot(epochs, [h["loss"] for h in r["history"]], label=label)
            axes[1, col].plot(epochs, [h["valid_ndcg10"] for h in r["history"]], label=label)
            if r.get("best_epoch", -1) >= 0:
                axes[1, col].axvline(r["best_epoch"], ls=":", lw=0.8)
        axes[0, col].set_title(f"{name}: training loss")
        axes[1, col].set_title(f"{name}: validation NDCG@10")
        axes[1, col].set_xlabel("epoch")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = out / "report.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
