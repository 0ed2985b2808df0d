"""Tier 2: the shell with in-memory parts (SQLite in memory, the ONNX encoder)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from models.core import CoreParams
from models.encoder import OnnxEncoder
from models.state import UserState
from streams.codec import DEAD_LETTER_SCHEMA, Wakeup, encode_wakeup
from streams.processor import (
    BehaviourProcessor,
    CatalogueSync,
    ItemProcessor,
    Outcome,
    RawRecord,
)
from streams.settings import Settings
from streams.stores.sqlite import SqliteStore
from streams.workload import bad_item_records, synthetic_workload, to_json_bytes

SETTINGS = Settings(top_k=5)
TOPICS = SETTINGS.topics
NOW = 1_750_000_000.0


class Worker:
    """One worker's processors over a store."""

    def __init__(self, store: SqliteStore, encoder: OnnxEncoder) -> None:
        self.sync = CatalogueSync(store, encoder.dim)
        self.items = ItemProcessor(store, self.sync, encoder, TOPICS)
        self.behaviours = BehaviourProcessor(
            store, self.sync, encoder, SETTINGS.core_params(), TOPICS, clock=lambda: NOW
        )


class StaleReads:
    """A store whose reads return an old snapshot: a worker that lost its partitions."""

    def __init__(self, store: SqliteStore, snapshot: dict[str, UserState]) -> None:
        self._store, self._snapshot = store, snapshot

    def get_states(self, user_ids: list[str]) -> dict[str, UserState]:
        return {u: s for u, s in self._snapshot.items() if u in user_ids}

    def put_states(self, states: list[UserState]) -> list[str]:
        return self._store.put_states(states)


@pytest.fixture
def store() -> SqliteStore:
    return SqliteStore(":memory:")


@pytest.fixture
def worker(store: SqliteStore, onnx_cpu_encoder: OnnxEncoder) -> Worker:
    return Worker(store, onnx_cpu_encoder)


WORKLOAD = synthetic_workload(users=3, items_per_tag=4, events_per_user=6, seed=3)


def item_records(items=WORKLOAD.items, start: int = 0) -> list[RawRecord]:
    return [
        RawRecord(TOPICS.items, 0, start + n, i["item_id"].encode(), to_json_bytes(i))
        for n, i in enumerate(items)
    ]


def event_records(events=WORKLOAD.events, start: int = 0) -> list[RawRecord]:
    return [
        RawRecord(TOPICS.behaviours, 0, start + n, e["user_id"].encode(), to_json_bytes(e), 1000)
        for n, e in enumerate(events)
    ]


def outputs(outcome, topic: str) -> list[dict]:
    return [json.loads(o.value) for o in outcome.outputs if o.topic == topic]


def test_items_are_encoded_once_unless_their_text_changes(worker: Worker) -> None:
    first = worker.items.process(item_records())
    assert first.counts["encoded"] == len(WORKLOAD.items)
    again = worker.items.process(item_records(start=100))
    assert again.counts["encoded"] == 0
    changed = {**WORKLOAD.items[0], "text": "A completely different story about bread."}
    third = worker.items.process(item_records([changed], start=200))
    assert third.counts["encoded"] == 1


def test_bad_items_are_dead_lettered(worker: Worker) -> None:
    bad = [
        RawRecord(TOPICS.items, 1, n, key, value)
        for n, (_, key, value, _) in enumerate(bad_item_records())
    ]
    out = worker.items.process(bad)
    letters = outputs(out, TOPICS.dead_letters)
    assert [x["reason"] for x in letters] == [code for *_, code in bad_item_records()]
    assert all(x["schema"] == DEAD_LETTER_SCHEMA for x in letters)
    assert [x["source"]["offset"] for x in letters] == list(range(len(bad)))


