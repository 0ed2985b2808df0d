"""The ``interest-stream`` command line: one click group, a module per family of commands.

- `streams.cli.pipeline`: ``worker``, ``init``, ``snapshot``, ``query``, ``redrive``,
  ``settings`` (run and operate the pipeline on Kafka and a store);
- `streams.cli.demo`: ``demo`` (the whole pipeline on a replayed stream);
- `streams.cli.bench`: ``bench`` (the load benchmark, pipeline vs a bare pass-through);
- `streams.cli.encoder`: ``models export`` (the ONNX encoder);
- `streams.cli.train`, `streams.cli.evaluate`: ``train`` and ``eval``, the
  offline commands on a MovieLens folder (``--data`` or
  ``INTEREST_STREAM_DATA``), which import no transport;
- `streams.cli.options`: settings from options, ``--cassandra``, ``--data``.

A command imports what it runs (Kafka clients, Faust, torch) inside its
body, so ``interest-stream --help`` loads none of them. ``python -m
streams.cli`` is the same group (`streams.cli.__main__`); workers are
spawned that way.
"""

from __future__ import annotations

import click

from streams.cli.bench import bench
from streams.cli.demo import demo
from streams.cli.encoder import models_group
from streams.cli.evaluate import eval_command
from streams.cli.pipeline import init, query, redrive, show_settings, snapshot, worker
from streams.cli.train import train_command
from streams.stores import StoreUnreachable


class _Main(click.Group):
    """The group; a store that does not answer is a one-line error, in every command."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StoreUnreachable as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main)
def main() -> None:
    """Streaming interest evolution: behaviours in, recommendation deltas out."""


for _command in (
    worker, init, snapshot, query, redrive, demo, models_group, show_settings, eval_command,
    train_command, bench,
):  # fmt: skip
    main.add_command(_command)
