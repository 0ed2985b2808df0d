"""The imperative shell around the core, without Kafka.

`BehaviourProcessor` and `ItemProcessor` take a micro-batch of raw records
and return the records to produce; they read and write the store but never
touch a broker, so the Faust agents stay thin and everything here is tested
with in-memory parts.

Commit order (the agents keep it): states are written by `process`, then the
agent produces and flushes the returned outputs, then the offsets of the
batch are acked and committed. A crash anywhere replays the batch, and the
per-user offsets in the state make the replay a no-op.

Failure policy (`streams.failures`): store errors propagate, and the agent
retries the whole batch. Everything else is isolated to the records that
cause it: a record that fails to decode, a user whose stored state cannot be
read, a text the encoder cannot encode, an exception in the core for one
user. Those records go to ``dead-letters`` and the rest of the batch goes on.
As a last line, a batch that raises anything else is processed again one
record at a time, and only the records that still raise are dead-lettered
(``internal_error``): replayed records are recognised by their offsets, so
the second pass never applies an event twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from models import ann
from models.behaviour import Behaviour, EncodedPhrase, Position, event_weight
from models.catalogue import Catalogue
from models.core import (
    Cause,
    CoreParams,
    Delta,
    Prepared,
    PriorAt,
    StepResult,
    finish,
    new_state,
    prepare,
    prior_for,
    rank_many,
    restate,
    step,
    summaries_for,
)
from models.encoder.base import Encoder
from models.interest.popularity import newcomer_weight
from models.interest.query import Phrase, QueryError, decompose
from models.learned.prototypes import ItemPrototypes
from models.stages import StageClock, measuring, stage
from models.state import UnreadableState, UserState
from streams import codec
from streams.codec import DEFAULT_LIMITS, ItemTombstone, ItemUpdate, Limits, Rejected, Wakeup
from streams.failures import InfrastructureError, internal_error, is_infrastructure
from streams.stores.base import Store, StoredItem
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.model_watch import ModelWatch
    from streams.shared_popularity import SharedPopularity
    from streams.shared_prototypes import SharedPrototypes
    from streams.shared_topics import SharedTopics

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
    #: For a delta: (user, the state version the store must still hold for it
    #: to be published), checked by `BehaviourProcessor.drop_superseded`.
    fence: tuple[str, int] | None = None


@dataclass
class Outcome:
    """What one batch produced: the records to publish, and counters for the log line."""

    outputs: list[Output] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: Seconds per stage of the batch (`models.stages`), for the stage breakdown.
    stages: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def dead_letter(self, topics: Topics, rec: RawRecord, reason: Rejected, now: float) -> None:
        log.warning(
            "dead letter key=%r %s reason=%s: %s",
            (rec.key or b"")[:64], rec.position, reason.code, reason.message,
        )  # fmt: skip
        value = codec.encode_dead_letter(rec.key, rec.value, rec.position, reason, now)
        self.outputs.append(Output(topics.dead_letters, rec.key or b"", value))
        self.count("dead_letters")
        if reason.code == "internal_error":
            self.count("internal_errors")

    def merge(self, other: Outcome) -> None:
        self.outputs.extend(other.outputs)
        for name, n in other.counts.items():
            self.count(name, n)
        for name, seconds in other.stages.items():
            self.stages[name] = self.stages.get(name, 0.0) + seconds


def isolate(
    records: Sequence[RawRecord],
    run: Callable[[Sequence[RawRecord]], Outcome],
    topics: Topics,
    now: float,
    what: str,
) -> Outcome:
    """``run(records)``; if it raises a non-infrastructure error, one record at a time.

    Infrastructure errors propagate (the agent retries the batch). A record
    whose own run still raises is dead-lettered as ``internal_error``.
    """
    try:
        return run(records)
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        first, last = records[0].position, records[-1].position
        log.exception("%s batch %s..%s failed; isolating its records", what, first, last)
    out = Outcome()
    out.count("isolated_batches")
    for rec in records:
        try:
            out.merge(run([rec]))
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            log.exception("%s record %s failed", what, rec.position)
            out.dead_letter(topics, rec, internal_error(exc, what), now)
    return out


def encode_isolated(encoder: Encoder, texts: Sequence[str]) -> list[np.ndarray | Exception]:
    """Embed ``texts``; a text the encoder fails on (or gives a non-finite vector) is an error.

    One bad text must not sink its batch: when the batch call fails, each text
    is encoded alone. If every text fails alone and so does a plain probe
    text, the encoder itself is broken: that is an infrastructure failure.
    """
    if not texts:
        return []
    with stage("encode"):
        return _encode_isolated(encoder, texts)


def _encode_isolated(encoder: Encoder, texts: Sequence[str]) -> list[np.ndarray | Exception]:
    try:
        return [_finite(v) for v in encoder.encode(list(texts))]
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        batch_error = exc
    results: list[np.ndarray | Exception] = []
    for text in texts:
        try:
            results.append(_finite(encoder.encode([text])[0]))
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            results.append(exc)
    if all(isinstance(r, Exception) for r in results):
        try:
            encoder.encode(["probe"])
        except Exception as exc:
            raise InfrastructureError(f"the encoder fails on every text: {exc}") from batch_error
    return results


def content_hash(encoder_name: str, text: str) -> str:
    """What the items agent keys its embedding cache on: the encoder and the text it encodes.

    A stored item whose hash equals a new record's is not encoded again
    (`ItemProcessor`); a load tool that encodes items itself writes the same
    hash, so the worker treats its rows as its own.

    >>> content_hash("minilm-l6-v2-onnx", "A jazz trio")[:12]
    'f0987b891111'
    """
    return hashlib.sha1(f"{encoder_name}\x1f{text}".encode()).hexdigest()


def _finite(vector: np.ndarray) -> np.ndarray | Exception:
    if np.isfinite(vector).all():
        return vector
    return ValueError("the encoder returned a non-finite embedding")


class CatalogueSync:
    """Keeps a worker's in-memory catalogue in step with the store's items.

    Every worker ranks against the whole catalogue, while each embeds only
    the items of its own partitions: pulling the store's change feed before
    each batch makes every worker see every item.
    """

    def __init__(self, store: Store, dim: int, topics: SharedTopics | None = None) -> None:
        self.store = store
        self.catalogue = Catalogue(dim)
        self.topics = topics
        self._cursor = 0

    def refresh(self) -> list[str]:
        """Apply changes since the last call; returns the changed item ids.

        With a shared topic model, it is reloaded when items changed (the
        items agent writes the model before the items) and when it is due.
        """
        changes, self._cursor = self.store.items_changed_since(self._cursor)
        for item in changes:
            if item.vector is None:
                self.catalogue.remove(item.item_id)
            else:
                self.catalogue.upsert(item.item_id, item.vector, item.tags)
        if self.topics is not None:
            self.catalogue.topics = self.topics.refresh(force=bool(changes))
        return [item.item_id for item in changes]


class ItemProcessor:
    """Validates `items` records, encodes new or changed text, stores embeddings."""

    def __init__(self, store: Store, sync: CatalogueSync, encoder: Encoder, topics: Topics):
        self.store, self.sync, self.encoder, self.topics = store, sync, encoder, topics

    def process(self, records: Sequence[RawRecord], now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        with measuring(StageClock()) as clock:
            outcome = isolate(
                records, lambda batch: self._batch(batch, now), self.topics, now, "items"
            )
        outcome.stages = clock.seconds
        return outcome

    def _batch(self, records: Sequence[RawRecord], now: float) -> Outcome:
        out = Outcome()
        latest: dict[str, tuple[ItemUpdate | ItemTombstone, RawRecord]] = {}
        for rec in records:
            item = _decoded(lambda r=rec: codec.decode_item(r.key, r.value))
            if isinstance(item, Rejected):
                out.dead_letter(self.topics, rec, item, now)
                continue
            latest[item.item_id] = (item, rec)  # last write in the batch wins, as in compaction
        if not latest:
            return out
        rows, texts = self._embed(list(latest.values()), out, now)
        if not rows:
            return out
        self._learn_topics(rows, texts)
        self.store.put_items(rows)
        self.sync.refresh()
        out.outputs.extend(self._wakeups([row.item_id for row in rows]))
        out.count("items", len(rows))
        return out

    def _embed(
        self,
        items: list[tuple[ItemUpdate | ItemTombstone, RawRecord]],
        out: Outcome,
        now: float,
    ) -> tuple[list[StoredItem], dict[str, str]]:
        """The rows to store, and the texts of the items encoded anew (by id)."""
        updates = [i for i, _ in items if isinstance(i, ItemUpdate)]
        known = self.store.get_items([u.item_id for u in updates])
        hashes = {u.item_id: self._content_hash(u.text) for u in updates}
        todo = [u for u in updates if known.get(u.item_id, _NONE).content_hash != hashes[u.item_id]]
        encoded = encode_isolated(self.encoder, [u.text for u in todo])
        vectors = dict(zip([u.item_id for u in todo], encoded, strict=True))
        out.count("encoded", len(todo))
        rows = []
        for item, rec in items:
            if isinstance(item, ItemTombstone):
                rows.append(StoredItem(item.item_id, None))
                continue
            vector = vectors.get(item.item_id)
            if isinstance(vector, Exception):
                reason = Rejected("encode_failed", f"{type(vector).__name__}: {vector}"[:300])
                out.dead_letter(self.topics, rec, reason, now)
                continue
            if vector is None:
                vector = known[item.item_id].vector
            rows.append(
                StoredItem(item.item_id, vector, item.title, item.tags, hashes[item.item_id])
            )
        return rows, {u.item_id: u.text for u in todo}

    def _learn_topics(self, rows: list[StoredItem], texts: dict[str, str]) -> None:
        """Teach the shared topic model the items encoded anew and the removed ones."""
        shared = self.sync.topics
        if shared is None:
            return
        observed = [
            (r.item_id, r.vector, texts[r.item_id])
            for r in rows
            if r.vector is not None and r.item_id in texts
        ]
        shared.learn(observed, [r.item_id for r in rows if r.vector is None])

    def _content_hash(self, text: str) -> str:
        return content_hash(self.encoder.name, text)

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


@dataclass
class _Batch:
    """A decoded micro-batch of behaviours and wakeups, grouped by user in arrival order."""

    events: dict[str, list[Behaviour]] = field(default_factory=dict)
    refresh: dict[str, set[str]] = field(default_factory=dict)
    snapshots: dict[str, list[tuple[str, RawRecord]]] = field(default_factory=dict)
    #: The record each decoded event came from, by its position.
    records: dict[Position, RawRecord] = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return list(dict.fromkeys([*self.events, *self.refresh, *self.snapshots]))

    def records_of(self, user: str) -> list[RawRecord]:
        """Every record of ``user`` in this batch: events, then snapshot requests."""
        events = [self.records[e.position] for e in self.events.get(user, []) if e.position]
        return events + [rec for _, rec in self.snapshots.get(user, [])]


@dataclass
class _UserPlan:
    """What applying one user's events decided: the state to write, the deltas to send."""

    user: str
    write: UserState | None = None
    deltas: list[tuple[Delta, int | None]] = field(default_factory=list)
    #: The state version the deltas describe (written, or read unchanged; 0: no state).
    version: int = 0
    #: (item id, the user's ranking query before the batch) per applied event on
    #: an item the learned model never saw (`streams.shared_prototypes`).
    observed: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: (item id, event time, weight) per applied consumption event, for the
    #: popularity prior's counts (`streams.shared_popularity`).
    counted: list[tuple[str, float, float]] = field(default_factory=list)


