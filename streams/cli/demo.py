"""``interest-stream demo``: the whole pipeline on a replayed behaviour stream (`streams.demo`)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import click

from streams.cli.options import cassandra_overrides, effective_settings, is_set

#: The synthetic users act every ~45 min over a day or two: decay and window
#: on that time scale (unless set explicitly) make their shifts visible.
#: With no --max-users, a MovieLens demo replays this share of the users;
#: the learned updater trains on the others.
MOVIELENS_REPLAY_SHARE = 0.3

SYNTHETIC_SCALE = {
    "half_life_seconds": 6 * 3600.0,
    "window_events": 10,
    "window_seconds": 6 * 3600.0,
}


@click.command()
@click.option("--kafka", "bootstrap", help="Use this Kafka instead of the embedded broker.")
@click.option("--cassandra", help="Use this Cassandra HOST[,HOST][:PORT] as the state store.")
@click.option("--movielens", type=click.Path(exists=True, file_okay=False), help="ml-100k dir.")
@click.option(
    "--max-users", type=int, default=None,
    help="MovieLens: replay the first N users (default: a seeded 30%); the others train the model.",
)  # fmt: skip
@click.option("--users", type=int, default=40, show_default=True, help="Synthetic users.")
@click.option("--events-per-user", type=int, default=60, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--rate", type=float, default=400.0, show_default=True, help="Events/s; 0: unpaced.")
@click.option("--no-bad-records", is_flag=True, help="Do not mix malformed records in.")
@click.option("--data-dir", help="Keep the store here (default: a temp dir, removed after).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the summary.")
@click.option("--timeout", type=float, default=900.0, show_default=True)
@click.option(
    "--time-decay", is_flag=True,
    help="Run the time-decayed rule instead of training (or reusing) a learned updater.",
)  # fmt: skip
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
    time_decay: bool,
) -> None:
    """Run the whole pipeline on a replayed behaviour stream and print a summary."""
    from streams.admin import BrokerError
    from streams.demo import DemoError, run_demo
    from streams.demo_model import demo_updater, replay_users, split_users, synthetic_training
    from streams.workload import movielens_workload, synthetic_workload

    logging.basicConfig(level=logging.WARNING)
    temp = None if data_dir else tempfile.mkdtemp(prefix="interest-stream-demo-")
    scale = {} if movielens else {k: v for k, v in SYNTHETIC_SCALE.items() if not is_set(k)}
    # On shared engines each demo run gets its own topics and keyspace, so a
    # second run never sees the first one's events or states.
    run_id = uuid.uuid4().hex[:8]
    isolate: dict[str, object] = {}
    if bootstrap and not is_set("topic_prefix"):
        isolate["topic_prefix"] = f"demo-{run_id}-"
    if cassandra and not is_set("cassandra_keyspace"):
        isolate["cassandra_keyspace"] = f"interest_stream_demo_{run_id}"
    settings = effective_settings(
        bootstrap_servers=bootstrap, data_dir=data_dir or temp,
        **scale, **isolate, **cassandra_overrides(cassandra),
    )  # fmt: skip
    if movielens:
        full = movielens_workload(movielens)
        replay = replay_users(full, first=max_users, share=MOVIELENS_REPLAY_SHARE, seed=seed)
        workload, training = split_users(full, replay)
    else:
        workload = synthetic_workload(users=users, events_per_user=events_per_user, seed=seed)
        training = synthetic_training(seed=seed, events_per_user=events_per_user)
    if not is_set("updater") and not time_decay:
        model = demo_updater(training)
        if model is not None:
            settings = settings.replace(updater=str(model))
    try:
        summary = run_demo(settings, workload, rate=rate, bad_records=not no_bad_records,
                           timeout=timeout)  # fmt: skip
    except DemoError as exc:
        log = Path(settings.data_dir) / "worker.log"
        if log.exists():
            click.echo(log.read_text(errors="replace")[-4000:], err=True)
        raise click.ClickException(str(exc)) from exc
    except BrokerError as exc:  # --kafka names a broker that does not answer
        hint = "or leave out --kafka: the demo starts its own broker"
        raise click.ClickException(f"{exc} ({hint})") from exc
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))
    if summary["deltas_published"] == 0:
        raise click.ClickException("no deltas were published")
