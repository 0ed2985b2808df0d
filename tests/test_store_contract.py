"""The contract every store passes: embedded SQLite (memory, file) and Cassandra.

The Cassandra variants need the session fixtures ``cassandra_engine`` and
``cassandra_secure_engine`` (password authentication and TLS, logged in as
a non-superuser role) from ``tests.engine_fixtures``; each test gets a fresh
keyspace, dropped after it. A test that needs two stores on one backend (two
workers) takes ``open_store`` and calls it twice; the ``:memory:`` variant
hands back its one store again, as each ``:memory:`` store is a database of
its own (two workers can only share it as one object).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from models.interest.composition import Interest
from models.state import PendingEvent, UserState, encode_state
from streams.stores.base import Store, StoredBlob, StoredItem
from streams.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from deploy.engines.common import EngineInfo
    from streams.stores.cassandra import CassandraStore
    from tests.engine_fixtures import SecureCassandra


#: Opens one more store on a variant's backend (same database or keyspace).
Opener = Callable[[], Store]


@contextmanager
def _sqlite_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqliteStore] = []

    def open_store() -> Store:
        if not opened:
            opened.append(SqliteStore(":memory:"))
        return opened[0]

    try:
        yield open_store
    finally:
        for s in opened:
            s.close()


@contextmanager
def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqliteStore] = []

    def open_store() -> Store:
        opened.append(SqliteStore(tmp_path / "db" / "state.sqlite"))
        return opened[-1]

    try:
        yield open_store
    finally:
        for s in opened:
            s.close()


@contextmanager
def _cassandra(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    from streams.stores.cassandra import CassandraStore

    engine = cassandra_engine_for(request)
    keyspace = f"contract_{uuid.uuid4().hex[:12]}"
    with _cassandra_stores(lambda: CassandraStore(engine.host, engine.port, keyspace)) as o:
        yield o


@contextmanager
def _cassandra_secure(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    from streams.stores.cassandra import CassandraStore

    secure: SecureCassandra = request.getfixturevalue("cassandra_secure_engine")
    keyspace = f"contract_{uuid.uuid4().hex[:12]}"

    def connect() -> CassandraStore:
        return CassandraStore(
            secure.engine.host,
            secure.engine.port,
            keyspace,
            username=secure.username,
            password=secure.password,
            ssl_ca_file=str(secure.ca_file),
        )

    # drop_keyspace is allowed: the role owns the keyspace it created
    with _cassandra_stores(connect) as o:
        yield o


@contextmanager
def _cassandra_stores(connect: Callable[[], CassandraStore]) -> Iterator[Opener]:
    """Stores on one throwaway keyspace, dropped (by the first) and closed after the test."""
    opened: list[CassandraStore] = []

    def open_store() -> Store:
        opened.append(connect())
        return opened[-1]

    try:
        yield open_store
    finally:
        if opened:
            opened[0].drop_keyspace()
        for s in opened:
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
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one variant, all on the same backend; closed after the test."""
    with STORES[request.param](request, tmp_path) as opener:
        yield opener


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()


def state(user: str, version: int, **kw) -> UserState:
    vec = np.arange(4, dtype=np.float32) * version
    interests = (Interest(vec, None, 1.0, None),)
    return UserState(user, version=version, interests=interests, updater="t", **kw)


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


# -- shared-model blobs -------------------------------------------------------


def test_blob_round_trip(store: Store) -> None:
    written = store.put_blob("topics", b"model \x00\xff bytes", 0)
    assert written == StoredBlob("topics", 1, b"model \x00\xff bytes")
    assert store.get_blob("topics") == written
    assert isinstance(store.get_blob("topics").data, bytes)
    assert store.put_blob("empty", b"", 0) == StoredBlob("empty", 1, b"")
    assert store.get_blob("empty") == StoredBlob("empty", 1, b"")


def test_a_blob_never_written_is_none(store: Store) -> None:
    assert store.get_blob("topics") is None
    store.put_blob("factors", b"f", 0)
    assert store.get_blob("topics") is None, "blobs are independent by name"
    assert store.get_blob("factors").data == b"f"


def test_blob_versions_increase_by_one(store: Store) -> None:
    seen = 0
    for i in range(1, 6):
        written = store.put_blob("topics", b"v%d" % i, seen)
        assert written is not None and written.version == seen + 1 == i
        seen = written.version
    assert store.get_blob("topics") == StoredBlob("topics", 5, b"v5")


