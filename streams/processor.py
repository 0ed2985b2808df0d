"""The imperative shell around the core, without Kafka.

`BehaviourProcessor` and `ItemProcessor` take a micro-batch of raw records
and return the records to produce; they read and write the store but never
touch a broker, so the Faust agents stay thin and everything here is tested
with in-memory parts.

Commit order (the agents keep it): states are written by `process`, then the
agent produces and flushes the returned outputs, then the offsets of the
batch are acked and committed. A crash anywhere replays the batch, and the
per-user offsets in the state make the replay a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from models.behaviour import Behaviour, Position
from models.catalogue import Catalogue
from models.core import Cause, CoreParams, new_state, restate, step
from models.encoder.base import Encoder
from models.state import PendingEvent
from streams import codec
from streams.codec import ItemTombstone, ItemUpdate, Rejected, Wakeup
from streams.stores.base import Store, StoredItem
from streams.topics import Topics

log = logging.getLogger("interest_stream.processor")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A consumed record as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce."""

    topic: str
    key: bytes
    value: bytes | None


@dataclass
class Outcome:
    outputs: list[Output] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class CatalogueSync:
    """Keeps a worker's in-memory catalogue in step with the store's items.

    Every worker ranks against the whole catalogue, while each embeds only
    the items of its own partitions: pulling the store's change feed before
    each batch makes every worker see every item.
    """

    def __init__(self, store: Store, dim: int) -> None:
        self.store = store
        self.catalogue = Catalogue(dim)
        self._cursor = 0

    def refresh(self) -> list[str]:
        """Apply changes since the last call; returns the changed item ids."""
        changes, self._cursor = self.store.items_changed_since(self._cursor)
        for item in changes:
            if item.vector is None:
                self.catalogue.remove(item.item_id)
            else:
                self.catalogue.upsert(item.item_id, item.vector, item.tags)
        return [item.item_id for item in changes]


