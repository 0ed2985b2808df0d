"""Seeded workloads for the demo, the tests and the benchmarks.

`synthetic_workload` builds a catalogue of English item titles clustered by
tag and users whose interest shifts at known points (`Drift`);
`catalogue_items` draws a bigger catalogue of such items (up to 165,888
distinct texts);
`movielens_workload` reads the MovieLens-100K files; `bad_behaviour_records`
and `bad_item_records` are malformed Kafka records with the reason code a
validator must give them. Pure Python + numpy; the only I/O is reading the
MovieLens files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.datasets import item_text

# Per tag: subjects, verb phrases, settings (title = "<subject> <verb> <setting>")
# and detail sentences (text = "<title>. <detail>.").
_VOCAB: dict[str, tuple[tuple[str, ...], ...]] = {
    "space": (
        ("A starship crew", "A lone astronaut", "A rookie pilot", "A rogue android",
         "An orbital science team", "A mining colony"),
        ("races to escape", "discovers a strange signal near", "lands a damaged shuttle on",
         "charts a course through", "fights to survive on", "searches for alien life beyond"),
        ("a collapsing nebula", "the rings of Saturn", "a frozen moon of Jupiter",
         "an abandoned space station", "the far side of the Moon", "a distant asteroid belt"),
        ("Rockets, zero gravity and the silence of deep space",
         "A story of orbits, planets and distant galaxies",
         "Mission control loses contact as the oxygen runs low",
         "Telescopes and star maps guide the voyage across the cosmos"),
    ),
    "cooking": (
        ("A young pastry chef", "A grandmother", "A busy home cook", "A street food vendor",
         "A celebrity chef", "Two rival bakers"),
        ("perfects a secret recipe in", "bakes sourdough bread in", "cooks a spicy curry in",
         "prepares a seven-course dinner in", "rescues a burnt stew in",
         "teaches knife skills in"),
        ("a tiny Paris kitchen", "a crowded night market", "a farmhouse kitchen",
         "a busy restaurant kitchen", "a seaside cafe", "a family bakery"),
        ("Fresh herbs, garlic and olive oil sizzle in the pan",
         "Step-by-step recipes for soups, sauces and desserts",
         "The oven is hot and the dough is rising",
         "Seasonal ingredients are turned into a delicious meal"),
    ),
    "horror": (
        ("A terrified babysitter", "A family of five", "A paranormal investigator",
         "A group of teenagers", "A grieving widow", "A night-shift nurse"),
        ("hears whispers inside", "is hunted through", "uncovers a cursed diary in",
         "spends one night in", "cannot escape", "summons a demon in"),
        ("a haunted Victorian mansion", "an abandoned asylum", "a fog-covered graveyard",
         "a cabin deep in the woods", "a flooded basement", "a deserted hospital"),
        ("Ghosts, blood and screams echo through the dark",
         "A terrifying tale of possession and nightmares",
         "Something evil waits behind the locked door",
         "The candles flicker as the monster draws closer"),
    ),
    "romance": (
        ("A shy librarian", "Two former lovers", "A wedding planner", "A lonely widower",
         "A small-town florist", "A travelling violinist"),
        ("falls in love in", "finds a second chance at love in", "shares a first kiss in",
         "writes secret love letters from", "meets a charming stranger in",
         "rekindles an old romance in"),
        ("a rainy street in Venice", "a snowy mountain village", "a vineyard in Tuscany",
         "a seaside town in summer", "a crowded train station", "a cozy bookshop"),
        ("A heartwarming love story about longing and devotion",
         "Candlelit dinners, wedding bells and a broken heart healed",
         "Two hearts find each other against all odds",
         "A tender romance full of passion and hope"),
    ),
    "football": (
        ("A young striker", "An underdog team", "A veteran goalkeeper", "A new head coach",
         "A teenage midfielder", "The club captain"),
        ("scores a late winner in", "fights against relegation in", "saves a penalty in",
         "prepares for the cup final in", "makes a debut in", "leads a comeback in"),
        ("a packed stadium", "the league season", "a rainy away match",
         "the championship playoff", "the World Cup qualifiers", "a heated local derby"),
        ("Goals, penalties and the roar of the fans",
         "Tactics, training sessions and a title race",
         "The referee blows the whistle as the match goes to extra time",
         "A season of football told from the dressing room"),
    ),
    "finance": (
        ("A young stock trader", "A hedge fund manager", "A startup founder",
         "A retired accountant", "A central bank economist", "A first-time investor"),
        ("bets everything on", "analyses the risks of", "loses a fortune in",
         "builds a portfolio around", "warns about", "profits from"),
        ("a volatile stock market", "rising interest rates", "a cryptocurrency crash",
         "a wave of bank mergers", "a looming recession", "the bond market"),
        ("Money, shares and dividends on Wall Street",
         "A practical guide to saving, investing and managing debt",
         "Inflation and market crashes test every balance sheet",
         "Bankers and investors chase profit and returns"),
    ),
    "gardening": (
        ("A retired teacher", "A first-time gardener", "A community allotment group",
         "An urban beekeeper", "A rose grower", "A young farmer"),
        ("plants tomatoes in", "grows prize-winning roses in", "prunes fruit trees in",
         "builds raised vegetable beds in", "composts kitchen scraps in", "saves seeds from"),
        ("a sunny backyard garden", "a rooftop greenhouse", "an overgrown cottage garden",
         "a shady woodland plot", "a balcony herb garden", "a walled kitchen garden"),
        ("Soil, seeds and watering tips for every season",
         "Flowers bloom and vegetables ripen under the summer sun",
         "A guide to weeding, mulching and growing healthy plants",
         "Shrubs, bulbs and hedges fill a green and peaceful garden"),
    ),
    "jazz": (
        ("A young saxophonist", "A blind pianist", "A jazz trio", "An aging trumpet player",
         "A nightclub singer", "A bebop drummer"),
        ("improvises all night in", "records a legendary album in", "plays a final concert in",
         "jams with old friends in", "finds a new swing in", "performs a smoky ballad in"),
        ("a New Orleans club", "a Harlem basement bar", "a smoky Chicago lounge",
         "a late-night radio studio", "a crowded jazz festival",
         "a tiny Greenwich Village venue"),
        ("Swing rhythms, blues chords and a walking bass line",
         "Saxophone solos and improvisation under dim lights",
         "A story of bebop, big bands and jazz legends",
         "The piano and trumpet trade choruses until dawn"),
    ),
}  # fmt: skip

TAGS: tuple[str, ...] = tuple(_VOCAB)
ON_TAG_SHARE = 0.85  # share of a user's events drawn from their current tag
_ON_TYPES, _ON_P = ("view", "click", "like", "purchase"), (0.60, 0.22, 0.15, 0.03)
_OFF_TYPES, _OFF_P = ("view", "click", "skip"), (0.50, 0.15, 0.35)
MEAN_GAP_S = 45 * 60.0  # mean gap between two events of one user (plus 30 s)
SHIFT_KINDS: tuple[str, ...] = ("sudden", "gradual", "recurring")


@dataclass(frozen=True)
class Drift:
    """A known interest shift of a synthetic user."""

    user_id: str
    event_index: int  # index (within that user's own events) of the first event after the shift
    ts: float  # event time (epoch seconds) of that event
    from_tag: str
    to_tag: str
    #: "sudden"; "gradual" (the new tag's share ramps up over ``span`` events from
    #: ``event_index``); "recurring" (a move that is undone later) or "return" (the
    #: move back of a recurring shift: ``from_tag`` and ``to_tag`` swapped).
    kind: str = "sudden"
    span: int = 1  # events from the first touched by the shift to the first fully on ``to_tag``


@dataclass(frozen=True)
class Workload:
    """Values for the ``items`` and ``behaviours`` topics, plus the known drifts."""

    items: list[dict]
    events: list[dict]  # sorted by ts (stable)
    drifts: list[Drift]
    description: str


def to_json_bytes(value: dict) -> bytes:
    """Compact UTF-8 JSON with sorted keys.

    >>> to_json_bytes({"b": 1, "a": "é"})
    b'{"a":"\\xc3\\xa9","b":1}'
    """
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _titles(tag: str, n: int, rng: np.random.Generator) -> list[str]:
    subjects, verbs, settings, _ = _VOCAB[tag]
    combos = [f"{s} {v} {p}" for s in subjects for v in verbs for p in settings]
    order = rng.permutation(len(combos))
    m = len(combos)  # past m titles, repeat the sentences with ", part N" to keep them unique
    return [combos[order[k % m]] + (f", part {k // m + 1}" if k >= m else "") for k in range(n)]


def _take(pool: list[str], rng: np.random.Generator) -> str:
    """Remove and return a random element of ``pool`` (swap with the last, pop)."""
    j = int(rng.integers(len(pool)))
    pool[j], pool[-1] = pool[-1], pool[j]
    return pool.pop()


def synthetic_workload(
    *,
    users: int = 40,
    items_per_tag: int = 60,
    events_per_user: int = 60,
    drift_fraction: float = 0.5,
    seed: int = 7,
    start_ts: float = 1_700_000_000.0,
    shift_kinds: Sequence[str] | None = None,
    gradual_span: int = 20,
    user_seed: int | None = None,
) -> Workload:
    """A seeded catalogue of tagged items and users whose interest may drift.

    Each user has a primary tag; ``round(drift_fraction * users)`` of them
    switch to another tag at an event index between 40% and 70% of their
    events. About 85% of events are items of the user's current tag (while
    unseen ones remain), the rest are other tags; nobody gets an item twice.

    ``shift_kinds`` (default None: every shift is sudden, and the output is
    that of earlier versions, byte for byte) gives each drifting user a kind
    drawn uniformly from it (`SHIFT_KINDS`):

    - ``sudden``: the current tag switches at the shift;
    - ``gradual``: the new tag's share of the current tag ramps up linearly
      over ``gradual_span`` events (event ``shift + j`` is on the new tag
      with probability ``(j + 1) / gradual_span``), the old one fading out;
    - ``recurring``: a sudden move between 30% and 45% of the events, and a
      sudden move back after a stay of 20% to 30% of them (two `Drift`
      records: ``recurring``, then ``return``).

    The other users never shift. Each `Drift` records the first event the
    shift touches (index and time), its kind and span.

    ``user_seed`` (default None: users follow from ``seed``) draws the users
    and their events from a seed of their own over the same catalogue: a
    second, disjoint behaviour log for the same items, as the demo trains
    its learned updater on.

    >>> w = synthetic_workload(users=4, items_per_tag=5, events_per_user=6, seed=1)
    >>> w.description
    'synthetic: 4 users, 40 items over 8 tags, 24 events, 2 drifts (seed=1)'
    >>> w.items[0]["title"]
    'A rookie pilot searches for alien life beyond the far side of the Moon'
    >>> d = w.drifts[0]
    >>> d.user_id, d.event_index, d.ts, d.from_tag, d.to_tag
    ('u001', 2, 1700007746.57, 'romance', 'finance')
    >>> e = w.events[0]
    >>> e["user_id"], e["item_id"], e["type"], e["ts"], e["event_id"]
    ('u003', 'i0031', 'like', 1700001346.769, 'e-u003-0000')
    """
    if not 0.0 <= drift_fraction <= 1.0:
        raise ValueError(f"drift_fraction must be in [0, 1], got {drift_fraction}")
    if users < 0 or items_per_tag < 1 or events_per_user < 0:
        raise ValueError("users and events_per_user must be >= 0, items_per_tag >= 1")
    kinds = None if shift_kinds is None else tuple(shift_kinds)
    if kinds is not None and (not kinds or not set(kinds) <= set(SHIFT_KINDS)):
        raise ValueError(f"shift_kinds must be a non-empty choice of {SHIFT_KINDS}, got {kinds}")
    if gradual_span < 1:
        raise ValueError("gradual_span must be >= 1")
    rng = np.random.default_rng(seed)
    items: list[dict] = []
    by_tag: dict[str, list[str]] = {tag: [] for tag in TAGS}
    for tag in TAGS:
        details = _VOCAB[tag][3]
        for title in _titles(tag, items_per_tag, rng):
            item_id = f"i{len(items) + 1:04d}"
            detail = details[int(rng.integers(len(details)))]
            items.append({"item_id": item_id, "title": title, "text": f"{title}. {detail}.",
                          "tags": [tag]})  # fmt: skip
            by_tag[tag].append(item_id)

    if user_seed is not None:
        rng = np.random.default_rng([seed, user_seed])
    drifting = set(rng.choice(users, size=round(drift_fraction * users), replace=False).tolist())
    n = min(events_per_user, len(items))
    events: list[dict] = []
    drifts: list[Drift] = []
    for u in range(users):
        user_id = f"u{u + 1:03d}"
        primary = TAGS[int(rng.integers(len(TAGS)))]
        shift, target = n, primary
        kind, back = "sudden", n  # back: first event of the move back (recurring only)
        if u in drifting and n >= 2:
            shift = int(rng.integers(max(1, int(0.4 * n)), max(2, int(0.7 * n)) + 1))
            others = [t for t in TAGS if t != primary]
            target = others[int(rng.integers(len(others)))]
            if kinds is not None:  # extra draws only here: the default output stays as it was
                kind = kinds[int(rng.integers(len(kinds)))]
                if kind == "recurring":
                    shift = int(rng.integers(max(1, int(0.3 * n)), max(2, int(0.45 * n)) + 1))
                    stay = int(rng.integers(max(1, int(0.2 * n)), max(2, int(0.3 * n)) + 1))
                    back = shift + stay
        span = gradual_span if kind == "gradual" else 1
        unseen = {tag: list(ids) for tag, ids in by_tag.items()}
        t = start_ts + float(rng.exponential(MEAN_GAP_S))
        for k in range(n):
            if kind == "gradual" and shift <= k < shift + span:
                tag = target if rng.random() < (k - shift + 1) / span else primary
            else:
                tag = primary if k < shift or k >= back else target
            if not unseen[tag] or rng.random() >= ON_TAG_SHARE:  # off-tag (or tag used up)
                others = [o for o in TAGS if o != tag and unseen[o]] or [tag]
                pick = others[int(rng.integers(len(others)))]
            else:
                pick = tag
            item_id = _take(unseen[pick], rng)
            types, p = (_ON_TYPES, _ON_P) if pick == tag else (_OFF_TYPES, _OFF_P)
            ts = round(t, 3)
            events.append({"user_id": user_id, "item_id": item_id,
                           "type": types[int(rng.choice(len(types), p=p))], "ts": ts,
                           "event_id": f"e-{user_id}-{k:04d}"})  # fmt: skip
            if k == shift:
                drifts.append(Drift(user_id, k, ts, primary, target, kind, span))
            elif k == back:
                drifts.append(Drift(user_id, k, ts, target, primary, "return"))
            t += 30.0 + float(rng.exponential(MEAN_GAP_S))
    events.sort(key=lambda e: e["ts"])
    description = (
        f"synthetic: {users} users, {len(items)} items over {len(TAGS)} tags, "
        f"{len(events)} events, {len(drifts)} drifts (seed={seed}"
        + (f", user_seed={user_seed})" if user_seed is not None else ")")
    )
    return Workload(items, events, drifts, description)


#: When a generated catalogue item's story happens (`catalogue_items`): a fourth slot
#: of its title, shared by every tag, so a tag holds 20,736 distinct texts, not 216.
_WHEN: tuple[str, ...] = (
    "one winter", "after midnight", "during a heatwave", "on New Year's Eve", "in 1969",
    "in the year 2090", "during a thunderstorm", "on a school holiday", "at the end of the war",
    "in the spring of 1985", "over one long weekend", "on the longest day of the year",
    "during a power cut", "at the turn of the century", "in a single afternoon",
    "after a long absence", "before the first snow", "during the summer festival",
    "on a moonless night", "in the autumn of 1999", "on the eve of a wedding",
    "in the last days of summer", "during a city-wide strike", "as the harvest begins",
)  # fmt: skip


def catalogue_capacity() -> int:
    """Distinct texts `catalogue_items` draws from before it numbers repeats ("part N").

    >>> catalogue_capacity()
    165888
    """
    return sum(len(s) * len(v) * len(p) * len(_WHEN) * len(d) for s, v, p, d in _VOCAB.values())


def catalogue_items(count: int, *, seed: int = 0, prefix: str = "g") -> list[dict]:
    """``count`` generated ``items`` values: distinct, plausible, tagged texts, seeded.

    A catalogue bigger than `synthetic_workload`'s, for what grows with the
    catalogue (ranking, the approximate index, loading it): the same eight
    tags and vocabulary, with a fourth slot (when the story happens) and the
    detail sentence drawn per item, so that no two texts are equal up to
    `catalogue_capacity` items (past it, a repeat gets ", part N"). Ids are
    ``prefix`` and a 6-digit number; their texts never equal a
    `synthetic_workload` item's (those have no fourth slot).

    >>> items = catalogue_items(3, seed=1)
    >>> [i["item_id"] for i in items], items[0]["tags"]
    (['g000001', 'g000002', 'g000003'], ['finance'])
    >>> for sentence in items[0]["text"].split(". "):
    ...     print(sentence)
    A young stock trader profits from a cryptocurrency crash during a thunderstorm
    A practical guide to saving, investing and managing debt.
    >>> len({i["text"] for i in catalogue_items(20_000, seed=2)})
    20000
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    sizes = [(tag, len(s), len(v), len(p), len(d)) for tag, (s, v, p, d) in _VOCAB.items()]
    per_tag = [s * v * p * len(_WHEN) * d for _, s, v, p, d in sizes]
    capacity = sum(per_tag)
    rng = np.random.default_rng([seed, 0x6361])  # "ca": apart from the workloads' own draws
    order = rng.permutation(capacity)
    starts = np.cumsum([0, *per_tag])
    items = []
    for k in range(count):
        combo = int(order[k % capacity])
        t = int(np.searchsorted(starts, combo, side="right")) - 1
        tag, _, n_v, n_p, n_d = sizes[t]
        rest = combo - int(starts[t])
        rest, d = divmod(rest, n_d)
        rest, w = divmod(rest, len(_WHEN))
        rest, p = divmod(rest, n_p)
        s, v = divmod(rest, n_v)
        subjects, verbs, settings, details = _VOCAB[tag]
        title = f"{subjects[s]} {verbs[v]} {settings[p]} {_WHEN[w]}"
        if k >= capacity:
            title += f", part {k // capacity + 1}"
        items.append({"item_id": f"{prefix}{k + 1:06d}", "title": title,
                      "text": f"{title}. {details[d]}.", "tags": [tag]})  # fmt: skip
    return items


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"MovieLens-100K file not found: {path} "
            "(expected a folder with u.item, u.genre and u.data)"
        )
    return path


