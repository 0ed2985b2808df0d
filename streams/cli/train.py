"""``interest-stream train``: train, export and report the learned updater and SASRec.

Offline: it imports no transport (no Kafka client, no Faust, no store), only
click and ``models.training`` (the `train` extra), so a GPU box runs it with
``interest-stream train --data ... --out ...`` and nothing else started.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from streams.cli.options import data_option, require_data


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        out[key.strip()] = val.strip()
    return out


@click.command("train")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Choice(["learned-gru", "sasrec"]),
    help="Models to train (repeatable; default: both).",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--max-users", type=int, default=None, help="Keep only the first N users.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--epochs", type=int, default=None, help="Cap on epochs for every model.")
@click.option("--gru", "gru_set", multiple=True, help="GruConfig override KEY=VALUE.")
@click.option("--sasrec", "sasrec_set", multiple=True, help="SasrecConfig override KEY=VALUE.")
@click.option(
    "--id-prefix",
    default="m",
    show_default=True,
    help="Prefix that turns the log's item ids into catalogue ids (the workload's 'm<id>').",
)
def train_command(
    data: Path | None,
    out: str,
    models: tuple[str, ...],
    seeds: str,
    max_users: int | None,
    device: str,
    epochs: int | None,
    gru_set: tuple[str, ...],
    sasrec_set: tuple[str, ...],
    id_prefix: str,
) -> None:
    """Train on the leave-last-out split of DATA; export to OUT; write report.png/json.

    Seeded and resumable: running it again continues unfinished runs and
    reuses finished ones. Needs the `train` extra (torch, matplotlib).
    """
    data = require_data(data)
    try:
        from models.training.gru import GruConfig
        from models.training.pipeline import train_all, with_overrides
        from models.training.sasrec import SasrecConfig
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise click.UsageError(f"training needs the `train` extra: {exc}") from exc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gru_over, sasrec_over = _pairs(gru_set), _pairs(sasrec_set)
    if epochs is not None:
        gru_over.setdefault("max_epochs", str(epochs))
        sasrec_over.setdefault("max_epochs", str(epochs))
    try:
        gru = with_overrides(GruConfig(), gru_over)
        sasrec = with_overrides(SasrecConfig(), sasrec_over)
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc

    def progress(row: dict) -> None:
        click.echo(
            f"{row['model']} epoch {row['epoch']:3d}  loss {row['loss']:.4f}  "
            f"valid NDCG@10 {row['valid_ndcg10']:.4f}  (best epoch {row['best_epoch']}, "
            f"{row['seconds']:.1f}s)",
            err=True,
        )

    runs = train_all(
        data,
        out,
        models=models or ("learned-gru", "sasrec"),
        seeds=seed_list,
        max_users=max_users,
        device=device,
        gru=gru,
        sasrec=sasrec,
        id_prefix=id_prefix,
        progress=progress,
    )
    for run in runs:
        test = run.get("test", {})
        click.echo(
            f"{run['model']} seed {run['seed']}: valid NDCG@10 {run['valid_ndcg10']:.4f}, "
            f"test NDCG@10 {test.get('ndcg10', float('nan')):.4f}, "
            f"HR@10 {test.get('hr10', float('nan')):.4f}"
            + (f", artefact {run['artifact']}" if "artifact" in run else "")
        )
    click.echo(f"report: {out}/report.png")
