"""The embedded default store: SQLite in WAL mode.

Why SQLite: it ships with Python (no extra native wheel), a transaction
makes a micro-batch of states atomic, ``synchronous=FULL`` makes a commit
durable, and a conditional upsert gives the version fence in one statement.

Shared-model blobs live in the ``blobs`` table of the same file; a
compare-and-set is one conditional statement in a ``BEGIN IMMEDIATE``
transaction, so two stores on one file (two processes, say) serialise on
SQLite's write lock and exactly one of two writers of the same version wins.
A database made before the table existed gains it when a store opens it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.state import UnreadableState, UserState, encode_state, read_state
from streams.stores.base import StoredBlob, StoredItem, check_blob_name, check_blob_write

if TYPE_CHECKING:
    from streams.settings import Settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_states (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    vector BLOB,
    title TEXT NOT NULL,
    tags TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_seq ON items (seq);
CREATE TABLE IF NOT EXISTS watches (
    item_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (item_id, user_id)
);
CREATE INDEX IF NOT EXISTS watches_by_user ON watches (user_id);
CREATE TABLE IF NOT EXISTS blobs (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""

_UPSERT_STATE = """
INSERT INTO user_states (user_id, version, state) VALUES (?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET version = excluded.version, state = excluded.state
WHERE excluded.version > user_states.version
"""


class SqliteStore:
    """`Store` on one SQLite file (``":memory:"`` for tests).

    Safe to share between threads: one connection guarded by a lock.
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStore:
        return cls(settings.state_path)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState | UnreadableState]:
        out: dict[str, UserState | UnreadableState] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(user_ids))):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT user_id, state FROM user_states WHERE user_id IN ({marks})", chunk
                )
                out.update((uid, read_state(uid, blob)) for uid, blob in rows)
        return out

    def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(user_ids))):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT user_id, version FROM user_states WHERE user_id IN ({marks})", chunk
                )
                out.update(rows)
        return out

    def put_states(self, states: Sequence[UserState]) -> list[str]:
        rejected: list[str] = []
        with self._lock, self._transaction():
            for state in states:
                cur = self._db.execute(
                    _UPSERT_STATE, (state.user_id, state.version, encode_state(state))
                )
                if cur.rowcount == 0:
                    rejected.append(state.user_id)
                    continue
                self._db.execute("DELETE FROM watches WHERE user_id = ?", (state.user_id,))
                self._db.executemany(
                    "INSERT OR IGNORE INTO watches (item_id, user_id) VALUES (?, ?)",
                    [(item, state.user_id) for item in sorted(state.watched_items())],
                )
        return rejected

    def put_items(self, items: Sequence[StoredItem]) -> None:
        with self._lock, self._transaction():
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()
            for item in items:
                seq += 1
                blob = None if item.vector is None else _vector_bytes(item.vector)
                self._db.execute(
                    "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                    (item.item_id, seq, blob, item.title, json.dumps(item.tags), item.content_hash),
                )

    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        out: dict[str, StoredItem] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(item_ids))):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT item_id, vector, title, tags, content_hash FROM items "
                    f"WHERE item_id IN ({marks}) AND vector IS NOT NULL",
                    chunk,
                )
                out.update((row[0], _item(row)) for row in rows)
        return out

    def all_items(self) -> list[StoredItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id, vector, title, tags, content_hash FROM items "
                "WHERE vector IS NOT NULL ORDER BY item_id"
            ).fetchall()
        return [_item(row) for row in rows]

    def items_changed_since(self, cursor: int) -> tuple[list[StoredItem], int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id, vector, title, tags, content_hash, seq FROM items "
                "WHERE seq > ? ORDER BY seq",
                (cursor,),
            ).fetchall()
        return [_item(row) for row in rows], (rows[-1][5] if rows else cursor)

    def watchers(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(item_ids))):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT item_id, user_id FROM watches WHERE item_id IN ({marks})", chunk
                )
                for item_id, user_id in rows:
                    out.setdefault(item_id, set()).add(user_id)
        return out

    def get_blob(self, name: str) -> StoredBlob | None:
        check_blob_name(name)
        with self._lock:
            row = self._db.execute(
                "SELECT version, data FROM blobs WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else StoredBlob(name, row[0], bytes(row[1]))

    def put_blob(self, name: str, data: bytes, expected_version: int) -> StoredBlob | None:
        data = check_blob_write(name, data, expected_version)
        version = expected_version + 1
        with self._lock, self._transaction():
            if expected_version == 0:
                cur = self._db.execute(
                    "INSERT INTO blobs (name, version, data) VALUES (?, 1, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, data),
                )
            else:
                cur = self._db.execute(
                    "UPDATE blobs SET version = ?, data = ? WHERE name = ? AND version = ?",
                    (version, data, name, expected_version),
                )
        return StoredBlob(name, version, data) if cur.rowcount == 1 else None

    def ping(self, timeout: float = 5.0) -> None:
        # Waiting for the lock is part of the answer: a writer holding it
        # for longer than ``timeout`` makes the store unavailable to agents too.
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"sqlite store {self.path} busy for more than {timeout}s")
        try:
            self._db.execute("SELECT 1").fetchone()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _item(row: Sequence) -> StoredItem:
    item_id, blob, title, tags, content_hash = row[:5]
    vector = None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return StoredItem(item_id, vector, title, tuple(json.loads(tags)), content_hash)


def _chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