def test_blob_cas_refuses_a_stale_version_and_keeps_the_winner(store: Store) -> None:
    store.put_blob("topics", b"first", 0)
    assert store.put_blob("topics", b"late first", 0) is None  # version 1 exists
    assert store.get_blob("topics") == StoredBlob("topics", 1, b"first")
    assert store.put_blob("topics", b"winner", 1) == StoredBlob("topics", 2, b"winner")
    assert store.put_blob("topics", b"loser", 1) is None  # read 1 too, came second
    assert store.put_blob("topics", b"ahead", 5) is None  # not a version that exists
    assert store.get_blob("topics") == StoredBlob("topics", 2, b"winner")


def test_concurrent_writers_of_one_version_have_exactly_one_winner(store: Store) -> None:
    store.put_blob("topics", b"base", 0)
    writers = 6
    start = threading.Barrier(writers)

    def write(i: int) -> StoredBlob | None:
        start.wait()
        return store.put_blob("topics", b"writer %d" % i, 1)

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(write, range(writers)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    assert winners[0].version == 2
    assert store.get_blob("topics") == winners[0]


def test_two_stores_on_one_backend_share_blobs(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    assert a.put_blob("topics", b"from a", 0) is not None
    assert b.get_blob("topics") == StoredBlob("topics", 1, b"from a")
    assert b.put_blob("topics", b"from b", 1) == StoredBlob("topics", 2, b"from b")
    assert a.get_blob("topics") == StoredBlob("topics", 2, b"from b")
    # a worker that updates from the version it read before b wrote loses
    assert a.put_blob("topics", b"stale a", 1) is None
    assert b.get_blob("topics") == StoredBlob("topics", 2, b"from b")


def test_a_large_blob_round_trips(store: Store) -> None:
    rng = np.random.default_rng(7)
    first, second = rng.bytes(2 * 1024 * 1024), rng.bytes(2 * 1024 * 1024)
    assert store.put_blob("factors", first, 0) is not None
    assert store.get_blob("factors") == StoredBlob("factors", 1, first)
    assert store.put_blob("factors", second, 1) is not None  # the update path, as large
    assert store.get_blob("factors") == StoredBlob("factors", 2, second)


def test_bad_blob_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        store.put_blob("topics", b"x", -1)
    with pytest.raises(ValueError, match="blob name"):
        store.put_blob("", b"x", 0)
    with pytest.raises(ValueError, match="blob name"):
        store.get_blob("")
    with pytest.raises(TypeError, match="bytes"):
        store.put_blob("topics", "text, not bytes", 0)  # type: ignore[arg-type]
    assert store.get_blob("topics") is None


def test_file_store_blobs_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a = SqliteStore(path)
    a.put_blob("topics", b"v1", 0)
    a.put_blob("topics", b"v2", 1)
    a.close()
    b = SqliteStore(path)
    assert b.get_blob("topics") == StoredBlob("topics", 2, b"v2")
    assert b.put_blob("topics", b"stale", 1) is None
    assert b.put_blob("topics", b"v3", 2) is not None
    b.close()


def test_a_file_made_before_blobs_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    old = SqliteStore(path)
    old.put_states([state("u1", 3)])
    old.close()
    with sqlite3.connect(path) as db:  # as the previous version of the schema left it
        db.execute("DROP TABLE blobs")
    store = SqliteStore(path)
    assert store.get_blob("topics") is None
    assert store.put_blob("topics", b"v1", 0) is not None
    assert store.get_states(["u1"])["u1"].version == 3
    store.close()


def test_a_keyspace_made_before_blobs_gains_the_table(
    cassandra_engine: EngineInfo, tmp_path: Path
) -> None:
    from cassandra.cluster import Cluster

    from streams.stores.cassandra import SCHEMA_FILE, CassandraStore, schema_statements
    from streams.stores.replication import DEFAULT_REPLICATION, replication_cql

    before, found, _ = SCHEMA_FILE.read_text().partition(
        "CREATE TABLE IF NOT EXISTS {keyspace}.blobs"
    )
    assert found, "the blobs table moved: update this test's copy of the previous schema"
    keyspace = f"contract_{uuid.uuid4().hex[:12]}"
    cluster = Cluster([cassandra_engine.host], port=cassandra_engine.port, protocol_version=5)
    try:
        session = cluster.connect()
        for statement in schema_statements(before, keyspace, replication_cql(DEFAULT_REPLICATION)):
            session.execute(statement, timeout=120)
        tables = {
            r.table_name
            for r in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
            )
        }
        assert "blobs" not in tables and "user_states" in tables
        session.execute(
            f"INSERT INTO {keyspace}.user_states (user_id, version, state) VALUES (%s, %s, %s)",
            ("u1", 3, encode_state(state("u1", 3))),
        )
        store = CassandraStore(cassandra_engine.host, cassandra_engine.port, keyspace)
        try:
            assert store.get_blob("topics") is None
            assert store.put_blob("topics", b"v1", 0) == StoredBlob("topics", 1, b"v1")
            assert store.get_states(["u1"])["u1"].version == 3
        finally:
            store.drop_keyspace()
            store.close()
    finally:
        cluster.shutdown()


# -- Cassandra: a blob CAS whose outcome the client did not hear ---------------


@pytest.fixture
def cassandra_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple]:
    with _cassandra(request, tmp_path) as open_store:
        yield open_store(), open_store()


