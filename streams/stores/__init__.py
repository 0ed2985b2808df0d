"""State stores behind one protocol (`streams.stores.base.Store`).

`BACKENDS` is the one registration of a backend: a name (the ``store``
setting) and where its class lives. The class is imported only when a worker
opens it, so the embedded default never loads the Cassandra driver. A new
backend is its module, a line here (its class has a ``from_settings``
constructor) and a variant in `tests/test_store_contract.py`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings
    from streams.stores.base import Store


class StoreUnreachable(ConnectionError):
    """The store named by the settings does not answer when it is opened.

    The message says where the store was looked for and what to do; the
    command line prints it as one line instead of a driver traceback.
    """


#: Setting value -> "module:Class".
BACKENDS: dict[str, str] = {
    "sqlite": "streams.stores.sqlite:SqliteStore",
    "cassandra": "streams.stores.cassandra:CassandraStore",
}


def open_store(settings: Settings) -> Store:
    """The configured store, connected (and its schema created if missing)."""
    try:
        module, name = BACKENDS[settings.store].split(":")
    except KeyError:
        raise ValueError(f"unknown store {settings.store!r} (known: {sorted(BACKENDS)})") from None
    return getattr(import_module(module), name).from_settings(settings)
