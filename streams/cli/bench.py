"""``interest-stream bench``: the load benchmark (`streams.bench` has the definition)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.options import cassandra_overrides
from streams.settings import SettingsError, load_settings

#: Where ``--out`` goes by default: the checkout's results folder, beside the other benchmarks.
DEFAULT_OUT = Path("benchmarks") / "results" / "bench.json"


@click.command("bench")
@click.option("--quick", is_flag=True, help="Under a minute: 2 s steps from 200/s, 1 bisection.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="JSON result; the PNG plots go beside it.")  # fmt: skip
@click.option("--bootstrap", help="Kafka bootstrap servers; none: an embedded broker.")
@click.option("--cassandra", help="Cassandra contact points HOST[,HOST][:PORT] (store=cassandra).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a worker setting, e.g. batch_within_seconds=0.01 (repeatable).",
)
@click.option("--step-seconds", type=float, help="Length of a ramp step (10; --quick 2).")
@click.option("--start-rate", type=float, help="First offered rate, events/s (25; --quick 200).")
@click.option("--bisections", type=int, help="Bisections after the first failing step (3; 1).")
@click.option("--measure-seconds", type=float, help="Run at half the pipeline max (30; 3).")
@click.option("--p99-limit-ms", type=float, help="Sustainable p99 at most (500; --quick 1000).")
@click.option("--seed", type=int, help="Synthetic workload seed (1).")
@click.option(
    "--catalogue-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Rank against N items: the workload's 480 plus generated ones, encoded once here "
    "and preloaded into the pipeline's store (default: the workload's own).",
)
@click.option("--encoder-cache", help="ONNX export folder (default: the user cache).")
@click.option("--keep-data", is_flag=True, help="Keep the workers' folders (log, store).")
def bench(
    quick: bool,
    out: Path,
    bootstrap: str | None,
    cassandra: str | None,
    sets: tuple[str, ...],
    step_seconds: float | None,
    start_rate: float | None,
    bisections: int | None,
    measure_seconds: float | None,
    p99_limit_ms: float | None,
    seed: int | None,
    catalogue_size: int | None,
    encoder_cache: str | None,
    keep_data: bool,
) -> None:
    """Maximum sustainable rate of the pipeline and of a bare Faust pass-through.

    Open-loop load at fixed rates, a ramp per worker on the same broker and
    topic settings, then latency, lag and the time per stage at half the
    pipeline's maximum. Prints a table; writes JSON and PNG plots.
    ``--catalogue-size 100000`` measures it with a catalogue that the
    approximate index ranks.
    """
    from streams.admin import BrokerError
    from streams.bench import Plan, finite, parse_sets, plot, run_bench, table
    from streams.embedded_broker import broker_for

    try:
        overrides = parse_sets(sets)
        plan = Plan.defaults(quick, step_seconds=step_seconds, start_rate=start_rate,
                             bisections=bisections, measure_seconds=measure_seconds,
                             p99_limit_ms=p99_limit_ms, seed=seed, keep_data=keep_data,
                             catalogue_size=catalogue_size)  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        settings = load_settings(
            bootstrap_servers=bootstrap, **cassandra_overrides(cassandra), **overrides
        )
    except SettingsError as exc:  # a --set value that does not parse, or breaks a rule
        raise click.ClickException(f"--set: {exc}") from exc
    from models.encoder.artifact import find_exported

    folder = Path(encoder_cache) if encoder_cache else None
    found = find_exported(folder)  # no torch import when an export is there (the workers check)
    if found is None:
        from models.encoder import ensure_exported

        found = ensure_exported(folder)
    cache = str(found.parent)
    try:
        with broker_for(settings.bootstrap_servers) as address:
            name = (
                f"Kafka at {address}" if settings.bootstrap_servers else "embedded tansu (memory)"
            )
            click.echo(f"bench on {name}, store {settings.store}", err=True)
            result = run_bench(
                settings,
                address,
                plan,
                cache,
                broker_name=name,
                progress=lambda line: click.echo(line, err=True),
            )
    except BrokerError as exc:
        raise click.ClickException(f"{exc} (or leave out --bootstrap: an embedded broker)") from exc
    except RuntimeError as exc:  # a worker exited, or a step never drained
        raise click.ClickException(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=2))
    try:
        paths = plot(result, out)
    except ImportError as exc:  # matplotlib comes with the train extra
        raise click.ClickException(f"plots need matplotlib ({exc}); wrote {out}") from exc
    click.echo(table(result))
    click.echo(f"\nwrote {out} and {', '.join(str(p) for p in paths.values())}")
    if result["half_max"] is None:
        first = result["pipeline"]["steps"][0]
        raise click.ClickException(
            f"no pipeline step was sustainable (at {first['rate']:g}/s: "
            f"{'; '.join(first['failed'])}); try a lower --start-rate"
        )
