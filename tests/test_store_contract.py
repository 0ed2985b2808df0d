"""The contract every store passes: embedded SQLite (memory, file) and Cassandra.

The Cassandra variants need the session fixtures ``cassandra_engine`` and
``cassandra_secure_engine`` (password authentication and TLS, logged in as
a non-superuser role) from ``tests.engine_fixtures``; each test gets a fresh
keyspace, dropped after it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from models.state import PendingEvent, UserState, encode_state
from streams.stores.base import Store, StoredItem
from streams.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from deploy.engines.common import EngineInfo
    from tests.engine_fixtures import SecureCassandra


@contextmanager
def _sqlite_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = SqliteStore(":memory:")
    yield s
    s.close()


@contextmanager
def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "db" / "state.sqlite")
    yield s
    s.close()


@contextmanager
def _cassandra(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    from streams.stores.cassandra import CassandraStore

    engine = cassandra_engine_for(request)
    s = CassandraStore(engine.host, engine.port, f"contract_{uuid.uuid4().hex[:12]}")
    try:
        yield s
    finally:
        s.drop_keyspace()
        s.close()


@contextmanager
def _cassandra_secure(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    from streams.stores.cassandra import CassandraStore

    secure: SecureCassandra = request.getfixturevalue("cassandra_secure_engine")
    s = CassandraStore(
        secure.engine.host,
        secure.engine.port,
        f"contract_{uuid.uuid4().hex[:12]}",
        username=secure.username,
        password=secure.password,
        ssl_ca_file=str(secure.ca_file),
    )
    try:
        yield s
    finally:
        s.drop_keyspace()  # allowed: the role owns the keyspace it created
        s.close()


def cassandra_engine_for(request: pytest.FixtureRequest) -> EngineInfo:
    """The session's Cassandra, started on first use (``tests.engine_fixtures``)."""
    return request.getfixturevalue("cassandra_engine")


STORES = {
    "sqlite-memory": _sqlite_memory,
    "sqlite-file": _sqlite_file,
    "cassandra": _cassandra,
    "cassandra-auth-tls": _cassandra_secure,
}


