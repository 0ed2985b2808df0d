"""A validated behaviour event, as the core sees it.

The transport (``streams.codec``) turns raw Kafka records into these values;
everything in ``models`` works on them and never on bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: How much each behaviour type moves the interest state. A skip pushes away.
TYPE_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.5,
    "like": 3.0,
    "purchase": 4.0,
    "skip": -1.0,
    "dislike": -2.0,
    "rating": 1.0,  # scaled by the rating, see `event_weight`
    "query": 3.0,  # a natural-language query: its positive phrases' total weight
}

EVENT_TYPES = frozenset(TYPE_WEIGHTS)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record came from: topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class EncodedPhrase:
    """One phrase of a query, with its vector in the catalogue's space."""

    text: str
    polarity: int  # +1 positive, -1 negative
    weight: float
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One user behaviour on one item.

    ``ts`` is event time in epoch seconds. ``weight`` is the explicit weight
    from the record, or None to derive it from ``type`` (and ``rating``).
    ``position`` is where the record was read; ``text`` the optional inline
    item text, used to embed an item the catalogue does not have yet. A
    ``query`` event has no item (``item_id`` is empty): ``text`` is the
    query and ``phrases`` its decomposition, encoded by the shell.
    """

    user_id: str
    item_id: str
    type: str
    ts: float
    event_id: str
    weight: float | None = None
    rating: float | None = None
    position: Position | None = None
    text: str | None = None
    phrases: tuple[EncodedPhrase, ...] = ()


def event_weight(event: Behaviour, weights: Mapping[str, float] = TYPE_WEIGHTS) -> float:
    """The signed strength of an event: explicit weight, else by type (``weights``).

    A rating maps 1..5 stars onto -1..+1.67 (2.5 stars is neutral), so a bad
    rating pushes the interest away from the item.

    >>> event_weight(Behaviour("u", "i", "rating", 0.0, "e", rating=4.0))
    1.0
    >>> event_weight(Behaviour("u", "i", "skip", 0.0, "e"))
    -1.0
    """
    if event.weight is not None:
        return float(event.weight)
    if event.type == "rating" and event.rating is not None:
        return weights["rating"] * (float(event.rating) - 2.5) / 1.5
    return weights[event.type]
