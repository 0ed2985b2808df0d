"""``interest-stream eval``: the offline next-item benchmark on a MovieLens folder.

``eval --ablation`` runs the ablation of the interest structure instead
(`models.evaluation.ablation`): the time-decay core in full and with each
part switched off, on the MovieLens folder of ``--data`` (when given) and
on built-in synthetic logs (`synthetic_datasets`), in one run.

Offline: it imports no transport, only click, ``models``, the synthetic
workload and the settings (for the encoder cache of the time-decay model).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.options import data_option, effective_settings, require_data

if TYPE_CHECKING:
    from models.evaluation.ablation import AblationData

DEFAULT_OUT = Path("benchmarks") / "results" / "eval"

#: The built-in synthetic logs of the ablation (see `synthetic_datasets`).
SYNTHETIC = ("drift", "tastes")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"want comma-separated integers, got {text!r}") from exc


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"want comma-separated numbers, got {text!r}") from exc
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter(f"want positive numbers, got {text!r}")
    return values


def _composition(text: str | None) -> tuple[dict[str, float | str], bool]:
    """``KEY=VALUE,...`` overrides of `models.interest.composition.CompositionSpec`.

    And whether ``half_life_s=updater`` asked the mass half-life to follow
    the tuned updater half-life.
    """
    from dataclasses import fields

    from models.interest.composition import CompositionSpec

    known = {f.name: f.type for f in fields(CompositionSpec)}
    out: dict[str, float | str] = {}
    tie = False
    for part in _names(text):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in known or not value:
            raise click.BadParameter(
                f"want KEY=VALUE with KEY one of {', '.join(known)}, got {part!r}"
            )
        if key == "half_life_s" and value == "updater":
            tie = True
            continue
        if key == "mode":  # the one setting that is a name (CompositionSpec checks it)
            out[key] = value
            continue
        try:
            out[key] = int(value) if key == "max_interests" else float(value)
        except ValueError as exc:
            raise click.BadParameter(f"{key}: not a number: {value!r}") from exc
    try:
        CompositionSpec(**out)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return out, tie


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


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
@click.option(
    "--list", "list_models", is_flag=True, help="List the registered models (or variants) and exit."
)
@click.option(
    "--ablation",
    is_flag=True,
    help="Run the ablation of the interest structure instead: the time-decay core in full "
    "and with each part switched off, on --data (if given) and the --synthetic logs. "
    "Writes OUT/ablation.json and OUT/ablation.md.",
)
@click.option(
    "--variants",
    help="With --ablation: comma-separated variants (default: all; see --ablation --list).",
)
@click.option(
    "--synthetic",
    default=",".join(SYNTHETIC),
    show_default=True,
    help="With --ablation: built-in synthetic logs, comma-separated: 'drift' (the demo "
    "workload: one taste, half the users switch), 'tastes' (two tastes at once); 'none'.",
)
@click.option(
    "--half-lives",
    default="0.01,0.05,1,30",
    show_default=True,
    help="With --ablation: updater half-lives (days) each variant tunes on validation.",
)
@click.option(
    "--composition",
    metavar="KEY=VALUE,...",
    help="With --ablation: CompositionSpec settings for every variant instead of the "
    "defaults, e.g. 'open_below=0.6,temperature=0.25' (no-multi keeps max_interests=1); "
    "'half_life_s=updater' makes the interests' mass half-life follow the tuned one.",
)
@click.option(
    "--updater",
    "updater_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --ablation: a learned model folder from `interest-stream train` (e.g. "
    ".interest-stream/train/learned-gru-seed0) to run every variant with, instead of "
    "the time-decayed rule.",
)
def eval_command(
    data: Path | None,
    models: str | None,
    seeds: str,
    train_dir: str | None,
    max_users: int | None,
    out: Path,
    list_models: bool,
    ablation: bool,
    variants: str | None,
    synthetic: str,
    half_lives: str,
    composition: str | None,
    updater_dir: Path | None,
) -> None:
    """Score next-item prediction (HR@10, NDCG@10, MRR, coverage) of each model.

    Leave-last-out per user in time order, ranking over the full catalogue.
    Writes OUT/eval.json and OUT/eval.md and prints the Markdown table.

    With --ablation: HR@10, NDCG@10, recall@50, genre diversity of the top 10
    and ms per event of each variant of the core, per dataset; the ablation is
    deterministic, the first of --seeds seeds the synthetic logs and the topic
    model.
    """
    from models.datasets import load_movielens
    from models.evaluation.baselines import TimeDecayCore
    from models.evaluation.harness import run_eval
    from models.evaluation.registry import MODELS, register
    from models.evaluation.report import markdown_table

    if ablation:
        if models or train_dir:
            raise click.UsageError("--models and --train-dir do not apply with --ablation")
        _ablation(
            data, variants, synthetic, half_lives, composition, _ints(seeds), max_users, out,
            list_models, updater_dir,
        )  # fmt: skip
        return
    ctx = click.get_current_context()
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name in ("variants", "synthetic", "half_lives", "composition", "updater_dir")
        and ctx.get_parameter_source(param.name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)} apply only with --ablation")
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


def _ablation(
    data: Path | None,
    variants: str | None,
    synthetic: str,
    half_lives: str,
    composition: str | None,
    seeds: list[int],
    max_users: int | None,
    out: Path,
    list_variants: bool,
    updater_dir: Path | None = None,
) -> None:
    from dataclasses import replace

    from models.core import CoreParams
    from models.datasets import load_movielens
    from models.evaluation.ablation import VARIANTS, AblationData, run_ablation
    from models.evaluation.baselines import ModelUnavailable, encode_catalogue
    from models.evaluation.report import ablation_findings, ablation_table

    if list_variants:
        click.echo("\n".join(f"{n}: {v.description}" for n, v in VARIANTS.items()))
        return
    names = _names(variants) or None
    unknown = [n for n in names or [] if n not in VARIANTS]
    if unknown:
        raise click.UsageError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    kinds = [] if synthetic.strip() == "none" else _names(synthetic)
    bad = [n for n in kinds if n not in SYNTHETIC]
    if bad:
        raise click.UsageError(f"unknown --synthetic {bad}; known: {', '.join(SYNTHETIC)}, none")
    if data is None and not kinds:
        raise click.UsageError("nothing to run: give --data and/or --synthetic")
    grid = _floats(half_lives)
    updater, id_prefix = None, ""
    if updater_dir is not None:
        from models.learned import LearnedUpdater
        from models.learned.artifact import ArtifactError

        try:
            updater = LearnedUpdater.load(updater_dir)
        except ArtifactError as exc:
            raise click.UsageError(f"--updater {updater_dir}: {exc}") from exc
        id_prefix = updater.artifact.manifest["config"].get("id_prefix", "m")
    defaults = CoreParams()
    overrides, tie = _composition(composition)
    base = replace(defaults, composition=replace(defaults.composition, **overrides))
    seed = seeds[0] if seeds else 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    cache = _encoder_cache()
    datasets: list[AblationData] = []
    try:
        if data is not None:
            try:
                log = load_movielens(data, max_users=max_users)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from exc
            datasets.append(
                AblationData(
                    data.resolve().name,
                    log,
                    encode_catalogue(log, cache),
                    [log.item_text(i) for i in range(log.n_items)],
                    event_type="rating",
                    description=f"MovieLens ({data.resolve().name})",
                )
            )
        datasets += synthetic_datasets(kinds, seed=seed, encoder_cache=cache)
    except ModelUnavailable as exc:
        raise click.ClickException(f"the ablation needs the ONNX encoder: {exc}") from exc
    report = run_ablation(
        datasets,
        names,
        out,
        base=base,
        half_lives_days=grid,
        tie_mass_half_life=tie,
        updater=updater,
        id_prefix=id_prefix,
        seed=seed,
        progress=lambda line: click.echo(line, err=True),
    )
    proto = report["protocol"]
    for name, entry in report["datasets"].items():
        click.echo(f"\n## {name}\n")
        click.echo(ablation_table(entry, proto["k"], proto["recall_at"]))
        for line in ablation_findings(entry, proto["k"], proto["recall_at"]):
            click.echo(f"\n{line}")
    click.echo(
        f"\nwrote {out / 'ablation.json'} and {out / 'ablation.md'} "
        f"({time.perf_counter() - started:.0f} s)",
        err=True,
    )


def synthetic_datasets(
    kinds: Sequence[str],
    *,
    seed: int = 0,
    users: int = 500,
    items_per_tag: int = 150,
    events_per_user: int = 60,
    encoder_cache: Path | None = None,
    embed_cache: Path | None = None,
) -> list[AblationData]:
    """The built-in synthetic logs of the ablation, on one seeded catalogue of tagged items.

    - ``drift``: `streams.workload.synthetic_workload`, users with one tag at a time
      (85% of their events), half of them switching tag part-way;
    - ``tastes``: `models.datasets.synthetic.two_taste_events` on the same
      items, users with two tags at once (50-70% / the rest, 10% noise).

    Items are embedded from their text with the ONNX encoder
    (`models.evaluation.baselines.encode_catalogue`); tags are the genres;
    skips are left out of the logs; every event enters as a view.
    """
    from models.datasets.synthetic import interactions_from_records, record_texts, two_taste_events
    from models.evaluation.ablation import AblationData
    from models.evaluation.baselines import encode_catalogue
    from streams.workload import synthetic_workload

    if not kinds:
        return []
    workload = synthetic_workload(
        users=users, items_per_tag=items_per_tag, events_per_user=events_per_user, seed=seed
    )
    texts = record_texts(workload.items)
    vectors = None
    out = []
    for kind in kinds:
        if kind == "drift":
            events, about = workload.events, workload.description
        elif kind == "tastes":
            events = two_taste_events(
                workload.items, users=users, events_per_user=events_per_user, seed=seed
            )
            about = (
                f"synthetic two tastes: {users} users over the same {len(workload.items)} items, "
                f"{len(events)} events (seed={seed})"
            )
        else:
            raise ValueError(f"unknown synthetic log {kind!r}; known: {SYNTHETIC}")
        log = interactions_from_records(workload.items, events)
        if vectors is None:
            vectors = encode_catalogue(log, encoder_cache, embed_cache, texts=texts)
        out.append(AblationData(f"synthetic-{kind}", log, vectors, texts, "view", about))
    return out


def _encoder_cache() -> Path | None:
    """The encoder cache folder of the settings, when one is set."""
    cache = effective_settings().encoder_cache
    return Path(cache) if cache else None
