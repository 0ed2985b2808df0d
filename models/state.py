"""A user's interest state: a typed, versioned value with explicit bytes.

Layout of `encode_state` (little-endian)::

    b"ISUS" | u16 schema version | u32 header length | header (UTF-8 JSON)
            | interest vector (float32 * dim)

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
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.behaviour import Position
from models.ranking import Ranked

SCHEMA_VERSION = 2
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


@dataclass(frozen=True)
class UserState:
    """Everything the core keeps about one user.

    Attributes
    ----------
    version
        Bumped by every applied batch; never goes backwards in a store.
    interest, interest_ts
        The updater's hidden vector and the event time it refers to.
    updater
        Name of the updater that produced ``interest``.
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
    """

    user_id: str
    version: int = 0
    interest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    interest_ts: float | None = None
    updater: str = ""
    window: tuple[WindowEntry, ...] = ()
    consumed: frozenset[str] = frozenset()
    recent_event_ids: tuple[str, ...] = ()
    offsets: dict[str, int] = field(default_factory=dict)
    pending: tuple[PendingEvent, ...] = ()
    top_k: tuple[Ranked, ...] = ()
    events_applied: int = 0

    def watched_items(self) -> set[str]:
        """Items whose change concerns this user: pending or recommended."""
        return {p.item_id for p in self.pending} | {item for item, _ in self.top_k}


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
    header = {
        "user_id": state.user_id,
        "version": state.version,
        "dim": int(state.interest.shape[0]),
        "interest_ts": state.interest_ts,
        "updater": state.updater,
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
    }
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    vector = np.ascontiguousarray(state.interest, dtype="<f4").tobytes()
    return _PREFIX.pack(_MAGIC, SCHEMA_VERSION, len(raw)) + raw + vector


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
        vector = np.frombuffer(data[_PREFIX.size + size :], dtype="<f4").astype(np.float32)
        if vector.shape[0] != h["dim"]:
            raise StateDecodeError("interest vector length does not match header")
        return UserState(
            user_id=h["user_id"],
            version=h["version"],
            interest=vector,
            interest_ts=h["interest_ts"],
            updater=h["updater"],
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
        )
    except StateDecodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise StateDecodeError(f"corrupt state header: {type(exc).__name__}: {exc}") from exc


def _position(position: Position | None) -> list[Any] | None:
    return None if position is None else [position.topic, position.partition, position.offset]


def _v1_to_v2(header: dict[str, Any]) -> dict[str, Any]:
    """Pending events gain an unknown position; ``time-decay(half_life_s=X)`` is ``time-decay``."""
    updater = header["updater"]
    if updater.startswith("time-decay("):
        updater = "time-decay"
    return {**header, "updater": updater, "pending": [[*p, None] for p in header["pending"]]}


#: Header migrations: ``MIGRATIONS[n]`` turns a schema-n header into a schema-(n+1) one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
