"""Fencing between two workers that write the same users, on both stores.

Worker A owns a partition and writes v1..v3; worker B is a zombie (it lost
the partition, or replays an old batch) and tries older versions. Then
threads race with increasing versions: the stored version ends at the
maximum and never goes down. The same scenarios run on SQLite (two
connections to one file) and on Cassandra (two clients on one keyspace,
which needs the ``cassandra_engine`` fixture of ``tests.engine_fixtures``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from models.interest.composition import Interest
from models.state import PendingEvent, UserState, encode_state
from streams.stores.base import Store
from streams.stores.sqlite import SqliteStore
from tests.test_store_contract import cassandra_engine_for

Pair = tuple[Store, Store]


@contextmanager
def _sqlite_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    path = tmp_path / "shared.sqlite"
    a, b = SqliteStore(path), SqliteStore(path)
    yield a, b
    a.close()
    b.close()


@contextmanager
def _cassandra_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    from streams.stores.cassandra import CassandraStore

    engine = cassandra_engine_for(request)
    keyspace = f"fencing_{uuid.uuid4().hex[:12]}"
    a = CassandraStore(engine.host, engine.port, keyspace)
    b = CassandraStore(engine.host, engine.port, keyspace)  # schema creation is idempotent
    try:
        yield a, b
    finally:
        b.close()
        a.drop_keyspace()
        a.close()


PAIRS: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[Pair]]] = {
    "sqlite": _sqlite_pair,
    "cassandra": _cassandra_pair,
}


@pytest.fixture(params=sorted(PAIRS), ids=sorted(PAIRS))
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    with PAIRS[request.param](request, tmp_path) as pair:
        yield pair


def state(user: str, version: int, writer: str = "a") -> UserState:
    """A state whose content says who wrote which version, and watches item i<version>."""
    return UserState(
        user,
        version=version,
        interests=(Interest(np.full(4, version, dtype=np.float32), None, 1.0, None),),
        updater=writer,
        top_k=((f"i{version}", 1.0),),
        offsets={"behaviours[0]": version * 10},
    )


def test_zombie_cannot_overwrite_newer_state(workers: Pair) -> None:
    a, b = workers
    for version in (1, 2, 3):
        assert a.put_states([state("u1", version), state("u2", version)]) == []
    newest = {u: encode_state(s) for u, s in a.get_states(["u1", "u2"]).items()}

    # B lost the partition after v2: its v2 of u1 is stale whatever it holds
    assert b.put_states([state("u1", 2, writer="zombie")]) == ["u1"]
    # ... and replaying an old batch is refused user by user
    replay = [state("u1", 1, "zombie"), state("u2", 3, "zombie"), state("u3", 1, "zombie")]
    assert b.put_states(replay) == ["u1", "u2"]

    for store in (a, b):
        got = store.get_states(["u1", "u2", "u3"])
        assert {u: encode_state(got[u]) for u in ("u1", "u2")} == newest
        assert got["u3"].updater == "zombie"  # a user nobody else wrote is B's to write
        assert store.watchers(["i1", "i2", "i3"]) == {"i1": {"u3"}, "i3": {"u1", "u2"}}

    # A moves on; B's next stale attempt is fenced again
    assert a.put_states([state("u1", 4)]) == []
    assert b.put_states([state("u1", 4, "zombie")]) == ["u1"]
    assert b.get_states(["u1"])["u1"].updater == "a"


def test_handover_then_the_old_owner_is_fenced(workers: Pair) -> None:
    a, b = workers
    assert a.put_states([state("u1", 1), state("u1", 2)]) == []
    # rebalance: B takes the partition over and applies the next batch
    assert b.put_states([state("u1", 3, "b")]) == []
    # A has not noticed yet and writes what it computed from v2
    assert a.put_states([state("u1", 3, "a"), state("u2", 1, "a")]) == ["u1"]
    got = a.get_states(["u1"])["u1"]
    assert (got.version, got.updater) == (3, "b")


def test_racing_writers_never_decrease_the_version(workers: Pair) -> None:
    a, b = workers
    threads_per_store, top = 2, 24
    users = ["r1", "r2"]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2 * threads_per_store)

    def writer(store: Store, offset: int) -> None:
        try:
            barrier.wait()
            seen = dict.fromkeys(users, 0)
            # every thread walks up the same versions, so most writes collide
            for version in range(1 + offset % 2, top + 1):
                rejected = store.put_states([state(u, version, f"w{offset}") for u in users])
                got = store.get_states(users)
                for user in users:
                    stored = got[user].version
                    assert stored >= version  # written, or refused because it was there
                    assert stored >= seen[user], f"{user} went back {seen[user]} -> {stored}"
                    if user not in rejected and stored == version:
                        # an equal version is refused, so this one is ours
                        assert got[user].updater == f"w{offset}"
                    seen[user] = stored
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, i * threads_per_store + j))
        for i, store in enumerate((a, b))
        for j in range(threads_per_store)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    final = a.get_states(users)
    assert {u: s.version for u, s in final.items()} == dict.fromkeys(users, top)
    assert {u: encode_state(s) for u, s in b.get_states(users).items()} == {
        u: encode_state(s) for u, s in final.items()
    }
    # the watch index follows the winning state, whatever order index writes landed in
    items = [f"i{v}" for v in range(1, top + 1)]
    assert a.watchers(items) == {f"i{top}": set(users)}


@pytest.fixture
def cassandra_ttl(request: pytest.FixtureRequest) -> Iterator[Store]:
    from streams.stores.cassandra import CassandraStore

    engine = cassandra_engine_for(request)
    s = CassandraStore(engine.host, engine.port, f"ttl_{uuid.uuid4().hex[:12]}", ttl_seconds=TTL)
    try:
        yield s
    finally:
        s.drop_keyspace()
        s.close()


#: Cassandra counts TTLs in whole seconds from the write's second, so a cell
#: lives between TTL - 1 and TTL seconds; the checks below keep 0.4 s clear.
TTL = 3


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_inactive_users_expire(cassandra_ttl: Store) -> None:
    store = cassandra_ttl
    pending = (PendingEvent("i9", "view", 0.0, 1.0, "e1"),)
    t0 = time.monotonic()
    store.put_states([state("idle", 1), UserState("busy", version=1, pending=pending)])
    _sleep_until(t0 + 2.0)
    t1 = time.monotonic()
    store.put_states([UserState("busy", version=2, pending=pending)])  # renews the TTL
    _sleep_until(max(t0 + TTL + 0.4, time.monotonic()))
    assert time.monotonic() < t1 + TTL - 1 - 0.2, "too slow to observe the renewed TTL"
    assert set(store.get_states(["idle", "busy"])) == {"busy"}
    assert store.watchers(["i1", "i9"]) == {"i9": {"busy"}}
    _sleep_until(t1 + TTL + 0.4)
    assert store.get_states(["idle", "busy"]) == {}
    assert store.watchers(["i9"]) == {}
    # an expired user starts again from version 1, and its watch entries work again
    assert store.put_states([state("idle", 1)]) == []
    assert store.watchers(["i1"]) == {"i1": {"idle"}}


@pytest.fixture
def cassandra_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    with _cassandra_pair(request, tmp_path) as pair:
        yield pair


def _interleave(store: Store, between: Callable[[], object]) -> None:
    """Run ``between`` once, after ``store`` read a user's fence and before its CAS."""
    original = store._cas_statement  # type: ignore[attr-defined]
    done: list[bool] = []

    def cas_statement(*args: object) -> object:
        if not done:
            done.append(True)
            between()
        return original(*args)

    store._cas_statement = cas_statement  # type: ignore[attr-defined]