def test_a_replayed_batch_changes_nothing_and_restates_the_list(
    worker: Worker, store: SqliteStore
) -> None:
    worker.items.process(item_records())
    batch = event_records()
    first = worker.behaviours.process(batch)
    users = sorted({e["user_id"] for e in WORKLOAD.events})
    before = store.get_states(users)
    replay = worker.behaviours.process(batch)  # e.g. after a crash before the commit
    after = store.get_states(users)
    assert {u: s.version for u, s in after.items()} == {u: s.version for u, s in before.items()}
    assert replay.counts["replayed"] == len(batch) and replay.counts["events"] == 0
    restated = outputs(replay, TOPICS.deltas)
    assert {d["cause"]["kind"] for d in restated} == {"replay"}
    last = {d["user_id"]: d for d in outputs(first, TOPICS.deltas)}
    for d in restated:
        assert d["version"] == last[d["user_id"]]["version"]
        assert d["top_k"] == last[d["user_id"]]["top_k"]
        assert d["added"] == [] and d["removed"] == []


def test_a_zombie_worker_cannot_overwrite_newer_state(
    store: SqliteStore, onnx_cpu_encoder: OnnxEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    live, zombie = Worker(store, onnx_cpu_encoder), Worker(store, onnx_cpu_encoder)
    live.items.process(item_records())
    events = [e for e in WORKLOAD.events if e["user_id"] == WORKLOAD.events[0]["user_id"]]
    live.behaviours.process(event_records(events[:2]))
    stale = store.get_states([events[0]["user_id"]])

    # The zombie read the state before the live worker applied the next batch.
    zombie.behaviours.store = StaleReads(store, stale)
    live.behaviours.process(event_records(events[2:4], start=2))
    with caplog.at_level(logging.WARNING, logger="interest_stream.processor"):
        out = zombie.behaviours.process(event_records(events[2:5], start=2))

    assert out.counts["fenced"] == 1
    user, tp = events[0]["user_id"], f"{TOPICS.behaviours}[0]"
    assert f"user={user} is newer in the store: fenced off {tp}@2, {tp}@3, {tp}@4" in caplog.text
    assert outputs(out, TOPICS.deltas) == []
    now = store.get_states([events[0]["user_id"]])[events[0]["user_id"]]
    assert now.events_applied == 4  # the zombie's extra event did not land


def test_pending_overflow_is_dead_lettered_not_dropped(worker: Worker) -> None:
    worker.behaviours.params = CoreParams(k=3, max_pending=2)
    events = [
        {"user_id": "u", "item_id": f"missing-{n}", "type": "view", "ts": 1_700_000_000 + n}
        for n in range(3)
    ]
    out = worker.behaviours.process(event_records(events))
    (letter,) = outputs(out, TOPICS.dead_letters)
    assert letter["reason"] == "pending_overflow"
    assert json.loads(base64.b64decode(letter["value_b64"]))["item_id"] == "missing-0"


def snapshot_request(user: str, request_id: str, offset: int) -> RawRecord:
    value = encode_wakeup(Wakeup(user, snapshot=request_id))
    return RawRecord(TOPICS.wakeups, 0, offset, user.encode(), value, 2000)


def test_a_snapshot_request_restates_the_current_list(worker: Worker, store: SqliteStore) -> None:
    worker.items.process(item_records())
    first = worker.behaviours.process(event_records())
    user = WORKLOAD.events[0]["user_id"]
    latest = [d for d in outputs(first, TOPICS.deltas) if d["user_id"] == user][-1]
    version = store.get_states([user])[user].version

    out = worker.behaviours.process([snapshot_request(user, "req-1", 0)])

    (snap,) = outputs(out, TOPICS.deltas)
    assert snap["cause"]["kind"] == "snapshot" and snap["cause"]["request_id"] == "req-1"
    assert snap["cause"]["source_ts_ms"] == 2000
    assert snap["version"] == version == latest["version"]
    assert snap["top_k"] == latest["top_k"]
    assert snap["added"] == snap["removed"] == snap["reranked"] == []
    assert snap["interest"]["events"] == sum(e["user_id"] == user for e in WORKLOAD.events)
    assert store.get_states([user])[user].version == version, "asking changes nothing"
    assert out.counts["snapshots"] == 1


def test_a_snapshot_follows_the_events_before_it_in_the_same_batch(worker: Worker) -> None:
    worker.items.process(item_records())
    user = WORKLOAD.events[0]["user_id"]
    events = [e for e in WORKLOAD.events if e["user_id"] == user]
    batch = [*event_records(events), snapshot_request(user, "req-2", 0)]

    out = worker.behaviours.process(batch)

    change, snap = outputs(out, TOPICS.deltas)
    assert change["cause"]["kind"] == "events" and snap["cause"]["kind"] == "snapshot"
    assert snap["version"] == change["version"] and snap["top_k"] == change["top_k"]


def test_an_unknown_user_gets_an_empty_snapshot(worker: Worker, store: SqliteStore) -> None:
    worker.items.process(item_records())
    out = worker.behaviours.process(
        [snapshot_request("nobody", "req-3", 0), snapshot_request("nobody", "req-4", 1)]
    )
    snaps = outputs(out, TOPICS.deltas)
    assert [s["cause"]["request_id"] for s in snaps] == ["req-3", "req-4"]
    assert all(s["version"] == 0 and s["top_k"] == [] for s in snaps)
    assert snaps[0]["interest"]["events"] == 0
    assert store.get_states(["nobody"]) == {}, "asking creates no state"


def test_a_paused_worker_does_not_publish_what_a_newer_owner_superseded(
    store: SqliteStore, onnx_cpu_encoder: OnnxEncoder
) -> None:
    """A wrote its states, then paused; B took over and moved the user on; A resumes."""
    paused, owner = Worker(store, onnx_cpu_encoder), Worker(store, onnx_cpu_encoder)
    paused.items.process(item_records())
    user = WORKLOAD.events[0]["user_id"]
    events = [e for e in WORKLOAD.events if e["user_id"] == user]
    late = paused.behaviours.process(event_records(events[:2]))  # states written, not produced
    assert outputs(late, TOPICS.deltas)

    again = owner.behaviours.process(event_records(events[:2]))  # the new owner replays ...
    newer = owner.behaviours.process(event_records(events[2:4], start=2))  # ... and moves on
    assert {d["cause"]["kind"] for d in outputs(again, TOPICS.deltas)} == {"replay"}
    assert outputs(owner.behaviours.drop_superseded(newer), TOPICS.deltas)

    resumed = paused.behaviours.drop_superseded(late)
    assert outputs(resumed, TOPICS.deltas) == []
    assert resumed.counts["superseded"] == len(outputs(late, TOPICS.deltas))
    assert outputs(paused.behaviours.drop_superseded(Outcome()), TOPICS.deltas) == []


def test_deltas_published_behind_a_newer_owner_are_named(
    store: SqliteStore, onnx_cpu_encoder: OnnxEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    """A passed its recheck, then paused before its produce; B moved the user on meanwhile."""
    paused, owner = Worker(store, onnx_cpu_encoder), Worker(store, onnx_cpu_encoder)
    paused.items.process(item_records())
    user = WORKLOAD.events[0]["user_id"]
    events = [e for e in WORKLOAD.events if e["user_id"] == user]
    checked = paused.behaviours.drop_superseded(
        paused.behaviours.process(event_records(events[:2]))
    )
    sent = len(outputs(checked, TOPICS.deltas))
    assert sent and paused.behaviours.published_superseded(checked) == 0, "nobody moved on yet"

    owner.behaviours.process(event_records(events[:4]))  # the new owner replays and moves on
    with caplog.at_level(logging.WARNING, logger="interest_stream"):
        assert paused.behaviours.published_superseded(checked) == sent
    (line,) = [r.getMessage() for r in caplog.records if "late" in r.getMessage()]
    assert f"user={user} at v" in line and "drop them as stale" in line


def test_a_query_is_decomposed_encoded_and_applied_and_stores_no_item(
    worker: Worker, store: SqliteStore
) -> None:
    worker.items.process(item_records(), now=NOW)
    query = {"user_id": "newcomer", "type": "query", "ts": NOW - 10,
             "text": "space adventures, nothing scary"}  # fmt: skip
    rec = RawRecord(TOPICS.behaviours, 0, 0, b"newcomer", to_json_bytes(query), 1000)
    out = worker.behaviours.process([rec])
    (delta,) = [json.loads(o.value) for o in out.outputs if o.topic == TOPICS.deltas]
    phrases = delta["interest"]["query"]["phrases"]
    assert [(p["text"], p["polarity"]) for p in phrases] == [
        ("space adventures", "positive"),
        ("scary", "negative"),
    ]
    assert delta["top_k"] and out.counts["query_phrases_encoded"] == 2
    assert store.get_items([""]) == {}, "a query's text is not an item's"
    state = store.get_states(["newcomer"])["newcomer"]
    assert state.events_applied == 1 and len(state.query.negatives) == 1 and not state.consumed


def test_a_query_without_an_interest_phrase_is_a_dead_letter(worker: Worker) -> None:
    worker.items.process(item_records(), now=NOW)
    query = {"user_id": "u", "type": "query", "ts": NOW, "text": "the and of"}
    rec = RawRecord(TOPICS.behaviours, 0, 5, b"u", to_json_bytes(query), 1000)
    out = worker.behaviours.process([rec])
    (letter,) = [json.loads(o.value) for o in out.outputs if o.topic == TOPICS.dead_letters]
    assert letter["reason"] == "invalid_query" and letter["source"]["offset"] == 5
    assert not [o for o in out.outputs if o.topic == TOPICS.deltas]


def test_a_batch_reports_where_its_time_went(worker: Worker) -> None:
    """The stage breakdown (`models.stages`): every stage of the path, summing to the batch."""
    items = worker.items.process(item_records())
    assert items.stages["encode"] > 0
    outcome = worker.behaviours.process(event_records())
    stages = outcome.stages
    for name in ("catalogue_sync", "decode", "state_read", "core", "rank", "summary",
                 "state_write", "serialise", "other"):  # fmt: skip
        assert stages.get(name, 0.0) > 0, (name, stages)
    assert all(seconds >= 0 for seconds in stages.values())
    assert outcome.counts["deltas"] > 0


def test_a_batch_is_ranked_through_the_index_as_each_user_alone_would_be(
    onnx_cpu_encoder: OnnxEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``ann_min_items`` one `rank_many` ranks the batch: the lists of one `step` each.

    The index is built by `warm`, before the first batch; a ranking that
    raises leaves each user to be stepped alone, and nothing is lost.
    """
    from models import core

    params = Settings(top_k=5, ann_min_items=10, ann_candidates=8).core_params()

    def processor(store: SqliteStore) -> BehaviourProcessor:
        sync = CatalogueSync(store, onnx_cpu_encoder.dim)
        ItemProcessor(store, sync, onnx_cpu_encoder, TOPICS).process(item_records())
        made = BehaviourProcessor(store, sync, onnx_cpu_encoder, params, TOPICS, clock=lambda: NOW)
        made.warm()
        return made

    batched_store, alone_store = SqliteStore(":memory:"), SqliteStore(":memory:")
    batched, alone = processor(batched_store), processor(alone_store)
    index = batched.sync.catalogue.ann
    assert index is not None and len(index) == len(WORKLOAD.items)
    calls = []
    real = core.rank_many
    counted = lambda states, *a: calls.append(len(states)) or real(states, *a)  # noqa: E731
    monkeypatch.setattr("streams.processor.rank_many", counted)
    out = batched.process(event_records())
    users = sorted({e["user_id"] for e in WORKLOAD.events})
    assert calls == [len(users)]  # one ranking for the whole batch
    monkeypatch.setattr(alone, "_step_all", lambda *_: {})  # one `step` per user
    alone.process(event_records())
    lists = {u: s.top_k for u, s in batched_store.get_states(users).items()}
    assert lists == {u: s.top_k for u, s in alone_store.get_states(users).items()}
    assert all(lists.values()) and {d["user_id"] for d in outputs(out, TOPICS.deltas)} == set(users)

    def broken(*_args):
        raise ValueError("index failed")

    monkeypatch.setattr("streams.processor.rank_many", broken)
    more = [
        {**e, "event_id": f"{e['event_id']}-again"}
        for e in synthetic_workload(users=3, items_per_tag=4, events_per_user=2, seed=4).events
    ]
    again = batched.process(event_records(more, start=len(WORKLOAD.events)))
    assert again.counts["events"] == len(more)
    assert not outputs(again, TOPICS.dead_letters)
