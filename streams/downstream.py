"""The consumer side of `recommendation-deltas`: a materialised view of every list.

A downstream service (a cache, a search index, a UI backend) keeps each
user's current top-K. The topic is at-least-once and partitioned by user, so
a consumer sees duplicates, restatements after a worker crash, snapshots it
or another consumer asked for, and, if it started late or lost records,
deltas whose ``added``/``removed``/``reranked`` refer to a list it never
had. `RecommendationView` absorbs all of that with one rule: a user's
``version`` never goes back, so anything at or below the version the view
holds is not news. Every delta also carries the full ``top_k``, so the view
can always take it; the diff is only used to notice that something was
missed (counted as a repair).

>>> from models.core import Cause, diff
>>> from models.state import UserState
>>> from streams.codec import encode_delta
>>> def delta(version, old, new, kind="events"):
...     d = diff(old, new, UserState("u1", version=version), 0.0, Cause(kind=kind), {})
...     return encode_delta(d, None)
>>> view = RecommendationView()
>>> view.apply_bytes(delta(1, [], [("a", 0.9), ("b", 0.5)]))
'applied'
>>> view.apply_bytes(delta(1, [], [("a", 0.9), ("b", 0.5)]))  # delivered twice
'duplicate'
>>> view.apply_bytes(delta(3, [("a", 0.9), ("b", 0.5)], [("b", 0.8), ("c", 0.7)]))
'applied'
>>> view.apply_bytes(delta(2, [("a", 0.9), ("b", 0.5)], [("a", 0.9), ("d", 0.6)]))  # late
'stale'
>>> view.top_k("u1"), view.version("u1")
((('b', 0.8), ('c', 0.7)), 3)
>>> view.apply_bytes(delta(5, [("x", 0.9)], [("c", 0.9), ("x", 0.5)]))  # 4 never arrived
'repaired'
>>> view.items("u1"), {outcome: n for outcome, n in view.counts().items() if n}
(['c', 'x'], {'applied': 2, 'repaired': 1, 'duplicate': 1, 'stale': 1})

Feeding it from Kafka (manual assignment of every partition, as
`streams.tail` does: kafka-python's consumer groups get no assignment on the
embedded broker)::

    with DeltaConsumer(view, "127.0.0.1:9092", "recommendation-deltas") as feed:
        feed.catch_up(timeout=30)      # everything on the topic so far
        while running:
            feed.poll(timeout_ms=500)  # then follow it
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.codec import DeltaRecord, Rejected, decode_delta

#: What `RecommendationView.apply` did with a delta; also the counters' names.
OUTCOMES = ("applied", "repaired", "duplicate", "stale", "conflict", "rejected")


@dataclass(frozen=True)
class UserView:
    """One user's list as the view holds it: the state version it is from."""

    version: int
    top_k: tuple[tuple[str, float], ...]

    @property
    def items(self) -> list[str]:
        return [item for item, _ in self.top_k]


class RecommendationView:
    """Each user's current recommendation list, built from deltas in any order.

    `apply` returns what it did, one of :data:`OUTCOMES`:

    - ``applied``: newer than the view; an ``events``/``items`` delta's
      ``added``/``removed``/``reranked`` applied to the list the view held give
      its ``top_k`` (item order; scores are taken from ``top_k``). A newer
      ``replay`` or ``snapshot`` delta replaces the list outright: it restates
      a version whose own delta this view never got.
    - ``repaired``: newer, but the diff does not lead from the held list to
      ``top_k``: deltas were missed (a gap, a consumer that started late).
      The view takes ``top_k``, which is the full list.
    - ``duplicate``: the version the view holds, restating the same list (a
      redelivery, a ``replay`` after a worker crash, a snapshot); no change.
    - ``conflict``: the version the view holds but another list. A version
      has one list, so the view keeps what it has; never seen in a healthy
      pipeline, it is counted so a test or a dashboard can say so.
    - ``stale``: older than the view (a late redelivery); dropped.
    - ``rejected``: `apply_bytes` only, the bytes are not a delta.

    A user the view never saw holds version -1 and an empty list, so a
    version 0 snapshot of an unknown user is applied (an empty list).
    """

    def __init__(self) -> None:
        self._views: dict[str, UserView] = {}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self.last_rejection: Rejected | None = None

    def apply(self, delta: DeltaRecord) -> str:
        outcome = self._apply(delta)
        self._counts[outcome] += 1
        return outcome

    def apply_bytes(self, value: bytes | None) -> str:
        """Decode a `recommendation-deltas` value and apply it."""
        decoded = decode_delta(value)
        if isinstance(decoded, Rejected):
            self.last_rejection = decoded
            self._counts["rejected"] += 1
            return "rejected"
        return self.apply(decoded)

    def _apply(self, delta: DeltaRecord) -> str:
        held = self._views.get(delta.user_id, _NOBODY)
        new_items = [item for item, _ in delta.top_k]
        if delta.version < held.version:
            return "stale"
        if delta.version == held.version:
            return "duplicate" if new_items == held.items else "conflict"
        restates = delta.cause.kind in ("replay", "snapshot")
        outcome = "applied" if restates or _patched(held.items, delta) == new_items else "repaired"
        self._views[delta.user_id] = UserView(delta.version, delta.top_k)
        return outcome

    def view(self, user_id: str) -> UserView | None:
        return self._views.get(user_id)

    def top_k(self, user_id: str) -> tuple[tuple[str, float], ...]:
        """The user's list, best first (empty for a user never seen)."""
        return self._views.get(user_id, _NOBODY).top_k

    def items(self, user_id: str) -> list[str]:
        return self._views.get(user_id, _NOBODY).items

    def version(self, user_id: str) -> int:
        """The state version the user's list is from (-1 for a user never seen)."""
        return self._views.get(user_id, _NOBODY).version

    def users(self) -> list[str]:
        return sorted(self._views)

    def counts(self) -> dict[str, int]:
        """How many deltas had each outcome so far."""
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._views