def test_cas_lost_to_a_lower_version_is_retried(cassandra_workers: Pair) -> None:
    a, b = cassandra_workers
    assert a.put_states([state("u1", 1)]) == []
    _interleave(a, lambda: b.put_states([state("u1", 2, "b")]))
    assert a.put_states([state("u1", 3)]) == []  # read saw v1, B wrote v2, CAS retried
    got = a.get_states(["u1"])["u1"]
    assert (got.version, got.updater) == (3, "a")
    assert a.watchers(["i1", "i2", "i3"]) == {"i3": {"u1"}}


def test_cas_lost_to_a_newer_version_is_rejected(cassandra_workers: Pair) -> None:
    a, b = cassandra_workers
    assert a.put_states([state("u1", 1)]) == []
    _interleave(a, lambda: b.put_states([state("u1", 5, "b")]))
    assert a.put_states([state("u1", 2)]) == ["u1"]  # read saw v1, then v5 landed
    got = a.get_states(["u1"])["u1"]
    assert (got.version, got.updater) == (5, "b")
    assert a.watchers(["i1", "i2", "i5"]) == {"i5": {"u1"}}


def test_new_user_created_concurrently_is_fenced(cassandra_workers: Pair) -> None:
    a, b = cassandra_workers
    _interleave(a, lambda: b.put_states([state("u1", 2, "b")]))
    assert a.put_states([state("u1", 1)]) == ["u1"]  # INSERT IF NOT EXISTS lost
    assert a.get_states(["u1"])["u1"].updater == "b"


