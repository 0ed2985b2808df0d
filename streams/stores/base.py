"""The store protocol: batched user states and item embeddings.

Every implementation passes `tests/test_store_contract.py`. Writes of user
states are conditional: a state is written only when its version is higher
than the stored one, so versions never go backwards and a stale writer (a
zombie worker, a replayed batch) cannot overwrite newer state.

Shared-model blobs (`Store.get_blob`, `Store.put_blob`) hold state learned
from the catalogue that every worker must agree on (the online topic model,
later online item factors): named byte strings, versioned 1, 2, 3 ..., each
write a compare-and-set on the version the writer read, so two workers that
update the same model from the same version cannot both win and neither
overwrites the other's update unseen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.state import UnreadableState, UserState


@dataclass(frozen=True)
class StoredItem:
    """An item embedding as stored. ``vector`` is None for a removed item."""

    item_id: str
    vector: np.ndarray | None
    title: str = ""
    tags: tuple[str, ...] = ()
    #: Fingerprint of the encoder input and encoder, to skip re-encoding.
    content_hash: str = ""


@dataclass(frozen=True)
class StoredBlob:
    """One version of a named shared-model blob.

    Attributes
    ----------
    name
        The blob's name, e.g. ``"topic_model"``.
    version
        1 for the first write, one more for each successful write after it.
    data
        The bytes written (their format is the writer's business).
    """

    name: str
    version: int
    data: bytes


def check_blob_write(name: str, data: bytes, expected_version: int) -> bytes:
    """The checks every `Store.put_blob` makes; returns ``data`` as `bytes`.

    >>> check_blob_write("topics", bytearray(b"ab"), 0)
    b'ab'
    >>> check_blob_write("topics", b"ab", -1)
    Traceback (most recent call last):
    ...
    ValueError: expected_version must be >= 0 (0 = not written yet), got -1
    """
    check_blob_name(name)
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise TypeError(f"expected_version must be an int, got {type(expected_version).__name__}")
    if expected_version < 0:
        raise ValueError(
            f"expected_version must be >= 0 (0 = not written yet), got {expected_version}"
        )
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
    return bytes(data)


def check_blob_name(name: str) -> None:
    """Refuse what is not a usable blob name (Cassandra refuses an empty key)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a blob name is a non-empty str, got {name!r}")


class Store(Protocol):
    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState | UnreadableState]:
        """States of the users that have one; missing users are absent.

        A row that does not decode comes back as an `UnreadableState`, never
        as an exception: one broken row must not stop the batch.
        """
        ...

    def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        """The stored state version of each user that has a state (a cheap read).

        The processor asks just before publishing, to hold back deltas that a
        newer state written by another worker has superseded.
        """
        ...

    def put_states(self, states: Sequence[UserState]) -> list[str]:
        """Write states whose version is above the stored one.

        Each user's write is atomic and fenced on its own; a batch of users is
        not atomic as a whole (a distributed store cannot promise that).

        Returns the user ids that were NOT written because the store already
        holds an equal or newer version.
        """
        ...

    def put_items(self, items: Sequence[StoredItem]) -> None:
        """Upsert embeddings; an item with ``vector=None`` is removed."""
        ...

    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """Live items among ``item_ids``; removed and unknown ones are absent."""
        ...

    def all_items(self) -> Iterable[StoredItem]:
        """Every live item, to load a worker's catalogue at start."""
        ...

    def items_changed_since(self, cursor: int) -> tuple[list[StoredItem], int]:
        """Items upserted or removed after ``cursor`` (0 = from the start), and the new cursor."""
        ...

    def watchers(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """For each item, the users whose pending events or top-K include it."""
        ...

    def get_blob(self, name: str) -> StoredBlob | None:
        """The latest version of the blob ``name``, or None if it was never written.

        Reads the latest committed write (on Cassandra a serial read), so its
        ``version`` is the one to pass to `put_blob` for the next update.
        """
        ...

    def put_blob(self, name: str, data: bytes, expected_version: int) -> StoredBlob | None:
        """Write ``data`` as version ``expected_version + 1`` if the stored version is
        ``expected_version`` (0: the blob was never written); compare-and-set.

        Returns the new `StoredBlob`, or None when the stored version is not
        ``expected_version`` (another writer got there first: read it with
        `get_blob`, merge or redo the update, and try again from its version).
        A refused write changes nothing. Raises on an infrastructure failure,
        including a write whose outcome the store could not settle (the
        Cassandra store's ``StoreContentionError``).

        The usual update loop, here on the embedded store:

        >>> from streams.stores.sqlite import SqliteStore
        >>> store = SqliteStore(":memory:")
        >>> store.put_blob("counter", b"1", 0)
        StoredBlob(name='counter', version=1, data=b'1')
        >>> store.put_blob("counter", b"1", 0) is None  # someone wrote version 1 already
        True
        >>> def increment(store: Store) -> StoredBlob:
        ...     while True:
        ...         seen = store.get_blob("counter")
        ...         value = int(seen.data) + 1 if seen else 1
        ...         new = store.put_blob("counter", b"%d" % value, seen.version if seen else 0)
        ...         if new is not None:
        ...             return new
        >>> increment(store)
        StoredBlob(name='counter', version=2, data=b'2')
        >>> store.close()
        """
        ...

    def ping(self, timeout: float = 5.0) -> None:
        """Answer a trivial request within about ``timeout`` seconds, or raise.

        The readiness probe (`streams.health`) calls it every few seconds from
        its own thread while agents use the store, so it must be cheap and
        thread-safe, and it must raise (not hang) while the store is unreachable.
        """
        ...

    def close(self) -> None: ...
