"""Synthetic workloads as `Interactions` logs, and users with two tastes at once.

The demo's synthetic workload (``streams.workload.synthetic_workload``) is a
list of item records (``item_id``, ``title``, ``text``, ``tags``) and
behaviour records (``user_id``, ``item_id``, ``type``, ``ts``, ...). The
offline evaluation reads logs, so `interactions_from_records` turns those
records into one, the tags becoming the items' genres. This module reads
plain records and imports nothing from ``streams``: the dataset layer stays
below the transport.

That workload's users have one taste at a time (a primary tag, and for
some a drift to another). `two_taste_events` draws users who hold two
tastes at once, their events of both interleaved, on the same catalogue:
the case several interests per user are for (a single vector averages the
two into a direction that is neither).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.behaviour import Behaviour, event_weight
from models.datasets.interactions import Interactions, item_text

#: Behaviour types that are not an interaction the user wanted: left out of a log.
NEGATIVE_TYPES = frozenset({"skip", "dislike"})


def interactions_from_records(
    items: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    drop_types: frozenset[str] = NEGATIVE_TYPES,
) -> Interactions:
    """A log of behaviour records over item records; the items' tags are their genres.

    Items keep the records' order (dense index = position), users get dense
    indices in sorted id order, rows are sorted by (user, ts, record order)
    as the MovieLens loaders sort them. Events of a type in ``drop_types``
    are left out: a log is what users chose (a next-item target that is a
    skip would reward recommending what the user rejects). A record's
    ``rating`` is kept; without one the rating is 1.0.

    >>> items = [{"item_id": "a", "title": "A", "tags": ["x"]},
    ...          {"item_id": "b", "title": "B", "tags": ["y", "z"]}]
    >>> events = [{"user_id": "u2", "item_id": "b", "type": "view", "ts": 5.0},
    ...           {"user_id": "u1", "item_id": "a", "type": "skip", "ts": 1.0},
    ...           {"user_id": "u1", "item_id": "b", "type": "like", "ts": 2.0}]
    >>> log = interactions_from_records(items, events)
    >>> log.user_ids, log.users.tolist(), log.items.tolist(), log.genres
    (['u1', 'u2'], [0, 1], [1, 1], [('x',), ('y', 'z')])
    """
    item_ids = [str(r["item_id"]) for r in items]
    index = {item: i for i, item in enumerate(item_ids)}
    if len(index) != len(item_ids):
        raise ValueError("item records repeat an item_id")
    kept = [e for e in events if e.get("type") not in drop_types]
    unknown = sorted({str(e["item_id"]) for e in kept} - index.keys())
    if unknown:
        raise ValueError(f"events name items with no record: {unknown[:5]}")
    user_ids = sorted({str(e["user_id"]) for e in kept})
    user_index = {u: n for n, u in enumerate(user_ids)}
    users = np.array([user_index[str(e["user_id"])] for e in kept], dtype=np.int64)
    item_rows = np.array([index[str(e["item_id"])] for e in kept], dtype=np.int64)
    ts = np.array([float(e["ts"]) for e in kept], dtype=np.float64)
    ratings = np.array([float(e.get("rating") or 1.0) for e in kept], dtype=np.float32)
    weights = np.array([_weight(e) for e in kept], dtype=np.float32)
    order = np.lexsort((np.arange(len(kept)), ts, users))
    return Interactions(
        users=users[order],
        items=item_rows[order],
        ts=ts[order],
        ratings=ratings[order],
        user_ids=user_ids,
        item_ids=item_ids,
        titles=[str(r.get("title", "")) for r in items],
        genres=[tuple(str(t) for t in r.get("tags", ())) for r in items],
        weights=weights[order],
    )


def _weight(record: Mapping[str, Any]) -> float:
    """The signed weight the workers give a behaviour record (type, rating, explicit weight)."""
    rating, weight = record.get("rating"), record.get("weight")
    return event_weight(
        Behaviour("u", "i", str(record.get("type", "view")), 0.0, "e",
                  weight=None if weight is None else float(weight),
                  rating=None if rating is None else float(rating))
    )  # fmt: skip


def record_texts(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per item record, the text the workers embed: its ``text``, else title and tags.

    >>> record_texts([{"item_id": "a", "title": "A", "text": "A. Long text."},
    ...               {"item_id": "b", "title": "B", "tags": ["y"]}])
    ['A. Long text.', 'B. Genres: y']
    """
    return [
        str(r.get("text") or item_text(str(r.get("title", "")), list(r.get("tags", ()))))
        or f"item {r['item_id']}"
        for r in items
    ]