_NOBODY = UserView(-1, ())


def _patched(items: list[str], delta: DeltaRecord) -> list[str] | None:
    """The list ``items`` becomes under the delta's diff; None if the diff does not fit it.

    The diff says which items left, which arrived at which rank and which moved;
    every other item keeps its rank. Anything inconsistent with ``items`` (an
    item removed that is not there, a rank that is taken twice) means the
    diff was made against another list.
    """
    by_rank = dict(enumerate(items))
    for item, previous in delta.removed:
        if by_rank.get(previous) != item:
            return None
        del by_rank[previous]
    for item, _, _, previous in delta.reranked:
        if by_rank.get(previous) != item:
            return None
        del by_rank[previous]
    if any(item in items for item, _, _ in delta.added):
        return None
    placed = dict(by_rank)  # items that kept their rank
    for item, _, rank, _ in delta.reranked:
        if rank in placed:
            return None
        placed[rank] = item
    for item, _, rank in delta.added:
        if rank in placed:
            return None
        placed[rank] = item
    if sorted(placed) != list(range(len(placed))):
        return None
    return [placed[rank] for rank in range(len(placed))]


class DeltaConsumer:
    """Feeds a `RecommendationView` from a deltas topic (kafka-python).

    Manual assignment of every partition of ``topic``, read from the
    beginning (``from_beginning``) or from the end; no consumer group and no
    commits: the view is rebuilt from the topic, which keeps each user's
    deltas in order on one partition. ``config`` goes to `KafkaConsumer`
    (security settings, e.g. `streams.security.kafka_security(settings)`).
    """

    def __init__(
        self,
        view: RecommendationView,
        bootstrap: str,
        topic: str,
        *,
        from_beginning: bool = True,
        **config: Any,
    ) -> None:
        self.view = view
        self.topic = topic
        self.received = 0
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            **config,
        )
        partitions = self._partitions(timeout=30.0)
        self._assigned = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(self._assigned)
        if from_beginning:
            self._consumer.seek_to_beginning(*self._assigned)
        else:
            self._consumer.seek_to_end(*self._assigned)

    def _partitions(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            found = self._consumer.partitions_for_topic(self.topic)
            if found:
                return sorted(found)
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic!r} has no partitions after {timeout}s")
            time.sleep(0.2)

    def poll(self, timeout_ms: int = 500) -> int:
        """Apply what arrived within ``timeout_ms``; returns how many records."""
        got = 0
        for batch in self._consumer.poll(timeout_ms).values():
            for record in batch:
                self.view.apply_bytes(record.value)
                got += 1
        self.received += got
        return got

    def catch_up(self, timeout: float = 60.0) -> int:
        """Apply everything up to the end offsets of now; returns how many records."""
        ends = self._consumer.end_offsets(self._assigned)
        deadline = time.monotonic() + timeout
        got = 0
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {got} records of {self.topic}, not to {ends}")
            got += self.poll(200)
        return got

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> DeltaConsumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