@pytest.fixture(params=sorted(STORES), ids=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with STORES[request.param](request, tmp_path) as s:
        yield s


def state(user: str, version: int, **kw) -> UserState:
    vec = np.arange(4, dtype=np.float32) * version
    return UserState(user, version=version, interest=vec, updater="t", **kw)


def item(item_id: str, seed: int, tags: tuple[str, ...] = ("x",)) -> StoredItem:
    vec = np.random.default_rng(seed).standard_normal(4).astype(np.float32)
    return StoredItem(item_id, vec, f"title {item_id}", tags, f"h{seed}")


def test_state_round_trip(store: Store) -> None:
    s = state("u1", 1, top_k=(("i1", 0.5),), offsets={"b[0]": 7}, consumed=frozenset({"i0"}))
    assert store.put_states([s]) == []
    got = store.get_states(["u1"])["u1"]
    assert encode_state(got) == encode_state(s)


def test_missing_users_are_absent(store: Store) -> None:
    store.put_states([state("u1", 1)])
    assert set(store.get_states(["u1", "nobody"])) == {"u1"}
    assert store.get_states([]) == {}


def test_batch_put_and_get(store: Store) -> None:
    states = [state(f"u{i}", 1) for i in range(1200)]
    assert store.put_states(states) == []
    got = store.get_states([s.user_id for s in states] + ["u0"])
    assert len(got) == 1200
    assert got["u1199"].version == 1


def test_version_never_goes_backwards(store: Store) -> None:
    store.put_states([state("u1", 2)])
    # fenced per user: the stale u1 does not hold back u2 of the same batch
    assert store.put_states([state("u1", 1), state("u2", 1)]) == ["u1"]
    assert store.get_states(["u2"])["u2"].version == 1
    assert store.put_states([state("u1", 2)]) == ["u1"]  # equal is stale too
    assert store.get_states(["u1"])["u1"].version == 2
    assert store.put_states([state("u1", 3)]) == []
    assert store.get_states(["u1"])["u1"].version == 3


def test_versions_are_the_stored_versions(store: Store) -> None:
    store.put_states([state("u1", 3), state("u2", 1)])
    store.put_states([state("u1", 2)])  # fenced: u1 stays at 3
    assert store.versions(["u1", "u2", "nobody"]) == {"u1": 3, "u2": 1}
    assert store.versions([]) == {}


def test_same_user_twice_in_a_batch_is_written_in_order(store: Store) -> None:
    assert store.put_states([state("u1", 1), state("u1", 2)]) == []
    assert store.get_states(["u1"])["u1"].version == 2
    assert store.put_states([state("u1", 4), state("u1", 3)]) == ["u1"]
    assert store.get_states(["u1"])["u1"].version == 4


def test_reads_do_not_change_state(store: Store) -> None:
    store.put_states([state("u1", 1)])
    a = encode_state(store.get_states(["u1"])["u1"])
    b = encode_state(store.get_states(["u1"])["u1"])
    assert a == b


def test_items_round_trip_and_removal(store: Store) -> None:
    store.put_items([item("i1", 1), item("i2", 2, ("a", "b"))])
    got = store.get_items(["i1", "i2", "nope"])
    assert set(got) == {"i1", "i2"}
    np.testing.assert_array_equal(got["i1"].vector, item("i1", 1).vector)
    assert got["i2"].tags == ("a", "b") and got["i2"].content_hash == "h2"
    store.put_items([StoredItem("i1", None)])
    assert set(store.get_items(["i1", "i2"])) == {"i2"}
    assert [i.item_id for i in store.all_items()] == ["i2"]


def test_item_change_feed(store: Store) -> None:
    changes, cursor = store.items_changed_since(0)
    assert changes == [] and cursor == 0
    store.put_items([item("i1", 1), item("i2", 2)])
    changes, c1 = store.items_changed_since(cursor)
    assert [c.item_id for c in changes] == ["i1", "i2"]
    store.put_items([StoredItem("i1", None)])
    changes, c2 = store.items_changed_since(c1)
    assert [(c.item_id, c.vector) for c in changes] == [("i1", None)]
    assert store.items_changed_since(c2) == ([], c2)


def test_change_feed_reports_an_item_once_at_its_latest_change(store: Store) -> None:
    store.put_items([item("i1", 1), item("i2", 2)])
    store.put_items([item("i1", 3)])
    changes, cursor = store.items_changed_since(0)
    assert [c.item_id for c in changes] == ["i2", "i1"]
    np.testing.assert_array_equal(changes[1].vector, item("i1", 3).vector)
    assert store.items_changed_since(cursor) == ([], cursor)


def test_watchers_follow_the_latest_state(store: Store) -> None:
    s1 = state("u1", 1, top_k=(("i1", 0.9), ("i2", 0.8)))
    s2 = state("u2", 1, pending=(PendingEvent("i3", "view", 0.0, 1.0, "e"),))
    store.put_states([s1, s2])
    assert store.watchers(["i1", "i3", "i9"]) == {"i1": {"u1"}, "i3": {"u2"}}
    store.put_states([replace(s1, version=2, top_k=(("i2", 0.8),))])
    assert store.watchers(["i1", "i2"]) == {"i2": {"u1"}}
    # a fenced (stale) write leaves the watch list alone
    store.put_states([replace(s1, version=1, top_k=(("i9", 0.1),))])
    assert store.watchers(["i9"]) == {}


def test_ping_answers_quickly_and_changes_nothing(store: Store) -> None:
    store.put_states([state("u1", 1)])
    before = encode_state(store.get_states(["u1"])["u1"])
    started = time.monotonic()
    for _ in range(5):
        assert store.ping() is None
    store.ping(timeout=1.0)
    assert time.monotonic() - started < 5, "the readiness probe calls it every few seconds"
    assert encode_state(store.get_states(["u1"])["u1"]) == before


def test_file_store_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a = SqliteStore(path)
    a.put_states([state("u1", 5)])
    a.put_items([item("i1", 1)])
    a.close()
    b = SqliteStore(path)
    assert b.get_states(["u1"])["u1"].version == 5
    assert [i.item_id for i in b.all_items()] == ["i1"]
    b.close()
