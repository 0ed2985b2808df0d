"""Tier 3: the whole pipeline through a real broker and a worker process, on four backends.

Every test uses its own item and user ids, so they share one worker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from models.catalogue import Catalogue
from models.core import step
from streams import codec
from streams.cli import main
from streams.settings import Settings
from streams.snapshot import request_snapshots
from streams.stores.base import Store
from streams.workload import bad_behaviour_records, synthetic_workload, to_json_bytes
from tests.pipeline_fixtures import Pipeline

pytestmark = pytest.mark.broker

NOW = 1_750_000_000.0


def scenario(prefix: str, *, users: int = 4, events: int = 20, items_per_tag: int = 6):
    """A small synthetic workload with ids prefixed so tests do not collide."""
    w = synthetic_workload(users=users, items_per_tag=items_per_tag, events_per_user=events, seed=5)
    items = [{**i, "item_id": prefix + i["item_id"]} for i in w.items]
    evs = [
        {**e, "user_id": prefix + e["user_id"], "item_id": prefix + e["item_id"],
         "event_id": prefix + e["event_id"]}
        for e in w.events
    ]  # fmt: skip
    return items, evs


def item_records(items: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(i["item_id"].encode(), to_json_bytes(i)) for i in items]


def event_records(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), to_json_bytes(e)) for e in events]


def test_deltas_equal_an_offline_replay_of_the_same_batches(pipeline: Pipeline) -> None:
    items, events = scenario("r-")
    pipeline.send(pipeline.settings.topics.items, item_records(items))
    pipeline.send(pipeline.settings.topics.behaviours, event_records(events))
    assert_deltas_replay(pipeline.settings, pipeline.store(), items, events, pipeline.deltas)


def assert_deltas_replay(
    settings: Settings,
    store: Store,
    items: list[dict],
    events: list[dict],
    deltas_of: Callable[[str], list[dict]],
) -> None:
    """Each user's deltas (``deltas_of(user)``, by version) equal an offline
    replay of the same batches through the pure core, and the stored state
    matches the last one. ``store`` is the worker's, ``settings`` its settings.
    """
    catalogue = Catalogue(384)
    for item in store.get_items([i["item_id"] for i in items]).values():
        catalogue.upsert(item.item_id, item.vector, item.tags)
    params = settings.core_params()
    users = sorted({e["user_id"] for e in events})
    stored = store.get_states(users)
    for user in users:
        mine = [e for e in events if e["user_id"] == user]
        decoded = [codec.decode_behaviour(None, to_json_bytes(e), None, NOW) for e in mine]
        deltas = deltas_of(user)
        assert deltas, f"no deltas for {user}"
        versions = [d["version"] for d in deltas]
        assert versions == sorted(set(versions))
        state, done = None, 0
        for delta in deltas:
            # The batch ends at this delta's last event; batches that moved no
            # rank published nothing and are folded into it.
            last = decoded.index(
                next(e for e in decoded if e.event_id == delta["cause"]["event_ids"][-1])
            )
            result = step(state, decoded[done : last + 1], catalogue, NOW, params)
            state, done = result.state, last + 1
            expected = result.delta
            assert expected is not None
            assert delta["cause"]["event_ids"][-1] == expected.cause.event_ids[-1]
            assert _items(delta["added"]) == [(i, r) for i, _, r in expected.added]
            assert _items(delta["removed"], "previous_rank") == list(expected.removed)
            assert [(x["item_id"], x["rank"], x["previous_rank"]) for x in delta["reranked"]] == [
                (i, r, p) for i, _, r, p in expected.reranked
            ]
            np.testing.assert_allclose(
                [x["score"] for x in delta["top_k"]], [s for _, s in expected.top_k], atol=2e-6
            )
        assert done == len(decoded), "every event is in some delta's batch"
        assert [x["item_id"] for x in deltas[-1]["top_k"]] == [i for i, _ in stored[user].top_k]
        assert stored[user].events_applied == len(decoded)
        np.testing.assert_allclose(
            stored[user].interests[0].hidden, state.interests[0].hidden, rtol=1e-5, atol=1e-6
        )


def test_bad_records_go_to_dead_letters_and_the_worker_keeps_going(pipeline: Pipeline) -> None:
    items, events = scenario("b-", users=1, events=3)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    bad = bad_behaviour_records()
    positions = pipeline.send(topics.behaviours, [(k, v) for _, k, v, _ in bad])
    pipeline.send(topics.behaviours, event_records(events))

    letters = {
        (d["source"]["partition"], d["source"]["offset"]): d
        for _, d in pipeline.dead_letters()
        if d["source"]["topic"] == topics.behaviours
    }
    for (name, key, value, code), pos in zip(bad, positions, strict=True):
        letter = letters.get(pos)
        assert letter is not None, f"no dead letter for {name}"
        assert letter["reason"] == code, name
        assert base64.b64decode(letter["value_b64"]) == value
        assert base64.b64decode(letter["key_b64"]) == key
        assert letter["message"]
    # the good events after the bad ones were applied
    deltas = pipeline.deltas(events[0]["user_id"])
    assert deltas and deltas[-1]["interest"]["events"] == len(events)


def test_a_duplicate_event_is_applied_once(pipeline: Pipeline) -> None:
    items, events = scenario("d-", users=1, events=2)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    first, second = events
    pipeline.send(topics.behaviours, event_records([first]))
    dup = {**first, "type": "click"}  # same event_id, other content: still the same event
    positions = pipeline.send(topics.behaviours, event_records([dup, second]))

    reasons = {(d["source"]["partition"], d["source"]["offset"]): d["reason"]
               for _, d in pipeline.dead_letters()}  # fmt: skip
    assert reasons[positions[0]] == "duplicate"
    store = pipeline.store()
    state = store.get_states([first["user_id"]])[first["user_id"]]
    assert state.events_applied == 2
    assert state.recent_event_ids.count(first["event_id"]) == 1


def test_an_event_waits_for_its_item_then_applies(pipeline: Pipeline) -> None:
    items, events = scenario("p-", users=1, events=1)
    topics = pipeline.settings.topics
    (event,) = events
    target = next(i for i in items if i["item_id"] == event["item_id"])
    pipeline.send(topics.items, item_records([i for i in items if i is not target]))
    pipeline.send(topics.behaviours, event_records(events))
    store = pipeline.store()
    waiting = store.get_states([event["user_id"]])[event["user_id"]]
    assert [p.event_id for p in waiting.pending] == [event["event_id"]]

    pipeline.send(topics.items, item_records([target]))
    deltas = pipeline.deltas(event["user_id"])
    assert deltas[-1]["cause"]["event_ids"] == [event["event_id"]]
    assert deltas[-1]["added"]
    after = store.get_states([event["user_id"]])[event["user_id"]]
    assert after.pending == () and after.events_applied == 1
    assert event["item_id"] in after.consumed


def test_a_tombstone_removes_the_item_from_recommendations(pipeline: Pipeline) -> None:
    items, events = scenario("t-", users=1, events=4)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    pipeline.send(topics.behaviours, event_records(events))
    user = events[0]["user_id"]
    before = pipeline.deltas(user)[-1]
    gone = before["top_k"][0]["item_id"]

    pipeline.send(topics.items, [(gone.encode(), None)])
    last = pipeline.deltas(user)[-1]
    assert last["version"] > before["version"]
    assert last["cause"]["kind"] == "items" and last["cause"]["item_ids"] == [gone]
    assert {"item_id": gone, "previous_rank": 0} in last["removed"]
    assert gone not in [x["item_id"] for x in last["top_k"]]
    assert len(last["top_k"]) == len(before["top_k"])


def test_inline_item_text_is_encoded_on_arrival(pipeline: Pipeline) -> None:
    items, _ = scenario("n-", users=1, events=1)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    event = {
        "user_id": "n-reader", "item_id": "n-unlisted", "type": "like", "ts": 1_700_000_000,
        "text": "A crew of astronauts drifts through a nebula on a failing starship",
    }  # fmt: skip
    pipeline.send(topics.behaviours, event_records([event]))
    (delta,) = pipeline.deltas("n-reader")
    assert len(delta["cause"]["event_ids"]) == 1
    assert delta["interest"]["mid_term"][0][0] == "space"
    assert "n-unlisted" not in [x["item_id"] for x in delta["top_k"]]


def test_a_snapshot_on_demand_restates_each_users_list(pipeline: Pipeline) -> None:
    items, events = scenario("s-", users=2, events=6)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    pipeline.send(topics.behaviours, event_records(events))
    users = sorted({e["user_id"] for e in events})

    answers = request_snapshots(pipeline.settings, pipeline.bootstrap, [*users, "s-nobody"])

    for user in users:
        last = [d for d in pipeline.deltas(user) if d["cause"]["kind"] != "snapshot"][-1]
        snap = answers[user]
        assert snap["cause"]["kind"] == "snapshot" and snap["cause"]["request_id"]
        # A later batch that leaves the list's order as it was publishes no
        # delta (README: only a changed list is published), so the snapshot
        # may be newer than the last delta: then the items are the same, in
        # the same order, and only their scores may have moved.
        assert snap["version"] >= last["version"]
        if snap["version"] == last["version"]:
            assert snap["top_k"] == last["top_k"]
        assert [x["item_id"] for x in snap["top_k"]] == [x["item_id"] for x in last["top_k"]]
        assert snap["added"] == snap["removed"] == []
    assert answers["s-nobody"]["version"] == 0 and answers["s-nobody"]["top_k"] == []

    env = {"INTEREST_STREAM_TOPIC_PREFIX": pipeline.settings.topic_prefix}
    shown = CliRunner().invoke(main, ["snapshot", users[0], "--bootstrap", pipeline.bootstrap],
                               env=env)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    (line,) = shown.stdout.splitlines()
    asked = json.loads(line)
    assert asked["top_k"] == answers[users[0]]["top_k"]
    assert asked["cause"]["request_id"] != answers[users[0]]["cause"]["request_id"]


def _items(rows: list[dict], rank: str = "rank") -> list[tuple[str, int]]:
    return [(x["item_id"], x[rank]) for x in rows]


def _overwrite_state(store: Store, user: str, blob: bytes | None) -> None:
    """Put raw bytes in ``user``'s state row (None: delete the row), behind the store's back."""
    from streams.stores.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        with store._lock:
            if blob is None:
                store._db.execute("DELETE FROM user_states WHERE user_id = ?", (user,))
            else:
                store._db.execute(
                    "INSERT OR REPLACE INTO user_states (user_id, version, state) VALUES (?, 1, ?)",
                    (user, blob),
                )
        return
    table = f"{store.keyspace}.user_states"
    if blob is None:
        store._session.execute(f"DELETE FROM {table} WHERE user_id = %s", (user,))
    else:
        store._session.execute(
            f"INSERT INTO {table} (user_id, version, state) VALUES (%s, 1, %s)", (user, blob)
        )


def test_an_unreadable_state_keeps_its_events_for_a_redrive(pipeline: Pipeline) -> None:
    """Never overwritten, never a halted partition; the events wait in dead letters."""
    items, events = scenario("q-", users=2, events=4)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    broken, healthy = sorted({e["user_id"] for e in events})
    store = pipeline.store()
    _overwrite_state(store, broken, b"ISUS\x09\x00written by a newer worker")
    mine = [e for e in events if e["user_id"] == broken]
    positions = pipeline.send(topics.behaviours, event_records(events))

    letters = {
        (d["source"]["partition"], d["source"]["offset"]): d["reason"]
        for _, d in pipeline.dead_letters()
        if d["reason"] == "state_unreadable"
    }
    wanted = [pos for e, pos in zip(events, positions, strict=True) if e["user_id"] == broken]
    assert all(letters.get(pos) == "state_unreadable" for pos in wanted)
    assert pipeline.deltas(healthy), "the other user in the same partitions went on"
    assert not pipeline.deltas(broken)

    _overwrite_state(store, broken, None)  # the operator repairs the row
    env = {"INTEREST_STREAM_TOPIC_PREFIX": pipeline.settings.topic_prefix}
    args = ["redrive", "--reason", "state_unreadable", "--bootstrap", pipeline.bootstrap]
    done = CliRunner().invoke(main, args, env=env)
    assert done.exit_code == 0, done.output
    assert f"'state_unreadable': {len(mine)}" in done.output
    wait_for(lambda: store.get_states([broken]).get(broken) is not None, "re-driven state")
    wait_for(lambda: store.get_states([broken])[broken].events_applied == len(mine), "all applied")

    again = CliRunner().invoke(main, args, env=env)  # a second re-drive applies nothing twice
    assert again.exit_code == 0, again.output

    def duplicates() -> int:
        letters = [d for _, d in pipeline.dead_letters() if d["reason"] == "duplicate"]
        return sum(json.loads(base64.b64decode(d["value_b64"]))["user_id"] == broken
                   for d in letters)  # fmt: skip

    wait_for(lambda: duplicates() == len(mine), "the second copies become duplicates")
    state = store.get_states([broken])[broken]
    assert state.events_applied == len(mine)
    assert sorted(state.recent_event_ids) == sorted(e["event_id"] for e in mine)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_query_starts_a_new_user_and_deltas_carry_the_interest_structure(
    pipeline: Pipeline,
) -> None:
    """Cold start from one natural-language query, through the CLI; negatives push down."""
    items, events = scenario("q-", users=1, events=8)
    topics = pipeline.settings.topics
    pipeline.send(topics.items, item_records(items))
    pipeline.send(topics.behaviours, event_records(events))
    # Other tests' items share the worker: same workload seed, so an id's suffix gives its tag.
    tags = {i["item_id"].removeprefix("q-"): i["tags"][0] for i in items}

    # An event-driven delta carries topics (learned online), levels and interests.
    last = pipeline.deltas(events[0]["user_id"])[-1]
    interest = last["interest"]
    assert last["schema"] == codec.DELTA_SCHEMA
    assert interest["topics"] and all(t["label"] for t in interest["topics"])
    assert set(interest["levels"]) == {"short", "mid", "long"}
    assert interest["interests"] and abs(sum(i["weight"] for i in interest["interests"]) - 1) < 0.01

    env = {"INTEREST_STREAM_TOPIC_PREFIX": pipeline.settings.topic_prefix}
    text = "astronauts on a starship in deep space, nothing with ghosts or haunted houses"
    shown = CliRunner().invoke(main, ["query", "q-newcomer", text, "--bootstrap",
                                      pipeline.bootstrap], env=env)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    delta = json.loads(shown.stdout.splitlines()[-1])
    phrases = delta["interest"]["query"]["phrases"]
    assert {p["polarity"] for p in phrases} == {"positive", "negative"}
    assert "phrase  negative" in shown.stdout
    top = [tags.get(x["item_id"].split("-", 1)[-1], "?") for x in delta["top_k"]]
    assert top and top.count("space") >= len(top) - 1 and "horror" not in top, top

    # A query with no interest phrase in it is a dead letter, not a crash.
    bad = CliRunner().invoke(main, ["query", "q-newcomer", "the and of", "--bootstrap",
                                    pipeline.bootstrap], env=env)  # fmt: skip
    assert bad.exit_code != 0 and "invalid_query" in bad.output
