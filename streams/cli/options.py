"""What several commands share: settings from options, ``--cassandra``, ``--data``.

A bad setting, from an option, a variable or the config file, is a usage
error (exit 2, the message names the setting), never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streams.settings import ENV_PREFIX, Settings, SettingsError, load_settings

#: Where ``--data`` is read from when the option is not given.
DATA_ENV = ENV_PREFIX + "DATA"


def effective_settings(**overrides: object) -> Settings:
    """The effective settings with ``overrides`` on top (None values ignored)."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def is_set(name: str) -> bool:
    """Whether the setting ``name`` comes from the environment (so a command keeps it)."""
    return ENV_PREFIX + name.upper() in os.environ


def cassandra_overrides(cassandra: str | None) -> dict[str, object]:
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


def data_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--data DIR`` (or ``INTEREST_STREAM_DATA``): a MovieLens folder; no default.

    A default path would point outside the project (the data is never
    copied into it), so a missing folder is an error that says what to pass.
    """
    return click.option(
        "--data",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        envvar=DATA_ENV,
        show_envvar=True,
        help="MovieLens folder: ml-100k (u.data), ml-1m/10m (ratings.dat) or "
        "ml-latest/20m/25m/32m (ratings.csv) layout.",
    )(command)


def require_data(data: Path | None) -> Path:
    """``data``, or a usage error naming the option and the variable."""
    if data is None:
        raise click.UsageError(
            f"--data is required: a MovieLens folder such as ml-100k (or set {DATA_ENV})"
        )
    return data
