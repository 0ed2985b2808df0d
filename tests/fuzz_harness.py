"""Run generated records through the processors and check what came out.

Shared by ``tests/test_fuzz.py`` (small fixed-seed budget), ``benchmarks/fuzz.py``
(tens of thousands of records) and ``tests/test_fuzz_worker.py`` (a real
worker process): the check functions only see positions, dead letters,
deltas and store rows, so they judge an in-memory run and a worker alike.

The properties, per record (see `tests.fuzz_records` for the oracle):

* an invalid record has exactly one dead letter, at its own position, with
  one of the reasons the contract allows, a message, and its original key
  and value bytes; a valid record has none (a repeated event id: exactly
  one, ``duplicate``);
* every valid event is in its user's state exactly once (applied, or
  waiting for its item), and a user nobody sent a valid event has no state;
* every number in every state, delta and stored embedding is finite, and a
  user whose list is not empty got deltas, the last one showing that list;
* every valid snapshot request is answered by exactly one snapshot delta;
* every item ends as its last valid record says (updated or removed).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.state import UnreadableState, UserState
from streams.codec import DEAD_LETTER_SCHEMA
from streams.processor import BehaviourProcessor, CatalogueSync, ItemProcessor, RawRecord
from streams.settings import Settings
from streams.stores.base import StoredItem
from streams.stores.sqlite import SqliteStore
from streams.topics import Topics
from tests.fuzz_records import APPLIED, BEHAVIOURS, ITEMS, WAKEUPS, FuzzConfig, Fuzzed, outcomes

SETTINGS = Settings(top_k=5)
#: Records a user may have in one run and still be checked exactly: below the
#: core's memory of applied ids (512) and its pending queue (256).
MAX_EVENTS_PER_USER = 250


class HashEncoder:
    """A deterministic stand-in for the ONNX encoder: a unit vector seeded by the text."""

    name = "hash-encoder-16"
    dim = 16

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = hashlib.sha256(text.encode("utf-8")).digest()
            vec = np.random.default_rng(list(seed)).standard_normal(self.dim)
            rows.append(vec / np.linalg.norm(vec))
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)


def catalogue_values(cfg: FuzzConfig) -> list[tuple[bytes, bytes]]:
    """Valid `items` records for the items every stream may refer to."""
    return [
        (
            item.encode(),
            json.dumps({"item_id": item, "title": f"Item {n}", "tags": [f"t{n % 3}"]}).encode(),
        )
        for n, item in enumerate(cfg.catalogue)
    ]


@dataclass(frozen=True)
class Placed:
    """A generated record at the position it was consumed from."""

    rec: Fuzzed
    raw: RawRecord

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.raw.topic, self.raw.partition, self.raw.offset)


def place(stream: Sequence[Fuzzed], topics: Topics) -> list[Placed]:
    """Positions as a producer's default partitioner would give them (by key)."""
    next_offset: Counter[tuple[str, int]] = Counter()
    placed = []
    for rec in stream:
        name = topic_name(topics, rec.topic)
        partition = 0 if rec.key is None else zlib.crc32(rec.key) % topics.partitions
        offset = next_offset[(name, partition)]
        next_offset[(name, partition)] += 1
        placed.append(Placed(rec, RawRecord(name, partition, offset, rec.key, rec.value, 1000)))
    return placed


def topic_name(topics: Topics, topic: str) -> str:
    return {BEHAVIOURS: topics.behaviours, ITEMS: topics.items, WAKEUPS: topics.wakeups}[topic]


@dataclass
class Tally:
    """Fuzz counts per topic: generated, applied, dead-lettered by reason."""

    generated: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    dead_lettered: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, other: Tally) -> None:
        self.generated.update(other.generated)
        self.applied.update(other.applied)
        for topic, reasons in other.dead_lettered.items():
            self.dead_lettered[topic].update(reasons)

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {
            topic: {
                "generated": self.generated[topic],
                "applied": self.applied[topic],
                "dead_lettered": sum(self.dead_lettered[topic].values()),
                "dead_lettered_by_reason": dict(sorted(self.dead_lettered[topic].items())),
            }
            for topic in sorted(self.generated)
        }


class FuzzFailure(AssertionError):
    """A property did not hold; the message names the records concerned."""


