"""Where a benchmark leaves its figures: a JSON file and a bar chart beside it.

Shared by the scripts in ``benchmarks/`` (run as ``python benchmarks/X.py``,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(
    path: Path,
    result: Mapping[str, object],
    bars: Mapping[str, Mapping[str, float]],
    *,
    ylabel: str,
    title: str,
    log_scale: bool = False,
) -> None:
    """Write ``result`` to ``path`` (JSON) and ``bars`` to the same name as PNG.

    ``bars`` maps each series to its values per category: one series draws
    plain bars, several draw groups side by side.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    bar_chart(path.with_suffix(".png"), bars, ylabel=ylabel, title=title, log_scale=log_scale)


def bar_chart(
    path: Path,
    bars: Mapping[str, Mapping[str, float]],
    *,
    ylabel: str,
    title: str,
    log_scale: bool = False,
) -> None:
    """A (grouped) bar chart of ``bars``, one colour a series, values written on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(dict.fromkeys(c for values in bars.values() for c in values))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(categories) * len(bars)), 3.2))
    for i, (series, values) in enumerate(bars.items()):
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(categories))]
        heights = [values.get(c, 0.0) for c in categories]
        drawn = ax.bar(xs, heights, width, label=series if len(bars) > 1 else None)
        ax.bar_label(drawn, labels=[_label(h) for h in heights], fontsize=8)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_scale:
        ax.set_yscale("log")
    if len(bars) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(value: float) -> str:
    """1,680 for big values, 3 significant digits for small ones."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
