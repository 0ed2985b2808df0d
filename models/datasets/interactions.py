"""A timestamped interaction log with dense ids, and the text of its items.

The log is what every offline consumer builds against: the MovieLens loaders
(`models.datasets.movielens`) produce one, the split
(`models.datasets.split`) divides it, training and evaluation read it, and
the demo workload publishes `item_text` as an item's text so that the
workers embed what the learned model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class Interactions:
    """A timestamped log, dense ids. Rows sorted by (user, ts, file order).

    Attributes
    ----------
    users, items
        int64 dense user / item index per row.
    ts
        float64 event time, unix seconds.
    ratings
        float32 rating per row (1.0 when the layout has none).
    user_ids, item_ids
        Dense index -> original id.
    titles, genres
        Per dense item; ``""`` and ``()`` when unknown.
    weights
        float32 signed behaviour weight per row, as the workers compute it
        (`models.behaviour.event_weight`), for logs of typed behaviours (a
        view, a like); None for rating logs, whose weights follow from the
        stars (`sequence_weights`).
    """

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    ratings: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    genres: list[tuple[str, ...]]
    weights: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_rows(self) -> int:
        return int(self.users.shape[0])

    @cached_property
    def _bounds(self) -> np.ndarray:
        # Rows are grouped by user, so user u owns rows bounds[u]:bounds[u + 1].
        return np.searchsorted(self.users, np.arange(self.n_users + 1), side="left")

    def sequences(self) -> list[np.ndarray]:
        """Per user, item indices in time order (ties in file order)."""
        b = self._bounds
        return [self.items[b[u] : b[u + 1]] for u in range(self.n_users)]

    def sequence_ts(self) -> list[np.ndarray]:
        """Per user, the timestamps matching `sequences`."""
        b = self._bounds
        return [self.ts[b[u] : b[u + 1]] for u in range(self.n_users)]

    def sequence_ratings(self) -> list[np.ndarray]:
        """Per user, the ratings matching `sequences`."""
        b = self._bounds
        return [self.ratings[b[u] : b[u + 1]] for u in range(self.n_users)]

    def sequence_weights(self) -> list[np.ndarray] | None:
        """Per user, the behaviour weights matching `sequences` (None for a rating log)."""
        if self.weights is None:
            return None
        b = self._bounds
        return [self.weights[b[u] : b[u + 1]] for u in range(self.n_users)]

    def item_text(self, i: int) -> str:
        """Title and genres of item ``i`` as one line, the text the encoder sees."""
        return item_text(self.titles[i], self.genres[i])


def item_text(title: str, genres: Sequence[str]) -> str:
    """The encoder's text of a movie; the MovieLens workload publishes the same.

    >>> item_text("Toy Story (1995)", ("Animation", "Comedy"))
    'Toy Story (1995). Genres: Animation, Comedy'
    """
    return f"{title}. Genres: {', '.join(genres)}" if genres else title


def item_texts(log: Interactions) -> list[str]:
    """Per dense item, the text the encoder sees; ``item <id>`` when it has no title or genres.

    An empty text would give every untitled item the same embedding (that of
    the empty string), so text-only models could not tell them apart.

    >>> log = Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
    ...                    np.zeros(0, np.float32), [], ["1", "2"],
    ...                    ["Alpha (1990)", ""], [("Comedy", "Drama"), ()])
    >>> item_texts(log)
    ['Alpha (1990). Genres: Comedy, Drama', 'item 2']
    """
    return [log.item_text(i) or f"item {log.item_ids[i]}" for i in range(log.n_items)]