def _describe(rec: Fuzzed) -> str:
    value = None if rec.value is None else rec.value[:300]
    return f"[{rec.topic} {rec.label}] key={rec.key!r} value={value!r}"


def _fail(problems: list[str]) -> None:
    if problems:
        more = f"\n... and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise FuzzFailure("\n".join(problems[:12]) + more)


def strict_json(raw: bytes) -> dict:
    """Parse an output record; NaN or Infinity in it is a failure, not a number."""

    def refuse(const: str) -> None:
        raise FuzzFailure(f"output holds {const}: {raw[:300]!r}")

    return json.loads(raw, parse_constant=refuse)


# -- checks ----------------------------------------------------------------------


def check_dead_letters(
    placed: Sequence[Placed], letters: Iterable[dict], ordered: bool = True
) -> tuple[Tally, list[Placed]]:
    """Exactly one dead letter per invalid or duplicate record, none for the others.

    Returns the tally and the valid behaviours that were applied. With
    ``ordered`` False (records of one user on several partitions), any one of
    the records repeating an event may be the one applied.
    """
    expected = outcomes([p.rec for p in placed])
    by_position: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    problems = []
    for letter in letters:
        source = letter.get("source") or {}
        where = (source.get("topic"), source.get("partition"), source.get("offset"))
        by_position[where].append(letter)
        if letter.get("schema") != DEAD_LETTER_SCHEMA or not letter.get("message"):
            problems.append(f"malformed dead letter {letter}")
    known = {p.position for p in placed}
    for position, extra in by_position.items():
        if position not in known:
            problems.append(f"dead letter for no generated record: {extra[0]}")
    if not ordered:
        expected = _any_one_applied(placed, expected)
    tally, applied = Tally(), []
    for p, want in zip(placed, expected, strict=True):
        got = by_position.get(p.position, [])
        tally.generated[p.rec.topic] += 1
        if want == APPLIED or (want == _EITHER and not got):
            tally.applied[p.rec.topic] += 1
            applied += [p] if p.rec.topic == BEHAVIOURS else []
            if got:
                reasons = [g["reason"] for g in got]
                problems.append(f"valid record dead-lettered as {reasons}: {_describe(p.rec)}")
            continue
        allowed = frozenset({"duplicate"}) if want == _EITHER else want
        if len(got) != 1:
            reasons = [g["reason"] for g in got]
            problems.append(
                f"want one dead letter in {sorted(allowed)}, got {reasons}: {_describe(p.rec)}"
            )
            continue
        letter = got[0]
        tally.dead_lettered[p.rec.topic][letter["reason"]] += 1
        if letter["reason"] not in allowed:
            problems.append(
                f"reason {letter['reason']!r} ({letter.get('message')}) not in {sorted(allowed)}: "
                f"{_describe(p.rec)}"
            )
        if _b64(letter["key_b64"]) != p.rec.key or _b64(letter["value_b64"]) != p.rec.value:
            problems.append(f"dead letter does not hold the original bytes: {_describe(p.rec)}")
    groups = Counter(p.rec.identity for p in placed if p.rec.valid and p.rec.topic == BEHAVIOURS)
    taken = Counter(p.rec.identity for p in applied)
    for identity, n in taken.items():
        if n != 1:
            problems.append(f"event {identity} applied {n} times of {groups[identity]} copies")
    _fail(problems)
    return tally, applied


_EITHER = "applied, or a duplicate of the copy applied"


def _any_one_applied(placed: Sequence[Placed], expected: list) -> list:
    """Unordered: every copy of a repeated event may be the applied one."""
    copies = Counter(p.rec.identity for p in placed if p.rec.valid and p.rec.topic == BEHAVIOURS)
    return [
        _EITHER if p.rec.valid and p.rec.topic == BEHAVIOURS and copies[p.rec.identity] > 1 else w
        for p, w in zip(placed, expected, strict=True)
    ]