def two_taste_events(
    items: Sequence[Mapping[str, Any]],
    *,
    users: int = 100,
    events_per_user: int = 40,
    major_share: tuple[float, float] = (0.5, 0.7),
    noise: float = 0.1,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
    mean_gap_s: float = 45 * 60.0,
) -> list[dict[str, Any]]:
    """Behaviour records of users who each like two tags at once, interleaved at random.

    Each user draws two distinct tags of the items' first tags and a share
    ``p`` of the first, uniform in ``major_share``; each event is, with
    probability ``noise``, an item of some other tag, else of the first tag
    with probability ``p`` and of the second otherwise (a tag whose items
    the user has all had gives way to the other). No user gets an item
    twice. Types are ``view`` (70%), ``click`` and ``like``: all positive.
    Gaps between a user's events are ``30 s`` plus an exponential of mean
    ``mean_gap_s``. Sorted by ts (stable); seeded.

    >>> items = [{"item_id": f"{t}{n}", "tags": [t]} for t in "abc" for n in range(4)]
    >>> events = two_taste_events(items, users=2, events_per_user=5, seed=3)
    >>> len(events), sorted({e["user_id"] for e in events})
    (10, ['t000', 't001'])
    >>> len({(e["user_id"], e["item_id"]) for e in events})
    10
    """
    if not 0.0 <= noise < 1.0 or not 0.0 <= major_share[0] <= major_share[1] <= 1.0:
        raise ValueError("noise must be in [0, 1) and major_share an interval within [0, 1]")
    by_tag: dict[str, list[str]] = {}
    for r in items:
        tags = list(r.get("tags", ()))
        if tags:
            by_tag.setdefault(str(tags[0]), []).append(str(r["item_id"]))
    tags = sorted(by_tag)
    if len(tags) < 2:
        raise ValueError("two tastes need items of at least two tags")
    rng = np.random.default_rng(seed)
    types, type_p = ("view", "click", "like"), (0.7, 0.2, 0.1)
    events: list[dict[str, Any]] = []
    for u in range(users):
        user_id = f"t{u:03d}"
        first, second = (tags[i] for i in rng.choice(len(tags), size=2, replace=False))
        p = float(rng.uniform(*major_share))
        unseen = {tag: list(ids) for tag, ids in by_tag.items()}
        t = start_ts + float(rng.exponential(mean_gap_s))
        for k in range(events_per_user):
            draw = rng.random()
            if draw < noise:
                pool = [o for o in tags if o not in (first, second) and unseen[o]]
            else:
                taste = first if draw < noise + (1.0 - noise) * p else second
                other = second if taste == first else first
                pool = [taste] if unseen[taste] else [other] if unseen[other] else []
            pool = pool or [o for o in tags if unseen[o]]
            if not pool:
                break  # the user has had every item
            tag = pool[int(rng.integers(len(pool)))]
            ids = unseen[tag]
            j = int(rng.integers(len(ids)))
            ids[j], ids[-1] = ids[-1], ids[j]
            events.append(
                {
                    "user_id": user_id,
                    "item_id": ids.pop(),
                    "type": types[int(rng.choice(len(types), p=type_p))],
                    "ts": round(t, 3),
                    "event_id": f"e-{user_id}-{k:04d}",
                }
            )
            t += 30.0 + float(rng.exponential(mean_gap_s))
    events.sort(key=lambda e: e["ts"])
    return events