def movielens_workload(path: str | Path, *, max_users: int | None = None) -> Workload:
    """Items and rating events from the MovieLens-100K files in ``path``.

    ``max_users`` keeps only the users with the smallest ids (all items stay).
    """
    folder = Path(path)
    genre_file, item_file, data_file = (_need(folder, n) for n in ("u.genre", "u.item", "u.data"))
    genres: dict[int, str] = {}
    for line in genre_file.read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, index = line.rsplit("|", 1)
            genres[int(index)] = name
    names = [genres[i] for i in range(len(genres))]

    items: list[dict] = []
    for line in item_file.read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        flags = parts[-len(names) :]
        title = "|".join(parts[1 : len(parts) - len(names) - 3])
        flagged = [g for g, f in zip(names, flags, strict=True) if f.strip() == "1"]
        tags = [g for g in flagged if g != "unknown"] or flagged
        text = item_text(title, flagged)  # what the learned model was trained on
        items.append({"item_id": f"m{parts[0]}", "title": title, "text": text, "tags": tags})

    rows = [line.split("\t") for line in data_file.read_text(encoding="latin-1").splitlines()]
    rows = [r for r in rows if len(r) == 4]
    if max_users is not None:
        keep = set(sorted({int(r[0]) for r in rows})[:max_users])
        rows = [r for r in rows if int(r[0]) in keep]
    events = [
        {"user_id": f"u{u}", "item_id": f"m{i}", "type": "rating", "ts": float(ts),
         "event_id": f"ml-{u}-{i}", "rating": float(rating)}
        for u, i, rating, ts in rows
    ]  # fmt: skip
    events.sort(key=lambda e: e["ts"])
    n_users = len({e["user_id"] for e in events})
    description = f"movielens-100k: {n_users} users, {len(items)} items, {len(events)} ratings"
    return Workload(items, events, [], description)