class ItemProcessor:
    """Validates `items` records, encodes new or changed text, stores embeddings."""

    def __init__(self, store: Store, sync: CatalogueSync, encoder: Encoder, topics: Topics):
        self.store, self.sync, self.encoder, self.topics = store, sync, encoder, topics

    def process(self, records: Sequence[RawRecord], now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        out = Outcome()
        latest: dict[str, ItemUpdate | ItemTombstone] = {}
        for rec in records:
            item = codec.decode_item(rec.key, rec.value)
            if isinstance(item, Rejected):
                out.outputs.append(_dead_letter(self.topics, rec, item, now))
                out.count("dead_letters")
                continue
            latest[item.item_id] = item  # last write in the batch wins, as in compaction
        if not latest:
            return out
        rows = self._embed(list(latest.values()), out)
        self.store.put_items(rows)
        self.sync.refresh()
        out.outputs.extend(self._wakeups([row.item_id for row in rows]))
        out.count("items", len(rows))
        return out

    def _embed(self, items: list[ItemUpdate | ItemTombstone], out: Outcome) -> list[StoredItem]:
        updates = [i for i in items if isinstance(i, ItemUpdate)]
        known = self.store.get_items([u.item_id for u in updates])
        hashes = {u.item_id: self._content_hash(u.text) for u in updates}
        todo = [u for u in updates if known.get(u.item_id, _NONE).content_hash != hashes[u.item_id]]
        vectors = dict(
            zip([u.item_id for u in todo], self.encoder.encode([u.text for u in todo]), strict=True)
        )
        out.count("encoded", len(todo))
        rows = []
        for item in items:
            if isinstance(item, ItemTombstone):
                rows.append(StoredItem(item.item_id, None))
                continue
            vector = vectors.get(item.item_id)
            if vector is None:
                vector = known[item.item_id].vector
            rows.append(
                StoredItem(item.item_id, vector, item.title, item.tags, hashes[item.item_id])
            )
        return rows

    def _content_hash(self, text: str) -> str:
        return hashlib.sha1(f"{self.encoder.name}\x1f{text}".encode()).hexdigest()

    def _wakeups(self, item_ids: list[str]) -> list[Output]:
        by_user: dict[str, set[str]] = {}
        for item_id, users in self.store.watchers(item_ids).items():
            for user in users:
                by_user.setdefault(user, set()).add(item_id)
        return [
            Output(
                self.topics.wakeups,
                user.encode(),
                codec.encode_wakeup(Wakeup(user, tuple(sorted(items)))),
            )
            for user, items in sorted(by_user.items())
        ]


class BehaviourProcessor:
    """Applies micro-batches of behaviours (and wakeups) to user states."""

    def __init__(
        self,
        store: Store,
        sync: CatalogueSync,
        encoder: Encoder,
        params: CoreParams,
        topics: Topics,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.sync, self.encoder = store, sync, encoder
        self.params, self.topics, self.clock = params, topics, clock

    def process(self, records: Sequence[RawRecord]) -> Outcome:
        now = self.clock()
        out = Outcome()
        self.sync.refresh()
        events: dict[str, list[tuple[Behaviour, RawRecord]]] = {}
        refresh: dict[str, set[str]] = {}
        snapshots: dict[str, list[tuple[str, RawRecord]]] = {}
        inline: dict[str, str] = {}
        for rec in records:
            if rec.topic == self.topics.wakeups:
                wake = codec.decode_wakeup(rec.value)
                if isinstance(wake, Wakeup):
                    refresh.setdefault(wake.user_id, set()).update(wake.item_ids)
                    if wake.snapshot is not None:
                        snapshots.setdefault(wake.user_id, []).append((wake.snapshot, rec))
                    continue
                decoded: Behaviour | Rejected = wake
            else:
                decoded = codec.decode_behaviour(rec.key, rec.value, rec.position, now)
            if isinstance(decoded, Rejected):
                out.outputs.append(_dead_letter(self.topics, rec, decoded, now))
                out.count("dead_letters")
                continue
            events.setdefault(decoded.user_id, []).append((decoded, rec))
            if decoded.item_id not in self.sync.catalogue:
                text = codec.behaviour_text(rec.value or b"{}")
                if text is not None:
                    inline.setdefault(decoded.item_id, text)
        self._store_inline_items(inline, out)

        users = list(dict.fromkeys([*events, *refresh]))
        states = self.store.get_states(users)
        writes, deltas = [], []
        for user in users:
            pairs = events.get(user, [])
            result = step(
                states.get(user),
                [e for e, _ in pairs],
                self.sync.catalogue,
                now,
                self.params,
                refresh=sorted(refresh.get(user, ())),
            )
            by_id = {id(e): rec for e, rec in pairs}
            for dup in result.duplicates:
                rec = by_id[id(dup)]
                reason = Rejected("duplicate", f"event_id {dup.event_id!r} was already applied")
                out.outputs.append(_dead_letter(self.topics, rec, reason, now))
                out.count("dead_letters")
            for pending in result.overflow:
                out.outputs.append(_overflow_letter(self.topics, user, pending, now))
                out.count("dead_letters")
            for event in result.replayed:
                log.info("skip replayed event user=%s %s", user, event.position)
            out.count("events", len(result.applied))
            out.count("parked", len(result.parked))
            out.count("replayed", len(result.replayed))
            if result.changed and result.state is not None:
                writes.append(result.state)
            delta = result.delta
            if delta is None and result.replayed and result.state and result.state.top_k:
                delta = restate(result.state, self.sync.catalogue, now, self.params)
            if delta is not None:
                stamps = [rec.timestamp_ms for _, rec in pairs if rec.timestamp_ms is not None]
                deltas.append((delta, max(stamps) if stamps else None))
            for request_id, rec in snapshots.get(user, []):
                current = result.state or new_state(user, self.sync.catalogue.dim, self.params)
                cause = Cause(kind="snapshot", request_id=request_id)
                snapshot = restate(current, self.sync.catalogue, now, self.params, cause)
                deltas.append((snapshot, rec.timestamp_ms))
                out.count("snapshots")

        fenced = set(self.store.put_states(writes))
        for user in sorted(fenced):
            lost = [str(e.position) for e, _ in events.get(user, []) if e.position]
            where = ", ".join(lost) or "wake-up"
            log.warning("state of user=%s is newer in the store: fenced off %s", user, where)
        out.count("fenced", len(fenced))
        for delta, source_ts in deltas:
            if delta.user_id in fenced:
                continue
            value = codec.encode_delta(delta, source_ts)
            out.outputs.append(Output(self.topics.deltas, delta.user_id.encode(), value))
            out.count("deltas")
        return out

    def _store_inline_items(self, texts: dict[str, str], out: Outcome) -> None:
        """Items first seen inline in a behaviour get embedded from that text."""
        if not texts:
            return
        ids = list(texts)
        vectors = self.encoder.encode([texts[i] for i in ids])
        self.store.put_items(
            [StoredItem(i, v, texts[i][:200]) for i, v in zip(ids, vectors, strict=True)]
        )
        self.sync.refresh()
        out.count("encoded", len(ids))


_NONE = StoredItem("", None)


def _dead_letter(topics: Topics, rec: RawRecord, reason: Rejected, now: float) -> Output:
    log.warning(
        "dead letter key=%r %s reason=%s: %s",
        (rec.key or b"")[:64],
        rec.position,
        reason.code,
        reason.message,
    )
    value = codec.encode_dead_letter(rec.key, rec.value, rec.position, reason, now)
    return Output(topics.dead_letters, rec.key or b"", value)


def _overflow_letter(topics: Topics, user: str, pending: PendingEvent, now: float) -> Output:
    """A pending event pushed out of a full queue: its own JSON is the payload."""
    body = json.dumps(
        {
            "user_id": user,
            "item_id": pending.item_id,
            "type": pending.type,
            "ts": pending.ts,
            "weight": pending.weight,
            "event_id": pending.event_id,
        }
    ).encode()
    reason = Rejected("pending_overflow", f"item {pending.item_id!r} never got an embedding")
    rec = RawRecord(topics.behaviours, -1, -1, user.encode(), body)
    return _dead_letter(topics, rec, reason, now)
