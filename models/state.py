"""A user's interest state: a typed, versioned value with explicit bytes.

Layout of `encode_state` (little-endian)::

    b"ISUS" | u16 schema version | u32 header length | header (UTF-8 JSON)
            | vectors (float32), in the order the header lists them:
              each interest's hidden vector, the long-term profile, the
              last query's negative phrases, then its positive phrases

No pickle: every field is named in the JSON header. A state written by an
older schema is read through `MIGRATIONS`, one step per version, so bumping
the schema is one function: write ``_vN_to_vN+1(header) -> header``, register
it, and raise `SCHEMA_VERSION`. A state from a newer schema than this code
knows is a `StateDecodeError` (the store hands it back as `UnreadableState`).

Schema history:

1. the first layout.
2. pending events carry their source position (``[topic, partition,
   offset]`` or null), so a pending event pushed out of a full queue is
   dead-lettered with where it came from; the time-decay updater is named
   ``time-decay`` (its half-life is a setting, not part of the state).
3. interest structure: several interests with weights (``interests``, the
   one vector of schema 2 becomes the only interest), a long-term profile,
   the user's topic masses, the gap before the latest event, and the last
   natural-language query (its phrases and negative vectors).
4. the interest-shift detector's state, its flag count and latest flag.
5. the last query keeps its positive phrases' vectors and its event
   weight, so a rebase (another updater) re-opens the interests it opened.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.behaviour import Position
from models.interest.composition import Interest
from models.interest.shift import DetectorState
from models.ranking import Ranked

SCHEMA_VERSION = 5
_MAGIC = b"ISUS"
_PREFIX = struct.Struct("<4sHI")


class StateDecodeError(ValueError):
    """Stored bytes are not a user state this code can read."""


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """One event kept in the sliding window."""

    item_id: str
    type: str
    ts: float
    weight: float


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event whose item has no embedding yet; applied once it has one."""

    item_id: str
    type: str
    ts: float
    weight: float
    event_id: str
    #: Where the event was read (None for events parked by schema 1).
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class QueryPhrase:
    """One phrase of a natural-language query, as applied (see `models.interest.query`)."""

    text: str
    polarity: int  # +1 positive, -1 negative
    weight: float


@dataclass(frozen=True)
class LastQuery:
    """The user's latest natural-language query: its phrases, and their vectors.

    Negative phrases push matching items down until the next query replaces
    them; ``negatives`` holds their vectors in the catalogue's space, in the
    order of the negative ``phrases``. ``positives`` holds the positive
    phrases' vectors as encoded, in the order of the positive ``phrases``,
    and ``weight`` the query event's weight: the interests the query opened
    live in the updater's space, so when the updater changes
    (`models.core.rebase`) they are opened again from these. A query read
    from schema 4 has no ``positives`` (nothing to re-open).
    """

    text: str
    ts: float
    phrases: tuple[QueryPhrase, ...]
    negatives: tuple[np.ndarray, ...] = ()
    positives: tuple[np.ndarray, ...] = ()
    weight: float = 1.0

    def negative_weights(self) -> list[float]:
        return [p.weight for p in self.phrases if p.polarity < 0]

    def positive_phrases(self) -> list[tuple[QueryPhrase, np.ndarray]]:
        """Each positive phrase with its vector (none for a query from schema 4)."""
        mine = [p for p in self.phrases if p.polarity > 0]
        return list(zip(mine, self.positives, strict=False))


