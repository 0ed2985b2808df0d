"""Commands that run and operate the pipeline: worker, init, snapshot, query, redrive, settings.

Each imports its Kafka, Faust and store modules inside the command, so
``interest-stream --help`` and the offline commands load none of them.
"""

from __future__ import annotations

import json

import click

from streams.cli.options import cassandra_overrides, effective_settings


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers; none: start the embedded broker.")
@click.option("--cassandra", help="Cassandra contact points HOST[,HOST][:PORT] (store=cassandra).")
@click.option("--roles", help="Agents to run: behaviours, items, or both (default).")
@click.option("--data-dir", help="Folder of the embedded store.")
def worker(
    bootstrap: str | None, cassandra: str | None, roles: str | None, data_dir: str | None
) -> None:
    """Run a Faust worker against the configured (or an embedded) broker.

    Every setting can also come from INTEREST_STREAM_* variables or the TOML
    file named by INTEREST_STREAM_CONFIG (see `interest-stream settings`).
    """
    from streams.admin import BrokerError
    from streams.embedded_broker import broker_for
    from streams.worker import run_worker

    settings = effective_settings(
        bootstrap_servers=bootstrap, roles=roles, data_dir=data_dir,
        **cassandra_overrides(cassandra),
    )  # fmt: skip
    try:
        with broker_for(settings.bootstrap_servers, log_dir=settings.data_dir) as address:
            if not settings.bootstrap_servers:
                click.echo(f"embedded broker on {address}", err=True)
            run_worker(settings, address)
    except BrokerError as exc:  # --bootstrap names a broker that does not answer
        hint = "or leave out --bootstrap: the worker starts an embedded broker"
        raise click.ClickException(f"{exc} ({hint})") from exc


@click.command("init")
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option("--cassandra", help="Cassandra contact points HOST[,HOST][:PORT] (store=cassandra).")
def init(bootstrap: str | None, cassandra: str | None) -> None:
    """Create the topics and the store's schema on configured engines, then exit.

    Idempotent: existing topics are checked (partition counts), existing
    tables kept. Deployments run it once before the workers.
    """
    from streams.admin import ensure_topics
    from streams.security import kafka_security
    from streams.worker import open_store

    settings = effective_settings(bootstrap_servers=bootstrap, **cassandra_overrides(cassandra))
    if not settings.bootstrap_servers:
        raise click.UsageError("init needs --bootstrap or INTEREST_STREAM_BOOTSTRAP_SERVERS")
    created = ensure_topics(settings.bootstrap_servers, settings.topics, **kafka_security(settings))
    click.echo(f"topics: created {created or 'none'}; all {len(settings.topics.specs())} present")
    store = open_store(settings)
    store.close()
    click.echo(f"store {settings.store}: schema ready")


@click.command()
@click.argument("users", nargs=-1, required=True)
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def snapshot(users: tuple[str, ...], bootstrap: str | None, timeout: float) -> None:
    """Print USERS' current recommendations, asked of the running workers.

    One JSON line per user: a `snapshot` delta (version, full top_k,
    interest summary), also published on the deltas topic for every consumer.
    """
    from kafka.errors import KafkaError

    from streams.security import kafka_security
    from streams.snapshot import request_snapshots

    settings = effective_settings(bootstrap_servers=bootstrap)
    if not settings.bootstrap_servers:
        raise click.UsageError("snapshot needs --bootstrap or INTEREST_STREAM_BOOTSTRAP_SERVERS")
    try:
        answers = request_snapshots(
            settings, settings.bootstrap_servers, users, timeout=timeout,
            **kafka_security(settings),
        )  # fmt: skip
    except (TimeoutError, LookupError, KafkaError) as exc:
        raise click.ClickException(str(exc)) from exc
    for user in dict.fromkeys(users):
        click.echo(json.dumps(answers[user]))


@click.command()
@click.argument("user")
@click.argument("text")
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def query(user: str, text: str, bootstrap: str | None, timeout: float) -> None:
    """Publish a natural-language query for USER and print their resulting list.

    TEXT is decomposed by the worker into interest phrases with a polarity
    ("funny space adventures, nothing scary"); positive phrases join the
    user's interests, negative ones push matching items down. Prints the
    phrases, then one line per recommended item, then the delta as JSON.
    """
    from kafka.errors import KafkaError

    from streams.security import kafka_security
    from streams.snapshot import send_query

    settings = effective_settings(bootstrap_servers=bootstrap)
    if not settings.bootstrap_servers:
        raise click.UsageError("query needs --bootstrap or INTEREST_STREAM_BOOTSTRAP_SERVERS")
    try:
        delta = send_query(
            settings, settings.bootstrap_servers, user, text, timeout=timeout,
            **kafka_security(settings),
        )  # fmt: skip
    except (TimeoutError, LookupError, ValueError, KafkaError) as exc:
        raise click.ClickException(str(exc)) from exc
    phrases = (delta.get("interest") or {}).get("query", {}).get("phrases", [])
    for p in phrases:
        click.echo(f"phrase  {p['polarity']:<8} {p['weight']:.2f}  {p['text']}")
    for rank, item in enumerate(delta.get("top_k", []), 1):
        click.echo(f"{rank:>4}. {item['item_id']}  {item['score']:.3f}")
    click.echo(json.dumps(delta))


@click.command()
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    required=True,
    help="Dead-letter reason to re-drive (repeatable), e.g. state_unreadable.",
)
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option(
    "--from-offset",
    type=int,
    default=0,
    show_default=True,
    help="Dead-letters offset to start at (a previous run prints where it stopped).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be re-driven; publish nothing.")
def redrive(
    reasons: tuple[str, ...], bootstrap: str | None, from_offset: int, dry_run: bool
) -> None:
    """Publish dead letters of the given reasons back to their source topics.

    For records set aside for a reason since fixed (an unreadable state made
    readable, a bug fixed). Safe to repeat: an event id is applied once.
    """
    from kafka.errors import KafkaError

    from streams.redrive import redrive as run_redrive
    from streams.security import kafka_security

    settings = effective_settings(bootstrap_servers=bootstrap)
    if not settings.bootstrap_servers:
        raise click.UsageError("redrive needs --bootstrap or INTEREST_STREAM_BOOTSTRAP_SERVERS")
    try:
        report = run_redrive(
            settings.bootstrap_servers, settings.topics, set(reasons), from_offset=from_offset,
            dry_run=dry_run, **kafka_security(settings),
        )  # fmt: skip
    except (TimeoutError, KafkaError) as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would re-drive" if dry_run else "re-drove"
    click.echo(
        f"read {report.read} dead letters; {verb} {report.published or 'none'}; "
        f"left {report.skipped or 'none'}; next --from-offset {report.next_offset}"
    )


@click.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    click.echo(repr(effective_settings()))