def _b64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def check_states(
    applied: Sequence[Placed],
    states: Mapping[str, UserState | UnreadableState],
    catalogue: Iterable[str],
) -> None:
    """Every applied event once in its user's state; no state without one; all finite."""
    by_user: dict[str, list[Fuzzed]] = defaultdict(list)
    for p in applied:
        by_user[p.rec.user_id].append(p.rec)  # type: ignore[index]
    known = set(catalogue)
    problems = []
    for user in sorted(set(states) - set(by_user)):
        problems.append(f"user {user!r} has a state but no valid event")
    for user, events in by_user.items():
        assert len(events) <= MAX_EVENTS_PER_USER, "the stream is too long to check exactly"
        state = states.get(user)
        if not isinstance(state, UserState):
            problems.append(f"user {user!r}: {len(events)} valid events, state {state!r}")
            continue
        problems += _finite_state(state)
        held = Counter([*state.recent_event_ids, *(p.event_id for p in state.pending)])
        total = state.events_applied + len(state.pending)
        if total != len(events) or sum(held.values()) != len(events):
            problems.append(
                f"user {user!r}: {len(events)} valid events, state holds "
                f"{state.events_applied} applied + {len(state.pending)} pending: "
                + "; ".join(_describe(e) for e in events[:4])
            )
        for event in events:
            if event.event_id is not None and held[event.event_id] != 1:
                problems.append(f"event held {held[event.event_id]} times: {_describe(event)}")
            if (
                event.item_id in known
                and event.event_id is not None
                and event.event_id not in state.recent_event_ids
            ):
                problems.append(f"event on a catalogue item not applied: {_describe(event)}")
    _fail(problems)


def _finite_state(state: UserState) -> list[str]:
    numbers = [
        *(float(x) for v in state.vectors() for x in np.asarray(v, dtype=np.float64).ravel()),
        *(i.mass for i in state.interests),
        *(i.hidden_ts for i in state.interests if i.hidden_ts is not None),
        *(w.ts for w in state.window), *(w.weight for w in state.window),
        *(p.ts for p in state.pending), *(p.weight for p in state.pending),
        *(score for _, score in state.top_k),
    ]  # fmt: skip
    if all(math.isfinite(x) for x in numbers):
        return []
    return [f"user {state.user_id!r} has a non-finite state: {state}"[:600]]


def check_deltas(
    placed: Sequence[Placed], deltas: Sequence[dict], states: Mapping[str, object]
) -> None:
    """Finite deltas; each listed user saw its list; each snapshot request answered once."""
    problems = []
    by_user: dict[str, list[dict]] = defaultdict(list)
    for delta in deltas:
        by_user[delta["user_id"]].append(delta)
        scores = [e["score"] for key in ("added", "reranked", "top_k") for e in delta[key]]
        if not all(isinstance(s, int | float) and math.isfinite(s) for s in scores):
            problems.append(f"delta with a non-finite score: {delta}"[:600])
    for user, mine in by_user.items():
        versions = [d["version"] for d in mine]
        if versions != sorted(versions):
            problems.append(f"user {user!r}: versions went back: {versions}")
    for user, state in states.items():
        if not isinstance(state, UserState) or not state.top_k:
            continue
        mine = by_user.get(user)
        if not mine:
            problems.append(f"user {user!r} has a list {state.top_k} but got no delta")
            continue
        # A delta comes when the list's items or order change, not for scores alone.
        last = [e["item_id"] for e in mine[-1]["top_k"]]
        if last != [item for item, _ in state.top_k] or mine[-1]["version"] > state.version:
            problems.append(f"user {user!r}: last delta {mine[-1]} is not the state's list")
    asked = Counter(
        (p.rec.user_id, p.rec.snapshot)
        for p in placed
        if p.rec.topic == WAKEUPS and p.rec.valid and p.rec.snapshot is not None
    )
    answered = Counter(
        (d["user_id"], d["cause"]["request_id"]) for d in deltas if d["cause"]["kind"] == "snapshot"
    )
    if asked != answered:
        problems.append(f"snapshot requests {dict(asked)} answered by {dict(answered)}")
    _fail(problems)


def check_items(
    placed: Sequence[Placed], stored: Mapping[str, StoredItem], ordered: bool = True
) -> None:
    """Each item as its last valid record says (any valid one when order is unknown)."""
    versions: dict[str, list[Fuzzed]] = defaultdict(list)
    for p in placed:
        if p.rec.topic == ITEMS and p.rec.valid:
            versions[p.rec.item_id].append(p.rec)  # type: ignore[index]
    problems = []
    for item, recs in versions.items():
        row = stored.get(item)
        allowed = recs[-1:] if ordered else recs
        if row is None:
            if not any(r.tombstone for r in allowed):
                problems.append(f"item {item!r} missing; last record {_describe(recs[-1])}")
            continue
        if row.vector is None or not np.isfinite(row.vector).all():
            problems.append(f"item {item!r} has a non-finite embedding {row.vector}")
        if not any(not r.tombstone and r.title == row.title for r in allowed):
            problems.append(f"item {item!r} stored as {row.title!r}; want {_describe(recs[-1])}")
    _fail(problems)