@dataclass(frozen=True)
class UserState:
    """Everything the core keeps about one user.

    Attributes
    ----------
    version
        Bumped by every applied batch; never goes backwards in a store.
    interests
        The user's interests, each an updater hidden vector with a weight
        (`models.interest.composition`); the mid-term level.
    updater
        Name of the updater that produced the interests' hidden vectors.
    long_term, long_term_ts
        The slowly moving profile in the catalogue's space (`models.interest.levels`).
    topics
        The user's topic masses (topic id -> mass), updated per event.
    last_event_ts, gap_s
        The latest event time applied, and the gap before it (None: no gap yet).
    query
        The latest natural-language query, or None.
    window
        Recent events, sorted by event time (see `models.window`).
    consumed
        Items the user already had; never recommended.
    recent_event_ids
        Last applied event ids, oldest first, to apply duplicates once.
    offsets
        Last applied offset per ``topic[partition]``; replays are skipped.
    pending
        Events waiting for their item's embedding.
    top_k
        The last published recommendation list, best first.
    shift_detector
        The shift detector's state (`models.interest.shift.DetectorState.to_tuple`),
        or None before its first observation.
    shifts, last_shift_ts
        Interest shifts flagged so far, and the event time of the latest.
    """

    user_id: str
    version: int = 0
    interests: tuple[Interest, ...] = ()
    updater: str = ""
    long_term: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    long_term_ts: float | None = None
    topics: dict[int, float] = field(default_factory=dict)
    last_event_ts: float | None = None
    gap_s: float | None = None
    query: LastQuery | None = None
    window: tuple[WindowEntry, ...] = ()
    consumed: frozenset[str] = frozenset()
    recent_event_ids: tuple[str, ...] = ()
    offsets: dict[str, int] = field(default_factory=dict)
    pending: tuple[PendingEvent, ...] = ()
    top_k: tuple[Ranked, ...] = ()
    events_applied: int = 0
    shift_detector: tuple[float, ...] | None = None
    shifts: int = 0
    last_shift_ts: float | None = None

    def watched_items(self) -> set[str]:
        """Items whose change concerns this user: pending or recommended."""
        return {p.item_id for p in self.pending} | {item for item, _ in self.top_k}

    def vectors(self) -> list[np.ndarray]:
        """Every vector of the state, in the order `encode_state` writes them."""
        query = list(self.query.negatives) + list(self.query.positives) if self.query else []
        return [*(i.hidden for i in self.interests), self.long_term, *query]


@dataclass(frozen=True, slots=True)
class UnreadableState:
    """A stored state this code cannot decode (corrupt, or a newer schema).

    Stores hand it back in place of the state, so one broken row never stops
    a batch. The processor never overwrites it and applies no event to it:
    the user's events go to ``dead-letters`` as ``state_unreadable`` with
    their original bytes, to be re-driven once the state is readable again
    (a fixed or newer worker, or the row removed).
    """

    user_id: str
    error: str


def read_state(user_id: str, data: bytes) -> UserState | UnreadableState:
    """`decode_state`, with a broken row as an `UnreadableState` instead of an error."""
    try:
        state = decode_state(data)
    except StateDecodeError as exc:
        return UnreadableState(user_id, str(exc))
    if state.user_id != user_id:
        return UnreadableState(user_id, f"stored state belongs to user {state.user_id!r}")
    return state


def encode_state(state: UserState) -> bytes:
    query = state.query
    header = {
        "user_id": state.user_id,
        "version": state.version,
        "interests": [
            {
                "dim": int(i.hidden.shape[0]),
                "ts": i.hidden_ts,
                "mass": i.mass,
                "mass_ts": i.mass_ts,
                "events": i.events,
            }
            for i in state.interests
        ],
        "updater": state.updater,
        "long_term": {"dim": int(state.long_term.shape[0]), "ts": state.long_term_ts},
        "topics": sorted([int(t), float(m)] for t, m in state.topics.items()),
        "last_event_ts": state.last_event_ts,
        "gap_s": state.gap_s,
        "query": None
        if query is None
        else {
            "text": query.text,
            "ts": query.ts,
            "phrases": [[p.text, p.polarity, p.weight] for p in query.phrases],
            "negatives": [int(v.shape[0]) for v in query.negatives],
            "positives": [int(v.shape[0]) for v in query.positives],
            "weight": query.weight,
        },
        "window": [[w.item_id, w.type, w.ts, w.weight] for w in state.window],
        "consumed": sorted(state.consumed),
        "recent_event_ids": list(state.recent_event_ids),
        "offsets": state.offsets,
        "pending": [
            [p.item_id, p.type, p.ts, p.weight, p.event_id, _position(p.position)]
            for p in state.pending
        ],
        "top_k": [[item, score] for item, score in state.top_k],
        "events_applied": state.events_applied,
        "shift": {
            "detector": None if state.shift_detector is None else list(state.shift_detector),
            "flags": state.shifts,
            "last_ts": state.last_shift_ts,
        },
    }
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    vectors = b"".join(np.ascontiguousarray(v, dtype="<f4").tobytes() for v in state.vectors())
    return _PREFIX.pack(_MAGIC, SCHEMA_VERSION, len(raw)) + raw + vectors