def test_timed_out_cas_is_settled_by_a_serial_read(
    cassandra_workers: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cassandra import WriteTimeout

    a, _ = cassandra_workers
    assert a.put_states([state("u1", 1)]) == []
    original = a._concurrent  # type: ignore[attr-defined]
    calls: list[int] = []

    def concurrent(statements: list, tolerate: tuple = ()) -> list:
        results = original(statements, tolerate)
        if tolerate and not calls:  # the CAS round: it commits, but the client hears a timeout
            calls.append(1)
            return [WriteTimeout("simulated", write_type=5) for _ in results]
        return results

    monkeypatch.setattr(a, "_concurrent", concurrent)
    assert a.put_states([state("u1", 2)]) == []
    assert calls == [1]
    assert a.get_states(["u1"])["u1"].version == 2
    assert a.watchers(["i1", "i2"]) == {"i2": {"u1"}}


def test_replay_heals_an_index_a_crash_left_behind(
    cassandra_workers: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cassandra_workers
    assert a.put_states([state("u1", 1)]) == []

    def crash(writes: list) -> None:
        raise ConnectionError("worker died after its CAS")

    monkeypatch.setattr(a, "_write_watches", crash)
    with pytest.raises(ConnectionError):
        a.put_states([state("u1", 2)])
    assert b.get_states(["u1"])["u1"].version == 2  # the state is in
    assert b.watchers(["i1", "i2"]) == {"i1": {"u1"}}  # the index is behind
    # the batch is replayed (by the restarted worker, here B): refused, index healed
    assert b.put_states([state("u1", 2, "b")]) == ["u1"]
    assert b.watchers(["i1", "i2"]) == {"i2": {"u1"}}
    assert b.put_states([state("u1", 3, "b")]) == []
    assert b.watchers(["i1", "i2", "i3"]) == {"i3": {"u1"}}


def _watching(user: str, version: int, items: list[str]) -> UserState:
    return UserState(user, version=version, top_k=tuple((i, 1.0) for i in items))


def test_a_store_sends_only_the_new_watches_of_a_state_it_indexed_whole(
    cassandra_workers: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unchanged watches are not rewritten; another writer's state gets them all again."""
    a, b = cassandra_workers
    sent: list[list] = []
    original = a._write_watches  # type: ignore[attr-defined]

    def spy(writes: list) -> None:
        sent.append([(x.user_id, sorted(x.watched), sorted(x.dropped)) for x in writes])
        original(writes)

    monkeypatch.setattr(a, "_write_watches", spy)
    assert a.put_states([_watching("u1", 1, ["x", "y"])]) == []
    assert a.put_states([_watching("u1", 2, ["y", "z"])]) == []
    assert sent[-1] == [("u1", ["z"], ["x"])]  # y is already indexed at v1
    assert a.watchers(["x", "y", "z"]) == {"y": {"u1"}, "z": {"u1"}}
    assert b.put_states([_watching("u1", 3, ["y", "z", "w"])]) == []  # B writes in between
    assert a.put_states([_watching("u1", 4, ["z", "w"])]) == []
    assert sent[-1] == [("u1", ["w", "z"], ["y"])]  # A did not index v3: every watch again
    assert a.watchers(["x", "y", "z", "w"]) == {"z": {"u1"}, "w": {"u1"}}


def test_the_next_write_of_another_process_heals_an_index_a_crash_left_behind(
    cassandra_workers: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cassandra_workers
    assert a.put_states([_watching("u1", 1, ["x"])]) == []

    def crash(writes: list) -> None:
        raise ConnectionError("worker died after its CAS")

    monkeypatch.setattr(a, "_write_watches", crash)
    with pytest.raises(ConnectionError):
        a.put_states([_watching("u1", 2, ["x", "y"])])
    assert b.watchers(["x", "y"]) == {"x": {"u1"}}  # y's entry never landed
    assert b.put_states([_watching("u1", 3, ["x", "y", "z"])]) == []  # the restarted worker
    assert b.watchers(["x", "y", "z"]) == {"x": {"u1"}, "y": {"u1"}, "z": {"u1"}}


def test_a_store_writes_its_own_users_without_reading_them_first_and_stays_fenced(
    cassandra_workers: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cassandra_workers
    reads: list[tuple[str, bool]] = []
    original = a._fence_read  # type: ignore[attr-defined]

    def spy(user_id: str, serial: bool) -> object:
        reads.append((user_id, serial))
        return original(user_id, serial)

    monkeypatch.setattr(a, "_fence_read", spy)
    assert a.put_states([_watching("u1", 1, ["x"])]) == []
    assert reads == [("u1", False)]  # a user it never wrote: read first
    assert a.put_states([_watching("u1", 2, ["y"])]) == []
    assert reads == [("u1", False)]  # its own last write: no read
    assert b.put_states([_watching("u1", 3, ["z"])]) == []  # another writer in between
    assert a.put_states([_watching("u1", 4, ["w"])]) == []  # the CAS fails, then a SERIAL read
    assert reads[-1] == ("u1", True)
    got = b.get_states(["u1"])["u1"]
    assert got.version == 4 and b.watchers(["x", "y", "z", "w"]) == {"w": {"u1"}}
    assert b.put_states([_watching("u1", 6, ["v"])]) == []
    assert a.put_states([_watching("u1", 5, ["q"])]) == ["u1"]  # a zombie: fenced all the same
    assert b.get_states(["u1"])["u1"].version == 6
    assert a.watchers(["v", "q"]) == {"v": {"u1"}}


def test_many_users_watching_one_item_are_indexed_in_bounded_batches(
    cassandra_workers: Pair,
) -> None:
    a, _ = cassandra_workers
    users = [f"user-{n:03d}-" + "é" * 200 for n in range(70)]  # long ids: big entries
    assert a.put_states([_watching(u, 1, ["hit", f"own-{n}"]) for n, u in enumerate(users)]) == []
    assert a.watchers(["hit"]) == {"hit": set(users)}
    assert a.put_states([_watching(u, 2, [f"own-{n}"]) for n, u in enumerate(users)]) == []
    assert a.watchers(["hit", "own-3"]) == {"own-3": {users[3]}}


def test_item_feed_is_trimmed_and_a_lagging_reader_rescans(
    request: pytest.FixtureRequest,
) -> None:
    from streams.stores.base import StoredItem
    from streams.stores.cassandra import CassandraStore

    engine = cassandra_engine_for(request)
    keyspace = f"feed_{uuid.uuid4().hex[:12]}"
    writer = CassandraStore(engine.host, engine.port, keyspace, feed_retention=100)
    reader = CassandraStore(engine.host, engine.port, keyspace, feed_retention=100)
    vector = np.ones(4, dtype=np.float32)

    def items(ids: range, removed: bool = False) -> list[StoredItem]:
        return [
            StoredItem(f"i{n}", None if removed else vector * n, f"t{n}", (), f"h{n}") for n in ids
        ]

    try:
        writer.put_items(items(range(0, 50)))
        _, behind = reader.items_changed_since(0)  # a reader at seq 50
        writer.put_items(items(range(50, 100)))
        writer.put_items(items(range(10, 20), removed=True))
        writer.put_items(items(range(100, 300)))  # the head crosses 200 and 300: trims
        rows = list(writer._session.execute(f"SELECT seq FROM {keyspace}.item_changes"))
        seqs = sorted(r["seq"] for r in rows if r["seq"] is not None)
        assert seqs == list(range(211, 311))  # only the last 100 entries are kept

        # Behind the retained entries: a full rescan, removals included.
        changed, cursor = reader.items_changed_since(behind)
        assert cursor == 310
        live = {i.item_id for i in changed if i.vector is not None}
        gone = {i.item_id for i in changed if i.vector is None}
        assert live == {f"i{n}" for n in range(300) if not 10 <= n < 20}
        assert gone == {f"i{n}" for n in range(10, 20)}
        # Within them: only what the retained entries name, in feed order.
        writer.put_items(items(range(5, 7)))
        changed, cursor = reader.items_changed_since(cursor)
        assert [i.item_id for i in changed] == ["i5", "i6"] and cursor == 312
    finally:
        reader.close()
        writer.drop_keyspace()
        writer.close()
