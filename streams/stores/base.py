"""The store protocol: batched user states and item embeddings.

Every implementation passes `tests/test_store_contract.py`. Writes of user
states are conditional: a state is written only when its version is higher
than the stored one, so versions never go backwards and a stale writer (a
zombie worker, a replayed batch) cannot overwrite newer state.
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

    def ping(self, timeout: float = 5.0) -> None:
        """Answer a trivial request within about ``timeout`` seconds, or raise.

        The readiness probe (`streams.health`) calls it every few seconds from
        its own thread while agents use the store, so it must be cheap and
        thread-safe, and it must raise (not hang) while the store is unreachable.
        """
        ...

    def close(self) -> None: ...