_DROP = object()  # marks a field to remove in the bad-record builders
_NAN_MARK = "@nan@"  # a placeholder replaced by raw JSON (NaN, huge numbers) after dumping
_TS = 1_700_000_000.0
_YEAR_2200 = 7_258_118_400.0  # 2200-01-01T00:00:00Z
_BIG_TEXT = "lorem ipsum " * (2 * 1024 * 1024 // 12 + 1)  # a little over 2 MiB


def _json_with(base: dict, changes: dict) -> bytes:
    """``base`` updated with ``changes`` (a `_DROP` value removes the field), as JSON bytes."""
    return to_json_bytes({k: v for k, v in {**base, **changes}.items() if v is not _DROP})


def bad_behaviour_records() -> list[tuple[str, bytes | None, bytes, str]]:
    """Malformed ``behaviours`` records: (name, key, value, expected reason code).

    Each record has exactly one defect; its other fields are valid.
    """
    key = b"bad-user"

    def ev(name: str, **changes: object) -> bytes:
        base = {"user_id": "bad-user", "item_id": "i0001", "type": "view", "ts": _TS,
                "event_id": f"bad-{name}"}  # fmt: skip
        return _json_with(base, changes)

    valid = ev("not_an_object")
    return [
        ("invalid_json", key, ev("invalid_json")[:-1], "invalid_json"),  # no closing brace
        ("not_an_object", key, b"[" + valid + b"]", "wrong_type"),
        ("ts_is_list", key, ev("ts_is_list", ts=[_TS]), "wrong_type"),
        ("user_id_is_number", key, ev("user_id_is_number", user_id=42), "wrong_type"),
        ("missing_user_id", key, ev("missing_user_id", user_id=_DROP), "missing_field"),
        ("missing_item_id", key, ev("missing_item_id", item_id=_DROP), "missing_field"),
        ("unknown_type", key, ev("unknown_type", type="teleport"), "unknown_type"),
        ("ts_future", key, ev("ts_future", ts=_YEAR_2200), "ts_future"),
        ("ts_before_epoch", key, ev("ts_before_epoch", ts=-86_400.0), "ts_before_epoch"),
        ("text_too_large", key, ev("text_too_large", text=_BIG_TEXT), "too_large"),
        ("non_utf8", key, ev("non_utf8", user_id="bad-user-@@").replace(b"@@", b"\xff\xfe"),
         "invalid_json"),
        # Valid JSON, under the size limit and shaped like a behaviour, each of
        # which once made decoding raise (and halted the worker) or overflowed
        # a user's interest vector.
        ("ts_huge_integer", key, ev("ts_huge_integer", ts=10**400), "out_of_range"),
        ("weight_huge_integer", key, ev("weight_huge_integer", weight=-(10**400)),
         "out_of_range"),
        ("weight_extreme", key, ev("weight_extreme", weight=1e300), "out_of_range"),
        ("rating_extreme", key, ev("rating_extreme", type="rating", rating=1e308),
         "out_of_range"),
        ("weight_nan", key, ev("weight_nan", weight=_NAN_MARK).replace(b'"@nan@"', b"NaN"),
         "invalid_json"),
        ("integer_of_5000_digits", key,
         ev("integer_of_5000_digits", weight=_NAN_MARK).replace(b'"@nan@"', b"9" * 5000),
         "out_of_range"),
        ("deeply_nested", key,
         ev("deeply_nested", extra=_NAN_MARK).replace(b'"@nan@"', b"[" * 5000 + b"]" * 5000),
         "invalid_json"),
        ("lone_surrogate_user_id", b"bad-user\\ud800",
         ev("lone_surrogate_user_id", user_id="bad-user@").replace(b"@", b"\\ud800"),
         "invalid_json"),
        ("iso_ts_year_1", key, ev("iso_ts_year_1", ts="0001-01-01T00:00:00+14:00"),
         "ts_before_epoch"),
        ("event_id_too_long", key, ev("event_id_too_long", event_id="e" * 300), "wrong_type"),
    ]  # fmt: skip


def bad_item_records() -> list[tuple[str, bytes | None, bytes, str]]:
    """Malformed ``items`` records: (name, key, value, expected reason code)."""

    def item(**changes: object) -> bytes:
        base = {"item_id": "bad-item", "title": "A starship crew races home", "tags": ["space"]}
        return _json_with(base, changes)

    key = b"bad-item"
    return [
        ("invalid_json", key, item()[:-1], "invalid_json"),  # no closing brace
        ("missing_item_id", None, item(item_id=_DROP), "missing_field"),
        ("title_not_string", key, item(title=42), "wrong_type"),
        ("tags_not_strings", key, item(tags=["space", 7]), "wrong_type"),
        ("text_too_large", key, item(text=_BIG_TEXT), "too_large"),
        ("title_lone_surrogate", key, item(title="Star@").replace(b"@", b"\\udfff"),
         "invalid_json"),
        ("tag_lone_surrogate", key, item(tags=["sp@ce"]).replace(b"@", b"\\ud83d"),
         "invalid_json"),
        ("deeply_nested", key,
         item(extra=_NAN_MARK).replace(b'"@nan@"', b"{\"a\":" * 3000 + b"1" + b"}" * 3000),
         "invalid_json"),
    ]  # fmt: skip
