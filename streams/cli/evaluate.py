"""``interest-stream eval``: the offline next-item benchmark on a MovieLens folder.

Offline: it imports no transport, only click, ``models`` and the settings
(for the encoder cache of the time-decay model).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import click

from streams.cli.options import data_option, effective_settings, require_data

DEFAULT_OUT = Path("benchmarks") / "results" / "eval"


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"want comma-separated integers, got {text!r}") from exc


@click.command("eval")
@data_option
@click.option("--models", "models", help="Comma-separated model names (default: all).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--train-dir",
    type=click.Path(file_okay=False),
    help="Where `interest-stream train` wrote sasrec/learned-gru models to reuse "
    "(default: INTEREST_STREAM_TRAIN_DIR or .interest-stream/train); missing ones are trained.",
)
@click.option("--max-users", type=int, help="Keep the first N users (by original id).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for eval.json and eval.md.",
)
@click.option("--list", "list_models", is_flag=True, help="List the registered models and exit.")
def eval_command(
    data: Path | None,
    models: str | None,
    seeds: str,
    train_dir: str | None,
    max_users: int | None,
    out: Path,
    list_models: bool,
) -> None:
    """Score next-item prediction (HR@10, NDCG@10, MRR, coverage) of each model.

    Leave-last-out per user in time order, ranking over the full catalogue.
    Writes OUT/eval.json and OUT/eval.md and prints the Markdown table.
    """
    from models.datasets import load_movielens
    from models.evaluation.baselines import TimeDecayCore
    from models.evaluation.harness import run_eval
    from models.evaluation.registry import MODELS, register
    from models.evaluation.report import markdown_table

    if list_models:
        click.echo("\n".join(MODELS))
        return
    if train_dir:
        os.environ["INTEREST_STREAM_TRAIN_DIR"] = train_dir
    data = require_data(data)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    unknown = [n for n in names or [] if n not in MODELS]
    if unknown:
        raise click.UsageError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    encoder_cache = _encoder_cache()
    if encoder_cache is not None:
        register("time-decay-core", functools.partial(TimeDecayCore, encoder_cache=encoder_cache))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    try:
        log = load_movielens(data, max_users=max_users)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{data}: {log.n_users} users, {log.n_items} items, {log.n_rows} events", err=True)
    report = run_eval(
        log,
        names,
        _ints(seeds),
        out,
        dataset=data.resolve().name,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(markdown_table(report, "test"))
    click.echo(
        f"\nwrote {out / 'eval.json'} and {out / 'eval.md'} "
        f"({time.perf_counter() - started:.0f} s)",
        err=True,
    )


def _encoder_cache() -> Path | None:
    """The encoder cache folder of the settings, when one is set."""
    cache = effective_settings().encoder_cache
    return Path(cache) if cache else None