# -- in-memory runs -----------------------------------------------------------------


def _split(records: Sequence[RawRecord], cuts: Sequence[int]) -> list[Sequence[RawRecord]]:
    bounds = sorted({0, len(records), *(c for c in cuts if 0 < c < len(records))})
    return [records[a:b] for a, b in itertools.pairwise(bounds)]


def _outputs(outcomes_: Iterable, topic: str) -> list[dict]:
    return [strict_json(o.value) for out in outcomes_ for o in out.outputs if o.topic == topic]


def run_behaviours(
    stream: Sequence[Fuzzed], cfg: FuzzConfig, cuts: Sequence[int] = (), updater: str = ""
) -> Tally:
    """``stream`` (behaviours and wakeups) through a `BehaviourProcessor`, checked.

    The catalogue items exist first; ``cuts`` splits the stream into micro-batches.
    """
    settings = SETTINGS.replace(updater=updater) if updater else SETTINGS
    topics = settings.topics
    store = SqliteStore(":memory:")
    try:
        encoder = HashEncoder()
        sync = CatalogueSync(store, encoder.dim)
        items = ItemProcessor(store, sync, encoder, topics)
        items.process(
            [RawRecord(topics.items, 0, n, k, v) for n, (k, v) in enumerate(catalogue_values(cfg))],
            now=cfg.now,
        )
        processor = BehaviourProcessor(
            store, sync, encoder, settings.core_params(), topics, clock=lambda: cfg.now,
            limits=settings.limits(),
        )  # fmt: skip
        placed = place(stream, topics)
        results = [processor.process(batch) for batch in _split([p.raw for p in placed], cuts)]
        tally, applied = check_dead_letters(placed, _outputs(results, topics.dead_letters))
        states = store.get_states(sorted(mentioned_users(placed)))
        check_states(applied, states, cfg.catalogue)
        check_deltas(placed, _outputs(results, topics.deltas), states)
        return tally
    finally:
        store.close()


def mentioned_users(placed: Sequence[Placed]) -> set[str]:
    """Every user id a record names, valid or not, so that a stray state cannot hide."""
    users = {p.rec.user_id for p in placed if p.rec.user_id is not None}
    for p in placed:
        try:
            body = json.loads(p.rec.value or b"")
        except (ValueError, RecursionError):
            continue
        user = body.get("user_id") if isinstance(body, dict) else None
        if isinstance(user, str):
            try:
                user.encode("utf-8")
            except UnicodeEncodeError:
                continue
            users.add(user)
    return users


def run_items(stream: Sequence[Fuzzed], cfg: FuzzConfig, cuts: Sequence[int] = ()) -> Tally:
    """``stream`` (items) through an `ItemProcessor`, checked."""
    topics = SETTINGS.topics
    store = SqliteStore(":memory:")
    try:
        encoder = HashEncoder()
        sync = CatalogueSync(store, encoder.dim)
        processor = ItemProcessor(store, sync, encoder, topics)
        placed = place(stream, topics)
        results = [
            processor.process(batch, now=cfg.now) for batch in _split([p.raw for p in placed], cuts)
        ]
        tally, _ = check_dead_letters(placed, _outputs(results, topics.dead_letters))
        for wakeup in _outputs(results, topics.wakeups):
            if not isinstance(wakeup.get("user_id"), str):
                raise FuzzFailure(f"the items processor wrote a bad wakeup {wakeup}")
        ids = {p.rec.item_id for p in placed if p.rec.item_id is not None}
        check_items(placed, store.get_items(sorted(ids)))
        for item in ids:
            row = store.get_items([item]).get(item)
            if (row is None) == (item in sync.catalogue):
                raise FuzzFailure(f"catalogue and store disagree on {item!r}")
        return tally
    finally:
        store.close()
