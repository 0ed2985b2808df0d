"""The failure policy: which errors pause a partition and which are isolated.

Two kinds of failure reach the shell, and they need opposite handling:

- **Infrastructure** (the broker or the store is unreachable, a timeout, a
  disk error): nothing is wrong with the records, so the batch must not be
  acked. The agent retries it with capped backoff and commits nothing past
  it (``streams.app._retrying``); the worker reports not-ready meanwhile.
- **Deterministic**, tied to one record or one user (a decoder bug, a state
  that cannot be decoded, an encoder error on one text, an exception in the
  core for one user): retrying would fail the same way forever and halt
  every partition the agent holds. Such a failure is isolated: the record
  goes to ``dead-letters`` (``internal_error`` with the exception type and
  message), the rest of the batch proceeds.

`is_infrastructure` draws the line by where an exception comes from:
network and OS errors, and anything raised by the Kafka, Cassandra or
SQLite client libraries. Everything else is a bug or bad data, and its
blast radius is kept to the records that trigger it.
"""

from __future__ import annotations

import sqlite3

from streams.codec import Rejected

#: Top-level packages whose exceptions mean "the engine is unwell", not "this record is bad".
_ENGINE_PACKAGES = frozenset({"cassandra", "kafka", "aiokafka"})


class InfrastructureError(RuntimeError):
    """A dependency (store, broker, encoder runtime) cannot serve any record now."""


def is_infrastructure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) means a dependency is unavailable.

    >>> is_infrastructure(ConnectionRefusedError())
    True
    >>> is_infrastructure(sqlite3.OperationalError("database is locked"))
    True
    >>> is_infrastructure(KeyError("user_id"))
    False
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, OSError | TimeoutError | InfrastructureError):
            return True
        if isinstance(current, sqlite3.OperationalError | sqlite3.InternalError):
            return True
        if type(current).__module__.split(".")[0] in _ENGINE_PACKAGES:
            return True
        current, seen = current.__cause__, seen + 1
    return False


def internal_error(exc: BaseException, where: str) -> Rejected:
    """The dead-letter reason for a record whose processing raised ``exc``."""
    return Rejected("internal_error", f"{where}: {type(exc).__name__}: {str(exc)[:300]}")