def _cas_times_out(
    monkeypatch: pytest.MonkeyPatch,
    store: CassandraStore,
    *,
    commit: bool,
    times: int = 1,
    meanwhile: Callable[[], object] | None = None,
) -> list[str]:
    """Make the next ``times`` blob CAS statements of ``store`` report a WriteTimeout.

    ``commit``: the CAS reaches Cassandra first (it is applied, the answer is
    lost); otherwise it never does. ``meanwhile`` runs before the timeout is
    raised (another worker writing). Returns the log of what was simulated.
    """
    from cassandra import WriteTimeout

    original = store._execute  # type: ignore[attr-defined]
    cas = {store._insert_blob, store._update_blob}  # type: ignore[attr-defined]
    simulated: list[str] = []

    def execute(statement: object, params: tuple) -> object:
        if statement not in cas or len(simulated) >= times:
            return original(statement, params)
        if commit:
            original(statement, params)
        if meanwhile is not None:
            meanwhile()
        simulated.append("committed" if commit else "lost")
        raise WriteTimeout("simulated", write_type=5)  # 5: CAS

    monkeypatch.setattr(store, "_execute", execute)
    return simulated


@pytest.mark.parametrize("expected", [0, 1], ids=["insert", "update"])
def test_a_timed_out_blob_cas_that_committed_is_found(
    cassandra_pair: tuple, monkeypatch: pytest.MonkeyPatch, expected: int
) -> None:
    a, _ = cassandra_pair
    if expected:
        a.put_blob("topics", b"v1", 0)
    simulated = _cas_times_out(monkeypatch, a, commit=True)
    assert a.put_blob("topics", b"mine", expected) == StoredBlob("topics", expected + 1, b"mine")
    assert simulated == ["committed"]
    assert a.get_blob("topics") == StoredBlob("topics", expected + 1, b"mine")


@pytest.mark.parametrize("expected", [0, 1], ids=["insert", "update"])
def test_a_timed_out_blob_cas_that_did_not_commit_is_retried(
    cassandra_pair: tuple, monkeypatch: pytest.MonkeyPatch, expected: int
) -> None:
    a, _ = cassandra_pair
    if expected:
        a.put_blob("topics", b"v1", 0)
    simulated = _cas_times_out(monkeypatch, a, commit=False, times=2)
    assert a.put_blob("topics", b"mine", expected) == StoredBlob("topics", expected + 1, b"mine")
    assert simulated == ["lost", "lost"]
    assert a.get_blob("topics") == StoredBlob("topics", expected + 1, b"mine")


def test_a_timed_out_blob_cas_that_another_writer_beat_is_refused(
    cassandra_pair: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cassandra_pair
    a.put_blob("topics", b"v1", 0)
    # b writes version 2 while a's CAS is lost; a must not take b's write for its own
    _cas_times_out(monkeypatch, a, commit=False, meanwhile=lambda: b.put_blob("topics", b"b", 1))
    assert a.put_blob("topics", b"a", 1) is None
    assert b.get_blob("topics") == StoredBlob("topics", 2, b"b")


def test_a_blob_cas_that_never_settles_is_a_contention_error(
    cassandra_pair: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cassandra import WriteTimeout

    from streams.stores.cassandra import StoreContentionError

    a, _ = cassandra_pair
    a.put_blob("topics", b"v1", 0)
    _cas_times_out(monkeypatch, a, commit=False, times=10_000)
    with pytest.raises(StoreContentionError, match="topics") as caught:
        a.put_blob("topics", b"never", 1)
    assert isinstance(caught.value.__cause__, WriteTimeout)
    assert a.get_blob("topics") == StoredBlob("topics", 1, b"v1")
