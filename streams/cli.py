"""The `interest-stream` command line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import click

from streams.settings import ENV_PREFIX, Settings, SettingsError, load_settings


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


SYNTHETIC_SCALE = {
    "half_life_seconds": 6 * 3600.0,
    "window_events": 10,
    "window_seconds": 6 * 3600.0,
}


def _is_set(name: str) -> bool:
    return ENV_PREFIX + name.upper() in os.environ


@click.group()
def main() -> None:
    """Streaming interest evolution: behaviours in, recommendation deltas out."""


def _cassandra_overrides(cassandra: str | None) -> dict[str, object]:
    """``--cassandra HOST[,HOST...][:PORT]`` as settings overrides."""
    if not cassandra:
        return {}
    hosts, _, port = cassandra.rpartition(":") if ":" in cassandra else (cassandra, "", "")
    overrides: dict[str, object] = {"store": "cassandra", "cassandra_contact_points": hosts}
    if port:
        if not port.isdigit():
            raise click.UsageError(f"--cassandra: bad port in {cassandra!r}")
        overrides["cassandra_port"] = int(port)
    return overrides


@main.command()
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
    from streams.broker import broker_for
    from streams.worker import run_worker

    settings = _settings(
        bootstrap_servers=bootstrap, roles=roles, data_dir=data_dir,
        **_cassandra_overrides(cassandra),
    )  # fmt: skip
    with broker_for(settings.bootstrap_servers, log_dir=settings.data_dir) as address:
        if not settings.bootstrap_servers:
            click.echo(f"embedded broker on {address}", err=True)
        run_worker(settings, address)


@main.command("init")
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option("--cassandra", help="Cassandra contact points HOST[,HOST][:PORT] (store=cassandra).")
def init(bootstrap: str | None, cassandra: str | None) -> None:
    """Create the topics and the store's schema on configured engines, then exit.

    Idempotent: existing topics are checked (partition counts), existing
    tables kept. Deployments run it once before the workers.
    """
    from streams.broker import ensure_topics, kafka_security
    from streams.worker import open_store

    settings = _settings(bootstrap_servers=bootstrap, **_cassandra_overrides(cassandra))
    if not settings.bootstrap_servers:
        raise click.UsageError("init needs --bootstrap or INTEREST_STREAM_BOOTSTRAP_SERVERS")
    created = ensure_topics(settings.bootstrap_servers, settings.topics, **kafka_security(settings))
    click.echo(f"topics: created {created or 'none'}; all {len(settings.topics.specs())} present")
    store = open_store(settings)
    store.close()
    click.echo(f"store {settings.store}: schema ready")


@main.command()
@click.argument("users", nargs=-1, required=True)
@click.option("--bootstrap", help="Kafka bootstrap servers (required here).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def snapshot(users: tuple[str, ...], bootstrap: str | None, timeout: float) -> None:
    """Print USERS' current recommendations, asked of the running workers.

    One JSON line per user: a `snapshot` delta (version, full top_k,
    interest summary), also published on the deltas topic for every consumer.
    """
    from kafka.errors import KafkaError

    from streams.broker import kafka_security
    from streams.snapshot import request_snapshots

    settings = _settings(bootstrap_servers=bootstrap)
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


@main.command()
@click.option("--kafka", "bootstrap", help="Use this Kafka instead of the embedded broker.")
@click.option("--cassandra", help="Use this Cassandra HOST[,HOST][:PORT] as the state store.")
@click.option("--movielens", type=click.Path(exists=True, file_okay=False), help="ml-100k dir.")
@click.option("--max-users", type=int, default=None, help="MovieLens: first N users only.")
@click.option("--users", type=int, default=40, show_default=True, help="Synthetic users.")
@click.option("--events-per-user", type=int, default=60, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--rate", type=float, default=400.0, show_default=True, help="Events/s; 0: unpaced.")
@click.option("--no-bad-records", is_flag=True, help="Do not mix malformed records in.")
@click.option("--data-dir", help="Keep the store here (default: a temp dir, removed after).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the summary.")
@click.option("--timeout", type=float, default=900.0, show_default=True)
def demo(
    bootstrap: str | None,
    cassandra: str | None,
    movielens: str | None,
    max_users: int | None,
    users: int,
    events_per_user: int,
    seed: int,
    rate: float,
    no_bad_records: bool,
    data_dir: str | None,
    json_path: str | None,
    timeout: float,
) -> None:
    """Run the whole pipeline on a replayed behaviour stream and print a summary."""
    from streams.demo import DemoError, run_demo
    from streams.workload import movielens_workload, synthetic_workload

    logging.basicConfig(level=logging.WARNING)
    temp = None if data_dir else tempfile.mkdtemp(prefix="interest-stream-demo-")
    # The synthetic users act every ~45 min over a day or two: decay and window
    # on that time scale (unless set explicitly) make their shifts visible.
    scale = {} if movielens else {k: v for k, v in SYNTHETIC_SCALE.items() if not _is_set(k)}
    # On shared engines each demo run gets its own topics and keyspace, so a
    # second run never sees the first one's events or states.
    run_id = uuid.uuid4().hex[:8]
    isolate: dict[str, object] = {}
    if bootstrap and not _is_set("topic_prefix"):
        isolate["topic_prefix"] = f"demo-{run_id}-"
    if cassandra and not _is_set("cassandra_keyspace"):
        isolate["cassandra_keyspace"] = f"interest_stream_demo_{run_id}"
    settings = _settings(
        bootstrap_servers=bootstrap, data_dir=data_dir or temp,
        **scale, **isolate, **_cassandra_overrides(cassandra),
    )  # fmt: skip
    if movielens:
        workload = movielens_workload(movielens, max_users=max_users)
    else:
        workload = synthetic_workload(users=users, events_per_user=events_per_user, seed=seed)
    try:
        summary = run_demo(settings, workload, rate=rate, bad_records=not no_bad_records,
                           timeout=timeout)  # fmt: skip
    except DemoError as exc:
        log = Path(settings.data_dir) / "worker.log"
        if log.exists():
            click.echo(log.read_text(errors="replace")[-4000:], err=True)
        raise click.ClickException(str(exc)) from exc
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))
    if summary["deltas_published"] == 0:
        raise click.ClickException("no deltas were published")


@main.group()
def models() -> None:
    """Model artefacts: the ONNX encoder."""


@models.command("export")
@click.option("--out", type=click.Path(file_okay=False), help="Cache folder of the export.")
@click.option("--force", is_flag=True, help="Export again even if a current export exists.")
def export(out: str | None, force: bool) -> None:
    """Export all-MiniLM-L6-v2 to ONNX (needs the `train` extra), cached."""
    from models.encoder import ensure_exported

    settings = _settings()
    cache = Path(out or settings.encoder_cache) if (out or settings.encoder_cache) else None
    if force and cache is not None and cache.exists():
        shutil.rmtree(cache)
    artifact = ensure_exported(cache)
    click.echo(str(artifact))


@main.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    click.echo(repr(_settings()))


from streams.eval_cli import eval_command  # noqa: E402

main.add_command(eval_command)

from streams.train_cli import train_command  # noqa: E402

main.add_command(train_command)


if __name__ == "__main__":
    sys.exit(main())