class NonFiniteState(ArithmeticError):
    """The core produced a non-finite interest vector or score; the state is not written."""


class BehaviourProcessor:
    """Applies micro-batches of behaviours (and wakeups) to user states.

    One batch moves forward through three steps: `_decode` (records to
    events, bad ones to dead letters), `_apply` (per user: read state, run
    the core, collect the state to write and its deltas) and `_publish`
    (write the states, fenced, and turn the deltas of the users that were
    written into records to produce).
    """

    def __init__(
        self,
        store: Store,
        sync: CatalogueSync,
        encoder: Encoder,
        params: CoreParams,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
        delta_schema: int = 2,
        watch: ModelWatch | None = None,
        online_part: bool = True,
        popularity: SharedPopularity | None = None,
    ):
        self.store, self.sync, self.encoder = store, sync, encoder
        self.params, self.topics, self.clock, self.limits = params, topics, clock, limits
        self.delta_schema, self.watch = delta_schema, watch
        self.prototypes = self._prototypes_for(params.updater) if online_part else None
        self.online_part = online_part
        #: The cold-start popularity prior's shared counts, or None: no prior.
        self.popularity = popularity
        self._prior: PriorAt | None = None

    def _prototypes_for(self, updater: object) -> SharedPrototypes | None:
        from models.learned import LearnedUpdater
        from streams.shared_prototypes import SharedPrototypes

        if not isinstance(updater, LearnedUpdater):
            return None
        return SharedPrototypes(self.store, updater)

    def warm(self) -> None:
        """Load the catalogue and, past ``ann.min_items``, build its index, before consuming.

        At 100,000 items the graph takes ~20 s to build: built at the
        first batch instead, that batch's events would wait for it. So would
        they for the catalogue's moments (the index path's z-scores), a pass
        over every row: they are computed here too. Each part is a stage
        (``catalogue_sync``, ``ann_build``, ``moments``) of the clock open
        around the call, if any (the worker reports them in its /livez).
        """
        with stage("catalogue_sync"):
            self.sync.refresh()
        if self.params.ann.applies(self.sync.catalogue):
            started = time.perf_counter()
            with stage("ann_build"):
                ann.index_for(self.sync.catalogue, self.params.ann)
            with stage("moments"):
                self.sync.catalogue.moments()
            log.info(
                "catalogue index of %d items built in %.1f s",
                len(self.sync.catalogue),
                time.perf_counter() - started,
            )

    def close(self) -> None:
        """At a clean stop: write the popularity counts still pending (a crash loses them).

        At most ``popularity_flush_events`` events or ``popularity_flush_seconds``
        of counts are pending; a store that fails now is logged, not raised.
        """
        if self.popularity is None or not self.popularity.pending_events:
            return
        try:
            self.popularity.flush(force=True)
        except Exception:
            log.exception("popularity counts of %d events not written at stop",
                          self.popularity.pending_events)  # fmt: skip

    def process(self, records: Sequence[RawRecord]) -> Outcome:
        now = self.clock()
        with measuring(StageClock()) as clock:
            with stage("catalogue_sync"):
                self.sync.refresh()
                if self.params.ann.applies(self.sync.catalogue):
                    ann.index_for(self.sync.catalogue, self.params.ann)  # new items join it
                if self.watch is not None and (updater := self.watch.poll()) is not None:
                    self.params = replace(self.params, updater=updater)
                    if self.online_part:  # another model's queries: its own online part
                        self.prototypes = self._prototypes_for(updater)
                if self.prototypes is not None:
                    self.prototypes.refresh()
                if self.popularity is not None:
                    self.popularity.refresh()
            outcome = isolate(
                records, lambda batch: self._batch(batch, now), self.topics, now, "behaviours"
            )
        outcome.stages = clock.seconds
        return outcome

    def _batch(self, records: Sequence[RawRecord], now: float) -> Outcome:
        out = Outcome()
        with stage("decode"):
            batch = self._decode(records, now, out)
        self._embed_inline(batch, out)
        self._encode_queries(batch, now, out)
        with stage("state_read"):
            states = self.store.get_states(batch.users)
        if self.popularity is not None:
            self._prior = self.popularity.prior_at(self.sync.catalogue)
        with stage("core"):
            stepped = self._step_all(batch, states, now)
            plans = [
                self._apply(user, states.get(user), batch, now, out, stepped.get(user))
                for user in batch.users
            ]
        written = self._publish([p for p in plans if p is not None], batch, out)
        if self.prototypes is not None:
            with stage("online_part"):
                self._learn_online(written)
        if self.popularity is not None:
            with stage("online_part"):
                self._count_popularity(written, out)
        return out

    def _count_popularity(self, plans: list[_UserPlan], out: Outcome) -> None:
        """Add the written users' counted events to the shared counts; write them when due."""
        assert self.popularity is not None
        counted = [c for plan in plans for c in plan.counted]
        if counted:
            items, ts, weights = zip(*counted, strict=True)
            self.popularity.count(list(items), list(ts), list(weights))
            out.count("popularity_counted", sum(w > 0.0 for w in weights))
        if self.popularity.flush():
            out.count("popularity_writes")

    def _learn_online(self, plans: list[_UserPlan]) -> None:
        """Add the written users' events on items the model never saw to the shared part."""
        assert self.prototypes is not None
        observed = ItemPrototypes(self.prototypes.model_version)
        for plan in plans:
            for item_id, query in plan.observed:
                observed.add(item_id, query)
        if len(observed):
            self.prototypes.learn(observed)

    # -- decode ------------------------------------------------------------

    def _decode(self, records: Sequence[RawRecord], now: float, out: Outcome) -> _Batch:
        batch = _Batch()
        for rec in records:
            if rec.topic == self.topics.wakeups:
                decoded = _decoded(lambda r=rec: codec.decode_wakeup(r.value, r.key))
            else:
                decoded = _decoded(
                    lambda r=rec: codec.decode_behaviour(
                        r.key, r.value, r.position, now, self.limits
                    )
                )
            if isinstance(decoded, Rejected):
                out.dead_letter(self.topics, rec, decoded, now)
            elif isinstance(decoded, Wakeup):
                batch.refresh.setdefault(decoded.user_id, set()).update(decoded.item_ids)
                if decoded.snapshot is not None:
                    batch.snapshots.setdefault(decoded.user_id, []).append((decoded.snapshot, rec))
            else:
                batch.events.setdefault(decoded.user_id, []).append(decoded)
                batch.records[rec.position] = rec
        return batch

    def _embed_inline(self, batch: _Batch, out: Outcome) -> None:
        """Items first seen inline in a behaviour get embedded from that text.

        A text the encoder fails on leaves its event waiting for the item, as
        any event on an unknown item does; nothing is dropped.
        """
        texts: dict[str, str] = {}
        for events in batch.events.values():
            for e in events:
                if e.type == "query":
                    continue  # its text is the query, not an item's (`_encode_queries`)
                if e.text is not None and e.item_id not in self.sync.catalogue:
                    texts.setdefault(e.item_id, e.text)
        if not texts:
            return
        ids = list(texts)
        encoded = encode_isolated(self.encoder, [texts[i] for i in ids])
        rows = []
        for item_id, vector in zip(ids, encoded, strict=True):
            if isinstance(vector, Exception):
                log.warning("inline text of item=%s not encoded: %r", item_id, vector)
                out.count("inline_encode_failed")
            else:
                rows.append(StoredItem(item_id, vector, texts[item_id][:200]))
        if rows:
            if self.sync.topics is not None:
                self.sync.topics.learn([(r.item_id, r.vector, texts[r.item_id]) for r in rows], [])
            self.store.put_items(rows)
            self.sync.refresh()
        out.count("encoded", len(rows))

    def _encode_queries(self, batch: _Batch, now: float, out: Outcome) -> None:
        """Decompose each ``query`` event into phrases and encode them with the item encoder.

        A text with no interest phrase in it is a dead letter (``invalid_query``);
        a phrase the encoder fails on makes its event ``encode_failed``.
        """
        decomposed: dict[Position | None, tuple[Phrase, ...] | Rejected] = {}
        for events in batch.events.values():
            for e in events:
                if e.type == "query":
                    try:
                        decomposed[e.position] = decompose(e.text or "")
                    except QueryError as exc:
                        decomposed[e.position] = Rejected("invalid_query", str(exc))
        if not decomposed:
            return
        texts = list(
            dict.fromkeys(
                p.text for ps in decomposed.values() if not isinstance(ps, Rejected) for p in ps
            )
        )
        vectors = dict(zip(texts, encode_isolated(self.encoder, texts), strict=True))
        out.count("query_phrases_encoded", len(texts))
        for user, events in list(batch.events.items()):
            kept = []
            for e in events:
                phrases = decomposed.get(e.position) if e.type == "query" else None
                if phrases is None:
                    kept.append(e)
                    continue
                failed = (
                    [] if isinstance(phrases, Rejected) else
                    [vectors[p.text] for p in phrases if isinstance(vectors[p.text], Exception)]
                )  # fmt: skip
                if isinstance(phrases, Rejected) or failed:
                    reason = phrases if isinstance(phrases, Rejected) else Rejected(
                        "encode_failed", f"query phrase not encoded: {failed[0]!r}"
                    )  # fmt: skip
                    assert e.position is not None
                    out.dead_letter(self.topics, batch.records.pop(e.position), reason, now)
                    continue
                encoded = tuple(
                    EncodedPhrase(p.text, p.polarity, p.weight, vectors[p.text]) for p in phrases
                )
                kept.append(replace(e, phrases=encoded))
            if kept:
                batch.events[user] = kept
            else:
                del batch.events[user]

    # -- apply -------------------------------------------------------------

    def _step_all(
        self, batch: _Batch, states: dict[str, UserState | UnreadableState], now: float
    ) -> dict[str, StepResult]:
        """`step` of every user of the batch, their lists ranked by one `rank_many`.

        The same results as one `step` per user (`models.core.step`): the
        index, past ``ann.min_items``, is searched once for the whole batch.
        A user whose half-step raises is left out, and `_apply` steps them
        alone (and, if that raises too, one event at a time); a ranking that
        raises leaves every user to `_apply`.
        """
        catalogue = self.sync.catalogue
        prepared: dict[str, Prepared] = {}
        for user in batch.users:
            stored = states.get(user)
            if isinstance(stored, UnreadableState):
                continue
            refresh = sorted(batch.refresh.get(user, ()))
            try:
                prepared[user] = prepare(
                    stored, batch.events.get(user, []), catalogue, self.params, refresh=refresh
                )
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
        ranking = [u for u, p in prepared.items() if p.result is None]
        try:
            priors = [prior_for(prepared[u].state, self.params, self._prior, now) for u in ranking]
            lists = rank_many([prepared[u].state for u in ranking], catalogue, self.params, priors)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            log.warning("batch ranking failed (%r); each user is ranked alone", exc)
            return {}
        try:
            summaries = summaries_for([prepared[u] for u in ranking], lists, catalogue, self.params)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            log.warning("batch summaries failed (%r); each user's is made alone", exc)
            summaries = [None] * len(ranking)
        done = {u: p.result for u, p in prepared.items() if p.result is not None}
        for user, ranked, cold, summary in zip(ranking, lists, priors, summaries, strict=True):
            try:
                result = finish(
                    prepared[user], ranked, catalogue, now, self.params,
                    with_popularity=cold is not None, summary=summary,
                )  # fmt: skip
                if result.changed and result.state is not None:
                    _check_finite(result.state)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                continue
            done[user] = result
        return done

    def _apply(
        self,
        user: str,
        stored: UserState | UnreadableState | None,
        batch: _Batch,
        now: float,
        out: Outcome,
        stepped: StepResult | None = None,
    ) -> _UserPlan | None:
        """Run the core for one user; None when nothing of theirs may be written.

        ``stepped`` is the user's `step`, done already with the batch's
        (`_step_all`); without it the core runs here.
        """
        if isinstance(stored, UnreadableState):
            self._quarantine(stored, batch, now, out)
            return None
        events = batch.events.get(user, [])
        refresh = sorted(batch.refresh.get(user, ()))
        plan = _UserPlan(user)
        current = stored
        try:
            results = [stepped if stepped is not None else self._step(stored, events, refresh, now)]
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            where = ", ".join(str(e.position) for e in events) or "wake-up"
            log.exception("core failed for user=%s on %s; one event at a time", user, where)
            results = self._step_each(stored, events, refresh, batch, now, out)
        if self.prototypes is not None and isinstance(stored, UserState):
            plan.observed = self._cold_choices(stored, results)
        if self.popularity is not None:
            plan.counted = self._counted(stored, results)
        for result in results:
            self._account(user, result, batch, now, out)
            if result.changed and result.state is not None:
                plan.write = current = result.state
            delta = result.delta
            if delta is None and result.replayed and result.state and result.state.top_k:
                delta = restate(result.state, self.sync.catalogue, now, self.params)
            if delta is not None:
                plan.deltas.append((delta, _newest_stamp(result, batch)))
        plan.version = current.version if current is not None else 0
        for request_id, rec in batch.snapshots.get(user, []):
            known = current or new_state(user, self.sync.catalogue.dim, self.params)
            cause = Cause(kind="snapshot", request_id=request_id)
            snapshot = restate(known, self.sync.catalogue, now, self.params, cause)
            plan.deltas.append((snapshot, rec.timestamp_ms))
            out.count("snapshots")
        return plan if plan.write is not None or plan.deltas else None

    def _cold_choices(
        self, before: UserState, results: list[StepResult]
    ) -> list[tuple[str, np.ndarray]]:
        """(item, query) for each applied positive event on an item the model never saw.

        The query is that of the user's heaviest interest before the batch:
        what the model would have ranked the item by.
        """
        updater = self.params.updater
        if not before.interests or not hasattr(updater, "is_cold"):
            return []
        heaviest = max(before.interests, key=lambda i: i.mass)
        if heaviest.hidden.shape != updater.initial(0).shape:
            return []  # a state of another model: its hidden state means nothing here
        query = updater.model_query(heaviest.hidden)
        types = self.params.type_weights
        return [
            (e.item_id, query)
            for r in results
            for e in r.applied
            if e.item_id and updater.is_cold(e.item_id) and event_weight(e, types) > 0
        ]

    def _counted(
        self, before: UserState | None, results: list[StepResult]
    ) -> list[tuple[str, float, float]]:
        """(item, time, weight) per applied consumption event, weighted by `newcomer_weight`.

        A consumption event is one on an item whose type moves the interest
        towards it (a view, click, like, purchase, a rating of any stars: the
        user had the item), as the benchmark counts every MovieLens rating.
        ``events_before`` is the user's applied events before it, from the state.
        """
        limit = self.params.popularity.newcomer_events
        types = self.params.type_weights
        n = before.events_applied if before is not None else 0
        out = []
        for result in results:
            for e in result.applied:
                if e.type != "query" and types.get(e.type, 0.0) > 0.0:
                    out.append((e.item_id, e.ts, newcomer_weight(n, limit)))
                n += 1
        return out

    def _step(
        self,
        state: UserState | None,
        events: Sequence[Behaviour],
        refresh: Sequence[str],
        now: float,
    ) -> StepResult:
        result = step(
            state, events, self.sync.catalogue, now, self.params, refresh=refresh, prior=self._prior
        )
        if result.changed and result.state is not None:
            _check_finite(result.state)
        return result

    def _step_each(
        self,
        state: UserState | None,
        events: Sequence[Behaviour],
        refresh: Sequence[str],
        batch: _Batch,
        now: float,
        out: Outcome,
    ) -> list[StepResult]:
        """The user's events one at a time; an event whose step raises is dead-lettered."""
        results = []
        for event in events:
            try:
                result = self._step(state, [event], (), now)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                assert event.position is not None
                out.dead_letter(
                    self.topics, batch.records[event.position], internal_error(exc, "core"), now
                )
                continue
            results.append(result)
            if result.changed:
                state = result.state
        if refresh:
            try:
                results.append(self._step(state, [], refresh, now))
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                log.exception(
                    "re-ranking user=%s for items %s failed",
                    events[0].user_id if events else "?",
                    refresh,
                )
        return results

    def _account(
        self, user: str, result: StepResult, batch: _Batch, now: float, out: Outcome
    ) -> None:
        """Dead letters and counters for what the core set aside."""
        for dup in result.duplicates:
            assert dup.position is not None
            reason = Rejected("duplicate", f"event_id {dup.event_id!r} was already applied")
            out.dead_letter(self.topics, batch.records[dup.position], reason, now)
        for pending in result.overflow:
            reason = Rejected(
                "pending_overflow", f"item {pending.item_id!r} never got an embedding"
            )
            # Where it was read (unknown only for events parked by state schema 1).
            pos = pending.position or Position(self.topics.behaviours, -1, -1)
            body = codec.encode_pending(user, pending)
            rec = RawRecord(pos.topic, pos.partition, pos.offset, user.encode(), body)
            out.dead_letter(self.topics, rec, reason, now)
        if result.migrated_from is not None:
            log.warning(
                "interest of user=%s moved from updater %r to %r by replaying its window",
                user, result.migrated_from, self.params.updater.name,
            )  # fmt: skip
            out.count("updater_migrations")
        for event in result.replayed:
            log.info("skip replayed event user=%s %s", user, event.position)
        out.count("events", len(result.applied))
        out.count("parked", len(result.parked))
        out.count("replayed", len(result.replayed))

    def _quarantine(self, stored: UnreadableState, batch: _Batch, now: float, out: Outcome) -> None:
        """A user whose stored state cannot be read: never overwritten, events kept.

        Each of the user's records goes to ``dead-letters`` as
        ``state_unreadable`` with its original bytes, so it can be re-driven
        (``interest-stream redrive``) once the state is readable again; their
        event ids make a re-drive idempotent.
        """
        reason = Rejected("state_unreadable", f"stored state of {stored.user_id!r}: {stored.error}")
        records = batch.records_of(stored.user_id)
        for rec in records:
            out.dead_letter(self.topics, rec, reason, now)
        out.count("state_unreadable", len(records))

    # -- publish -----------------------------------------------------------

    def _publish(self, plans: list[_UserPlan], batch: _Batch, out: Outcome) -> list[_UserPlan]:
        """Write the states (fenced), queue the deltas; returns the plans not fenced off."""
        writes = [p.write for p in plans if p.write is not None]
        with stage("state_write"):
            fenced = set(self.store.put_states(writes))
        for user in sorted(fenced):
            lost = [str(e.position) for e in batch.events.get(user, []) if e.position]
            where = ", ".join(lost) or "wake-up"
            log.warning("state of user=%s is newer in the store: fenced off %s", user, where)
        out.count("fenced", len(fenced))
        for plan in plans:
            if plan.user in fenced:
                continue
            for delta, source_ts in plan.deltas:
                with stage("serialise"):
                    value = codec.encode_delta(delta, source_ts, self.delta_schema)
                fence = (plan.user, plan.version)
                out.outputs.append(Output(self.topics.deltas, plan.user.encode(), value, fence))
                out.count("deltas")
        return [p for p in plans if p.user not in fenced]

    def drop_superseded(self, outcome: Outcome) -> Outcome:
        """Hold back the deltas of users whose stored state moved on since `process`.

        Called just before the outputs are produced. A worker that was paused
        (a long GC, SIGSTOP, a VM migration) after writing its states may find
        that the group gave its partitions to another worker, which has since
        applied newer events and published newer versions: publishing the
        paused batch's deltas then would move consumers back. The new owner
        restated those users (`replay` deltas), so nothing is lost by dropping them.
        """
        moved, stored = self._moved_on(outcome)
        if not moved:
            return outcome
        for user, version in sorted(moved):
            log.warning(
                "not publishing deltas of user=%s at v%d: the store holds v%d (another "
                "worker took over)", user, version, stored.get(user, 0),
            )  # fmt: skip
        kept = [o for o in outcome.outputs if o.fence not in moved]
        counts = dict(outcome.counts)
        dropped = len(outcome.outputs) - len(kept)
        counts["superseded"] = counts.get("superseded", 0) + dropped
        counts["deltas"] = counts.get("deltas", 0) - dropped
        return Outcome(kept, counts, outcome.stages)

    def published_superseded(self, outcome: Outcome) -> int:
        """After a slow publish: report the deltas that went out after another worker's newer ones.

        `drop_superseded` reads the stored versions before the produce; a
        pause that starts after that read and outlasts the session timeout
        lets the group hand the partitions over, and the paused batch's
        deltas reach the topic when the worker resumes, behind the new
        owner's newer versions. Without a broker-side fence (Kafka
        transactions) nothing can hold them back at that point; they carry
        the older versions, so `streams.downstream.RecommendationView` (and
        any consumer that applies deltas by version) drops them as ``stale``.
        This names them in the log, one line per user; the count of such deltas.
        """
        moved, stored = self._moved_on(outcome)
        for user, version in sorted(moved):
            log.warning(
                "published deltas of user=%s at v%d late: the store holds v%d (another "
                "worker took over during the publish); consumers drop them as stale",
                user, version, stored.get(user, 0),
            )  # fmt: skip
        return sum(1 for o in outcome.outputs if o.fence in moved)

    def _moved_on(self, outcome: Outcome) -> tuple[set[tuple[str, int]], dict[str, int]]:
        """The fences (user, version) of ``outcome`` the store no longer holds; stored versions."""
        fences = {o.fence for o in outcome.outputs if o.fence is not None}
        if not fences:
            return set(), {}
        stored = self.store.versions(sorted({user for user, _ in fences}))
        return {(user, v) for user, v in fences if stored.get(user, 0) != v}, stored


_NONE = StoredItem("", None)


def _decoded(decode: Callable[[], object]) -> object:
    """Run a decoder; a decoder bug is the record's `internal_error`, never the batch's."""
    try:
        return decode()
    except Exception as exc:
        log.exception("decoder raised")
        return internal_error(exc, "decode")


def _newest_stamp(result: StepResult, batch: _Batch) -> int | None:
    """Newest broker timestamp among the records of the events this result took."""
    taken = (*result.applied, *result.parked, *result.replayed, *result.duplicates)
    stamps = [
        batch.records[e.position].timestamp_ms
        for e in taken
        if e.position in batch.records and batch.records[e.position].timestamp_ms is not None
    ]
    return max(stamps) if stamps else None  # type: ignore[type-var]


def _check_finite(state: UserState) -> None:
    if not all(np.isfinite(v).all() for v in state.vectors()):
        raise NonFiniteState(f"an interest vector of user {state.user_id!r} is not finite")
    if not all(np.isfinite(i.mass) for i in state.interests):
        raise NonFiniteState(f"an interest weight of user {state.user_id!r} is not finite")
    if not all(np.isfinite(score) for _, score in state.top_k):
        raise NonFiniteState(f"a top-k score of user {state.user_id!r} is not finite")