def decode_state(data: bytes) -> UserState:
    if len(data) < _PREFIX.size:
        raise StateDecodeError("state bytes too short")
    magic, version, size = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        raise StateDecodeError("not a user state (bad magic)")
    if version > SCHEMA_VERSION or version not in range(1, SCHEMA_VERSION + 1):
        raise StateDecodeError(
            f"unknown state schema version {version} (this code reads 1..{SCHEMA_VERSION})"
        )
    try:
        h = json.loads(data[_PREFIX.size : _PREFIX.size + size])
        for step in range(version, SCHEMA_VERSION):
            h = MIGRATIONS[step](h)
        payload = np.frombuffer(data[_PREFIX.size + size :], dtype="<f4").astype(np.float32)
        q = h["query"]
        dims = [i["dim"] for i in h["interests"]] + [h["long_term"]["dim"]]
        dims += q["negatives"] + q["positives"] if q else []
        if any(not isinstance(d, int) or d < 0 for d in dims) or sum(dims) != len(payload):
            raise StateDecodeError("vector lengths do not match the header")
        cuts = np.cumsum([0, *dims])
        vectors = [payload[a:b] for a, b in itertools.pairwise(cuts)]
        interests = tuple(
            Interest(v, i["ts"], float(i["mass"]), i["mass_ts"], int(i["events"]))
            for i, v in zip(h["interests"], vectors, strict=False)
        )
        n = len(interests)
        query = None
        if q is not None:
            cut = n + 1 + len(q["negatives"])
            query = LastQuery(
                text=q["text"],
                ts=q["ts"],
                phrases=tuple(QueryPhrase(t, int(p), float(w)) for t, p, w in q["phrases"]),
                negatives=tuple(vectors[n + 1 : cut]),
                positives=tuple(vectors[cut:]),
                weight=float(q["weight"]),
            )
        return UserState(
            user_id=h["user_id"],
            version=h["version"],
            interests=interests,
            updater=h["updater"],
            long_term=vectors[n],
            long_term_ts=h["long_term"]["ts"],
            topics={int(t): float(m) for t, m in h["topics"]},
            last_event_ts=h["last_event_ts"],
            gap_s=h["gap_s"],
            query=query,
            window=tuple(WindowEntry(*w) for w in h["window"]),
            consumed=frozenset(h["consumed"]),
            recent_event_ids=tuple(h["recent_event_ids"]),
            offsets=dict(h["offsets"]),
            pending=tuple(
                PendingEvent(*p[:5], position=None if p[5] is None else Position(*p[5]))
                for p in h["pending"]
            ),
            top_k=tuple((item, score) for item, score in h["top_k"]),
            events_applied=h["events_applied"],
            shift_detector=_detector(h["shift"]["detector"]),
            shifts=int(h["shift"]["flags"]),
            last_shift_ts=h["shift"]["last_ts"],
        )
    except StateDecodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise StateDecodeError(f"corrupt state header: {type(exc).__name__}: {exc}") from exc


def _detector(values: Any) -> tuple[float, ...] | None:
    """A stored detector state, checked (`DetectorState.from_tuple` raises ValueError)."""
    if values is None:
        return None
    return DetectorState.from_tuple(values).to_tuple()


def _position(position: Position | None) -> list[Any] | None:
    return None if position is None else [position.topic, position.partition, position.offset]


def _v1_to_v2(header: dict[str, Any]) -> dict[str, Any]:
    """Pending events gain an unknown position; ``time-decay(half_life_s=X)`` is ``time-decay``."""
    updater = header["updater"]
    if updater.startswith("time-decay("):
        updater = "time-decay"
    return {**header, "updater": updater, "pending": [[*p, None] for p in header["pending"]]}


def _v2_to_v3(header: dict[str, Any]) -> dict[str, Any]:
    """The one interest vector becomes the only interest (its mass: 1 at its time)."""
    out = {k: v for k, v in header.items() if k not in ("dim", "interest_ts")}
    ts = header["interest_ts"]
    events = header["events_applied"]
    out["interests"] = [
        {"dim": header["dim"], "ts": ts, "mass": 1.0, "mass_ts": ts, "events": events}
    ]
    out["long_term"] = {"dim": 0, "ts": None}
    out["topics"] = []
    out["last_event_ts"] = ts
    out["gap_s"] = None
    out["query"] = None
    return out


def _v3_to_v4(header: dict[str, Any]) -> dict[str, Any]:
    """The shift detector starts fresh: no observation, no flag yet."""
    return {**header, "shift": {"detector": None, "flags": 0, "last_ts": None}}


def _v4_to_v5(header: dict[str, Any]) -> dict[str, Any]:
    """The last query has no positive vectors: its interests cannot be re-opened on a rebase."""
    query = header["query"]
    if query is None:
        return header
    return {**header, "query": {**query, "positives": [], "weight": 1.0}}


#: Header migrations: ``MIGRATIONS[n]`` turns a schema-n header into a schema-(n+1) one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
}
