"""The store at scale: Apache Cassandra through cassandra-driver.

Schema: ``streams/stores/cassandra_schema.cql``, shipped as package data
(keyspace and replication substituted at start-up, every statement ``IF NOT
EXISTS``, schema agreement awaited).

User states: the version fence
------------------------------
Cassandra has no multi-partition transaction, so each user's write is fenced
and atomic on its own; a batch of users is not atomic as a whole (the `Store`
protocol promises no more). A write is a compare-and-set (Paxos lightweight
transaction, serial consistency SERIAL or LOCAL_SERIAL) on the user's row:

1. read ``version, write_clock, watched`` of every user of the micro-batch,
   concurrently (one single-partition read per user, never one ``IN``),
   except users whose last write (row and watch entries) this store made
   itself: it remembers their fence columns, and the CAS of step 3 fails
   if anyone wrote them since (then the write goes on from step 4). A
   worker that owns a partition writes its users with one round trip fewer;
2. a stored version equal to or above the new one rejects the write (the
   caller is a zombie that lost the partition, or replays an old batch);
3. otherwise ``INSERT ... IF NOT EXISTS`` (new user) or
   ``UPDATE ... IF version < :new AND write_clock = :seen`` (existing user);
4. a CAS that lost to a concurrent writer is retried from 1 with a SERIAL
   read (which also settles an in-flight Paxos round, so a CAS that timed
   out is found applied or not by its unique ``write_clock``).

``version < :new`` is the fence; ``write_clock = :seen`` makes the write a
true compare-and-set, so the ``watched`` set read in step 1 is exactly the
one being replaced. ``write_clock`` is strictly increasing per user
(``max(now_us, seen + 1)``) and is used as the cell timestamp of the
``watches`` rows written after a successful CAS: inserts for the watched
items, deletes for the dropped ones. Two successive winners' index writes may
arrive in any order; the later state's timestamps win. A crash between the
CAS and the index writes leaves the index behind until the batch is replayed
(a write of the stored version is refused, and redoes the stored write's
index changes, kept in the row as ``watched``/``unwatched``, with its clock)
or the user's next write, which inserts every watched item; the state itself
is never wrong. A store that wrote the whole index of the very state a write
replaces (the row's ``write_clock`` is its last complete index write: nobody
wrote the user in between) inserts only the newly watched items, unless rows
expire (``ttl_seconds``), when every write refreshes them all: a user's top-K
changes by an item or two per event, so this cuts a worker's statements per
state write from about a dozen to two or three.

Item change feed
----------------
``items_changed_since(cursor)`` needs a cursor that never skips a change. A
timeuuid feed cannot give that under concurrent writers: a change stamped
earlier can become visible after a reader moved past it. Here the feed is one
partition (``item_changes``, feed = 'items') clustered by a gap-free bigint
``seq``, with the head in a static column ``last_seq``. An append is one
conditional batch on that partition: ``UPDATE ... SET last_seq = h + n IF
last_seq = h`` plus the n rows ``h+1 .. h+n``. Allocation and the rows it
numbers commit together, in Paxos order, so when a row is visible every lower
one is (the feed is read at serial consistency, which makes that hold for
any replica a read reaches). The item row itself is written before its feed
entry, so a reader that sees a change fetches content at least that new.
The feed is global, so its transactions and reads are always SERIAL (with
LOCAL_SERIAL two data centres could hand out the same numbers). Costs:
appends serialise on one partition (fine for a catalogue's rate of change),
and the rows hold ids only, never vectors (~40 bytes a change). ``items``
has no seq column: its content is always the latest, and a reader that sees a
feed entry fetches it (or, from cursor 0, scans).

Retention: the partition keeps the last ``feed_retention`` entries; an
append that crosses a multiple of ``max(100, feed_retention // 10)`` deletes
the older ones with one range delete. A reader whose cursor fell behind the
retained entries sees a gap (the first entry after its cursor is not
``cursor + 1``) and resyncs with a full scan, as a fresh worker does.

Shared-model blobs
------------------
``blobs`` holds one row per name: ``version``, ``data`` and ``write_id`` (a
fresh uuid per write attempt). ``put_blob`` is a lightweight transaction:
``INSERT ... IF NOT EXISTS`` for version 1, ``UPDATE ... IF version = :seen``
after it. A blob is shared by every worker of every data centre, so, like the
feed, its transactions and reads are always SERIAL (with LOCAL_SERIAL two data
centres could each accept a different version 2). ``get_blob`` is a SERIAL
read: it sees the latest committed write and settles an in-flight one, so the
version it returns is the one a writer's next compare-and-set must name.

A write whose outcome is unknown (``WriteTimeout``, which is also how
Cassandra reports Paxos contention past ``cas_contention_timeout``, or a
client-side timeout) is settled the way state writes are: a SERIAL read of
``version, write_id`` finds it applied (one of this call's write ids at the
new version), beaten (any other version or write id: None is returned), or
not applied (the version is still the expected one: it is tried again). After
`_MAX_ROUNDS` unsettled rounds `StoreContentionError` is raised.

Size: each version rewrites the whole blob, and a Paxos round keeps a second
copy of the proposal in ``system.paxos`` until it is compacted away, so a blob
is written twice per update. What bounds a blob is the request: Cassandra 5.0
refuses a CQL message above ``native_transport_max_message_size``, which when
unset is ``max_mutation_size`` (half of ``commitlog_segment_size``: 16 MiB
with the default 32 MiB segments, 8 MiB with the 16 MiB segments of
``deploy/cassandra/cassandra.yaml``), or less on a small heap (at most 2.5%
of it per client address). Too large a blob is refused at once with
``InvalidRequest`` ("CQL Message of size ... exceeds allowed maximum"), never
half-written. On the deploy/ node a 7.5 MiB blob is written and an 8 MiB one
refused; blobs of a few MiB are well within the defaults (a 2 MiB write and
read take ~0.2 s each there).
"""

from __future__ import annotations

import logging
import re
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, WriteTimeout
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.concurrent import execute_concurrent
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import (
    BatchStatement,
    BatchType,
    PreparedStatement,
    Statement,
    dict_factory,
)

from models.state import UnreadableState, UserState, encode_state, read_state
from streams.failures import InfrastructureError
from streams.settings import Settings
from streams.stores import StoreUnreachable
from streams.stores.base import StoredBlob, StoredItem, check_blob_name, check_blob_write
from streams.stores.replication import DEFAULT_REPLICATION
from streams.stores.replication import replication_cql as replication_cql_of

log = logging.getLogger("interest_stream.store.cassandra")

#: The schema shipped in the package (so an installed wheel has it too);
#: `Settings.cassandra_schema_file` overrides it.
SCHEMA_FILE = Path(str(resources.files("streams.stores") / "cassandra_schema.cql"))

_KEYSPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_FEED = "items"
#: Rows per feed append; keeps a conditional batch far below batch_size_fail_threshold.
_FEED_CHUNK = 100
#: Compare-and-set rounds before a write is given up (only under heavy contention).
_MAX_ROUNDS = 32
#: Users whose complete watch index a store remembers writing (`CassandraStore._index_write`).
_INDEXED_MAX = 200_000
#: Watch entries per single-partition batch: under Cassandra's default
#: batch_size_fail_threshold (50 KiB) even with ids of 256 four-byte characters
#: (`streams.codec.MAX_ID_CHARS`): about 2 KiB an entry.
_WATCH_BATCH = 20
#: A compare-and-set that failed with these may or may not have committed.
_UNKNOWN_OUTCOME = (WriteTimeout, OperationTimedOut)
#: A serial read that failed with these may be retried (it settles nothing itself).
_READ_TIMEOUTS = (ReadTimeout, WriteTimeout, OperationTimedOut)


class StoreContentionError(InfrastructureError):
    """A compare-and-set kept losing to concurrent writers (retried as infrastructure)."""


@dataclass
class _StateWrite:
    """One user's write in flight through the compare-and-set rounds."""

    state: UserState
    blob: bytes
    watched: frozenset[str]
    index: int
    #: Every CAS sent for this write: its write_clock -> the watched set it replaced.
    attempts: dict[int, frozenset[str]] = field(default_factory=dict)
    #: The write_clock of the attempt that committed.
    clock: int = 0
    #: Every CAS sent: its write_clock -> the stored row's write_clock it replaced.
    seen: dict[int, int | None] = field(default_factory=dict)

    def landed(self, row: Mapping[str, Any] | None) -> bool:
        """Whether ``row`` is one of our attempts, committed (maybe after a timeout)."""
        if not row or row.get("version") != self.state.version:
            return False
        clock = row.get("write_clock")
        if clock not in self.attempts:
            return False
        self.clock = clock
        return True

    def stale(self, row: Mapping[str, Any] | None) -> bool:
        """Whether ``row`` holds this version or a newer one (someone else's)."""
        return bool(row) and row.get("version") is not None and row["version"] >= self.state.version


@dataclass(frozen=True)
class _Written:
    """A state write this store completed (row and watch entries): its fence columns."""

    version: int
    clock: int
    watched: frozenset[str]


@dataclass(frozen=True)
class _IndexWrite:
    """The ``watches`` entries of one stored state."""

    user_id: str
    clock: int
    watched: frozenset[str]
    dropped: frozenset[str]

    @classmethod
    def of_write(cls, w: _StateWrite) -> _IndexWrite:
        replaced = w.attempts[w.clock]
        return cls(w.state.user_id, w.clock, w.watched, replaced - w.watched)

    @classmethod
    def of_row(cls, user_id: str, row: Mapping[str, Any]) -> _IndexWrite:
        watched, dropped = (frozenset(row[k] or ()) for k in ("watched", "unwatched"))
        return cls(user_id, row["write_clock"], watched, dropped)


class CassandraStore:
    """`Store` on a Cassandra keyspace.

    Parameters
    ----------
    contact_points, port
        Where the driver finds the cluster (a comma-separated string or a list).
    keyspace
        Created with ``replication`` if it does not exist.
    replication
        The keyspace's replication map (a dict or its JSON), e.g.
        ``{"class": "NetworkTopologyStrategy", "dc1": 3}``.
    local_dc
        Data centre of this worker: requests go to it (token-aware,
        DC-aware round robin); empty lets the driver pick the contact's DC.
    read_consistency, write_consistency
        Consistency level names (``LOCAL_QUORUM``, ``QUORUM``, ``ONE`` ...).
    serial_consistency
        Of the lightweight transactions: ``SERIAL`` or ``LOCAL_SERIAL``.
        Default: ``LOCAL_SERIAL`` when the write consistency is ``LOCAL_*``,
        else ``SERIAL``. Fencing holds among writers using the same serial
        scope, so writers of one user in several DCs need ``SERIAL``.
    ttl_seconds
        A user's state (and watch entries) expire this long after its last
        write; 0 keeps them forever.
    username, password
        Plain-text authentication when ``username`` is set. Never logged.
    ssl_ca_file
        TLS with this CA bundle (certificates and host names are verified).
    schema_file
        CQL to create the keyspace and tables; `SCHEMA_FILE` by default.
    create_schema
        False to skip the DDL (the schema is managed elsewhere).
    concurrency
        Requests in flight at once for one batch.
    feed_retention
        Item change feed entries kept (0: all); at least 100, one append's worth.
    protocol_version
        Native protocol: 5 for Cassandra 4.0 and later (fixed, so the driver
        does not probe and warn at every connect).
    """

    def __init__(
        self,
        contact_points: str | Sequence[str] = ("127.0.0.1",),
        port: int = 9042,
        keyspace: str = "interest_stream",
        *,
        replication: Mapping[str, Any] | str = DEFAULT_REPLICATION,
        local_dc: str = "",
        read_consistency: str = "LOCAL_QUORUM",
        write_consistency: str = "LOCAL_QUORUM",
        serial_consistency: str | None = None,
        ttl_seconds: int = 0,
        username: str = "",
        password: str = "",
        ssl_ca_file: str = "",
        schema_file: str | Path | None = None,
        create_schema: bool = True,
        concurrency: int = 128,
        feed_retention: int = 200_000,
        protocol_version: int = 5,
        connect_timeout: float = 10.0,
        request_timeout: float = 20.0,
    ) -> None:
        if not _KEYSPACE.fullmatch(keyspace):
            raise ValueError(f"invalid keyspace name {keyspace!r}")
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        if feed_retention and feed_retention < _FEED_CHUNK:
            raise ValueError(f"feed_retention must be 0 or >= {_FEED_CHUNK}")
        self.feed_retention = feed_retention
        points = (
            [p.strip() for p in contact_points.split(",") if p.strip()]
            if isinstance(contact_points, str)
            else list(contact_points)
        )
        self.contact_points = tuple(points)
        self.port = port
        self.keyspace = keyspace
        self.ttl_seconds = int(ttl_seconds)
        self.concurrency = concurrency
        #: user -> the last state this store wrote whose watch entries it also wrote
        #: completely (`_index_write`, `_known_row`); bounded, least recent out first.
        self._written: OrderedDict[str, _Written] = OrderedDict()
        self._read_cl = _consistency(read_consistency)
        self._write_cl = _consistency(write_consistency)
        if serial_consistency is None:
            local = write_consistency.upper().startswith("LOCAL_")
            serial_consistency = "LOCAL_SERIAL" if local else "SERIAL"
        if serial_consistency.upper() not in ("SERIAL", "LOCAL_SERIAL"):
            raise ValueError("serial_consistency must be SERIAL or LOCAL_SERIAL")
        self._serial_cl = _consistency(serial_consistency)
        replication_cql = replication_cql_of(replication)

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc)),
            consistency_level=self._read_cl,
            serial_consistency_level=self._serial_cl,
            request_timeout=request_timeout,
            row_factory=dict_factory,
        )
        ssl_context = None
        if ssl_ca_file:
            ssl_context = ssl.create_default_context(cafile=ssl_ca_file)
        auth = PlainTextAuthProvider(username, password) if username else None
        log.info(
            "connecting to cassandra %s:%d keyspace=%s local_dc=%s user=%s tls=%s",
            ",".join(points),
            port,
            keyspace,
            local_dc or "-",
            username or "-",
            bool(ssl_context),
        )
        self._cluster = Cluster(
            contact_points=points,
            port=port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            auth_provider=auth,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            # The control connection's own queries (peers, schema) get the same
            # time: the driver's 2 s failed a first connect to a node stalled by
            # a busy two-core host (NoHostAvailable ... OperationTimedOut).
            control_connection_timeout=connect_timeout,
            protocol_version=protocol_version,
            # The driver's default waits up to 10 minutes between reconnection
            # attempts; a worker paused on a store outage should resume seconds
            # after the node is back.
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 4.0),
        )
        self._feed_head: int | None = None
        try:
            try:
                self._session: Session = self._cluster.connect()
            except NoHostAvailable as exc:
                raise StoreUnreachable(_unreachable(points, port, exc)) from exc
            if create_schema:
                self._create_schema(Path(schema_file or SCHEMA_FILE), replication_cql)
            self._prepare()
            self._execute(self._feed_init, (_FEED,))
        except BaseException:
            self._cluster.shutdown()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraStore:
        return cls(
            settings.cassandra_contact_points,
            settings.cassandra_port,
            settings.cassandra_keyspace,
            replication=settings.cassandra_replication,
            local_dc=settings.cassandra_local_dc,
            read_consistency=settings.cassandra_read_consistency,
            write_consistency=settings.cassandra_write_consistency,
            ttl_seconds=settings.state_ttl_seconds,
            username=settings.cassandra_username,
            password=settings.cassandra_password,
            ssl_ca_file=settings.cassandra_ssl_ca_file,
            schema_file=settings.cassandra_schema_file or None,
            feed_retention=settings.cassandra_feed_retention,
        )

    def __repr__(self) -> str:
        return (
            f"CassandraStore({','.join(self.contact_points)}:{self.port}, "
            f"keyspace={self.keyspace!r}, ttl_seconds={self.ttl_seconds})"
        )

    # -- user states -----------------------------------------------------

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState | UnreadableState]:
        users = list(dict.fromkeys(user_ids))
        rows = self._concurrent([(self._get_state, (uid,)) for uid in users])
        found = zip(users, _firsts(rows), strict=True)
        return {uid: read_state(uid, row["state"]) for uid, row in found if row}

    def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        users = list(dict.fromkeys(user_ids))
        rows = self._concurrent([(self._get_fence, (uid,)) for uid in users])
        found = zip(users, _firsts(rows), strict=True)
        return {uid: row["version"] for uid, row in found if row and row["version"] is not None}

    def put_states(self, states: Sequence[UserState]) -> list[str]:
        # A user listed twice is written in list order, as a sequential store would.
        waves: list[dict[str, _StateWrite]] = []
        occurrences: dict[str, int] = {}
        for i, state in enumerate(states):
            n = occurrences.get(state.user_id, 0)
            occurrences[state.user_id] = n + 1
            if n == len(waves):
                waves.append({})
            watched = frozenset(state.watched_items())
            waves[n][state.user_id] = _StateWrite(state, encode_state(state), watched, i)
        rejected: list[int] = []
        for wave in waves:
            rejected.extend(w.index for w in self._put_wave(list(wave.values())))
        return [states[i].user_id for i in sorted(rejected)]

    def _put_wave(self, writes: list[_StateWrite]) -> list[_StateWrite]:
        """Compare-and-set every write (one user each); the rejected ones are returned."""
        todo = writes
        applied: list[_StateWrite] = []
        rejected: list[_StateWrite] = []
        heal: list[_IndexWrite] = []
        heal_versions: dict[str, int] = {}
        last_error: Exception | None = None
        for round_ in range(_MAX_ROUNDS):
            if not todo:
                break
            # First round: a user this store wrote last is not read (the CAS checks
            # the row is still that write); after it only SERIAL reads: they settle
            # in-flight Paxos rounds.
            known = {w.state.user_id: self._known_row(w) for w in todo} if round_ == 0 else {}
            unknown = [w for w in todo if known.get(w.state.user_id) is None]
            reads = [self._fence_read(w.state.user_id, serial=round_ > 0) for w in unknown]
            rows = dict(
                zip(
                    (w.state.user_id for w in unknown),
                    _firsts(self._concurrent(reads)),
                    strict=True,
                )
            )
            cas: list[tuple[_StateWrite, PreparedStatement, tuple]] = []
            for w in todo:
                row = known.get(w.state.user_id) or rows[w.state.user_id]
                if w.landed(row):
                    applied.append(w)  # an attempt that timed out did commit
                elif w.stale(row):
                    rejected.append(w)
                    if row and row["version"] == w.state.version:
                        # A replay: redo the stored state's index entries in case the
                        # writer crashed between its CAS and its index writes.
                        heal.append(_IndexWrite.of_row(w.state.user_id, row))
                        heal_versions[w.state.user_id] = row["version"]
                else:
                    cas.append((w, *self._cas_statement(w, row)))
            outcomes = self._concurrent([(s, p) for _, s, p in cas], tolerate=_UNKNOWN_OUTCOME)
            todo = []
            for (w, _, _), outcome in zip(cas, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    log.warning("user %s: CAS outcome unknown: %r", w.state.user_id, outcome)
                    last_error = outcome
                    todo.append(w)
                elif outcome.was_applied:
                    applied.append(w)
                else:
                    # The failed CAS returns the row's current fence columns.
                    current = outcome.one()
                    if w.landed(current):
                        applied.append(w)
                    elif w.stale(current):
                        rejected.append(w)
                    else:  # lost a race to a lower version, or the row just expired
                        log.debug("user %s: CAS lost, retrying", w.state.user_id)
                        todo.append(w)
        if todo:
            users = ", ".join(sorted(w.state.user_id for w in todo)[:5])
            raise StoreContentionError(f"could not write the states of {users}") from last_error
        index = [self._index_write(w) for w in applied] + heal
        self._write_watches(index)
        for w in applied:
            x = _IndexWrite.of_write(w)
            self._remember(x.user_id, _Written(w.state.version, x.clock, w.watched))
        for x in heal:
            self._remember(x.user_id, _Written(heal_versions[x.user_id], x.clock, x.watched))
        return rejected

    def _remember(self, user_id: str, written: _Written) -> None:
        self._written[user_id] = written
        self._written.move_to_end(user_id)
        while len(self._written) > _INDEXED_MAX:
            self._written.popitem(last=False)

    def _known_row(self, w: _StateWrite) -> dict[str, Any] | None:
        """The fence row this store's last complete write of the user left, if older than ``w``.

        Used in place of a read: the CAS's ``write_clock = :seen`` fails if
        anyone wrote the user since, and the write goes the long way.
        """
        known = self._written.get(w.state.user_id)
        if known is None or known.version >= w.state.version:
            return None
        return {"version": known.version, "write_clock": known.clock, "watched": known.watched}

    def _index_write(self, w: _StateWrite) -> _IndexWrite:
        """The watch entries an applied write must send: all, or only the new ones.

        Only the newly watched items (and the dropped ones) when this store
        wrote the whole index of the state this write replaced (the row's
        write_clock before the CAS is the clock of our last complete index
        write: nobody wrote the user in between) and entries never expire
        (``ttl_seconds`` 0). Otherwise every watched item, which also heals
        an index a crashed writer left half written.
        """
        x = _IndexWrite.of_write(w)
        seen = w.seen.get(w.clock)
        known = self._written.get(x.user_id)
        if self.ttl_seconds or seen is None or known is None or known.clock != seen:
            return x
        return replace(x, watched=x.watched - w.attempts[w.clock])

    def _fence_read(self, user_id: str, serial: bool) -> tuple[Statement, tuple | None]:
        """A user's fence; at serial consistency it also settles an in-flight Paxos round."""
        if not serial:
            return self._get_fence, (user_id,)
        bound = self._get_fence.bind((user_id,))
        bound.consistency_level = self._serial_cl
        return bound, None

    def _cas_statement(
        self, w: _StateWrite, row: Mapping[str, Any] | None
    ) -> tuple[PreparedStatement, tuple]:
        seen_clock = row["write_clock"] if row else None
        clock = max(time.time_ns() // 1000, (seen_clock or 0) + 1, max(w.attempts, default=0) + 1)
        replaced = frozenset(row["watched"] or ()) if row else frozenset()
        w.attempts[clock] = replaced
        w.seen[clock] = seen_clock
        w.clock = clock
        s, now, ttl = w.state, datetime.now(UTC), self.ttl_seconds
        # Kept in the row so that a replay can redo this write's index changes.
        unwatched = replaced - w.watched
        if row is None:
            params = (s.user_id, s.version, w.blob, now, w.watched, unwatched, clock, ttl)
            return self._insert_state, params
        return self._update_state, (
            *(ttl, s.version, w.blob, now, w.watched, unwatched, clock),
            *(s.user_id, s.version, seen_clock),
        )

    def _write_watches(self, writes: list[_IndexWrite]) -> None:
        """Index writes stamped with the state's write_clock: the newest state's win.

        One unlogged batch per item partition (a single-partition batch is
        one mutation on its replicas), the batches sent concurrently.
        """
        by_item: dict[str, list[tuple[PreparedStatement, tuple]]] = {}
        ttl = self.ttl_seconds
        for x in writes:
            for i in x.watched:
                by_item.setdefault(i, []).append((self._watch_add, (i, x.user_id, ttl, x.clock)))
            for i in x.dropped:
                by_item.setdefault(i, []).append((self._watch_del, (x.clock, i, x.user_id)))
        statements: list[tuple[Statement, tuple | None]] = []
        for entries in by_item.values():
            for start in range(0, len(entries), _WATCH_BATCH):
                chunk = entries[start : start + _WATCH_BATCH]
                if len(chunk) == 1:
                    statements.append(chunk[0])
                    continue
                batch = BatchStatement(BatchType.UNLOGGED, consistency_level=self._write_cl)
                for statement, params in chunk:
                    batch.add(statement, params)
                statements.append((batch, None))
        self._concurrent(statements)

    def watchers(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        items = list(dict.fromkeys(item_ids))
        results = self._concurrent([(self._watchers, (item,)) for item in items])
        out: dict[str, set[str]] = {}
        for item, rows in zip(items, results, strict=True):
            users = {r["user_id"] for r in rows}
            if users:
                out[item] = users
        return out

    # -- items -------------------------------------------------------------

    def put_items(self, items: Sequence[StoredItem]) -> None:
        # Last occurrence wins and orders the feed, as sequential upserts would.
        unique: dict[str, StoredItem] = {}
        for item in items:
            unique.pop(item.item_id, None)
            unique[item.item_id] = item
        order = list(unique)
        now = datetime.now(UTC)
        self._concurrent(
            [
                (
                    self._put_item,
                    (
                        item.item_id,
                        None if item.vector is None else _vector_bytes(item.vector),
                        item.title,
                        list(item.tags),
                        item.content_hash,
                        item.vector is None,
                        now,
                    ),
                )
                for item in unique.values()
            ]
        )
        # Only after the rows: a reader that sees a change must find its content.
        for start in range(0, len(order), _FEED_CHUNK):
            self._append_feed(order[start : start + _FEED_CHUNK])

    def _append_feed(self, item_ids: list[str]) -> None:
        head = self._feed_head
        for _ in range(_MAX_ROUNDS * 4):
            if head is None:
                row = self._execute(self._feed_head_read, (_FEED,)).one()
                head = int(row["last_seq"]) if row and row["last_seq"] is not None else 0
            batch = BatchStatement(
                BatchType.UNLOGGED,
                consistency_level=self._write_cl,
                serial_consistency_level=ConsistencyLevel.SERIAL,
            )
            batch.add(self._feed_move, (head + len(item_ids), _FEED, head))
            for k, item_id in enumerate(item_ids, 1):
                batch.add(self._feed_row, (_FEED, head + k, item_id))
            try:
                result = self._session.execute(batch)
            except _UNKNOWN_OUTCOME:
                if self._feed_holds(head, item_ids):
                    self._feed_head = head + len(item_ids)
                    return
                head = None
                continue
            if result.was_applied:
                self._feed_head = head + len(item_ids)
                self._trim_feed(head, self._feed_head)
                return
            row = result.one() or {}
            head = row.get("last_seq")
        raise StoreContentionError("could not append to the item change feed")

    def _trim_feed(self, before: int, after: int) -> None:
        """Drop entries older than the retention when the head crossed a trim mark."""
        if not self.feed_retention:
            return
        every = max(_FEED_CHUNK, self.feed_retention // 10)
        if before // every != after // every:
            self._execute(self._feed_trim, (_FEED, after - self.feed_retention))

    def _feed_holds(self, head: int, item_ids: list[str]) -> bool:
        """After a timed-out append: did it commit? (A serial read settles the round.)"""
        rows = self._execute(self._feed_range, (_FEED, head, head + len(item_ids)))
        return [r["item_id"] for r in rows] == item_ids

    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        return {k: v for k, v in self._fetch_items(item_ids).items() if v.vector is not None}

    def all_items(self) -> list[StoredItem]:
        rows = self._execute(self._all_items, ())
        return sorted(
            (_item(r) for r in rows if not r["removed"] and r["vector"] is not None),
            key=lambda i: i.item_id,
        )

    def items_changed_since(self, cursor: int) -> tuple[list[StoredItem], int]:
        last: dict[str, int] = {}
        new_cursor = cursor
        rows = list(self._execute(self._feed_since, (_FEED, cursor)))
        gap = bool(rows) and rows[0]["seq"] != cursor + 1  # entries after cursor trimmed
        for row in rows:
            last.pop(row["item_id"], None)  # order by each item's latest change
            last[row["item_id"]] = row["seq"]
            new_cursor = row["seq"]
        if gap and cursor > 0:
            log.info("item feed trimmed past cursor %d: resyncing with a full scan", cursor)
        if cursor == 0 or gap:
            # Everything changed (or the entries since the cursor are gone, so
            # any item may have): one table scan beats a read per item by ~10x.
            # Items with no retained entry first, then the feed's order.
            items = {r["item_id"]: _item(r) for r in self._execute(self._all_items, ())}
            order = [*sorted(items.keys() - last.keys()), *last]
        else:
            items = self._fetch_items(list(last))
            order = list(last)
        return [items[i] for i in order if i in items], new_cursor

    def _fetch_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """Items including removed ones (vector None); unknown ones absent."""
        ids = list(dict.fromkeys(item_ids))
        rows = _firsts(self._concurrent([(self._get_item, (i,)) for i in ids]))
        return {i: _item(r) for i, r in zip(ids, rows, strict=True) if r}

    # -- shared-model blobs ------------------------------------------------

    def get_blob(self, name: str) -> StoredBlob | None:
        check_blob_name(name)
        row = self._execute(self._get_blob, (name,)).one()
        if not row or row["version"] is None:
            return None
        return StoredBlob(name, int(row["version"]), bytes(row["data"] or b""))

    def put_blob(self, name: str, data: bytes, expected_version: int) -> StoredBlob | None:
        data = check_blob_write(name, data, expected_version)
        version = expected_version + 1
        attempts: set[uuid.UUID] = set()
        unsettled = False
        last_error: Exception | None = None
        for _ in range(_MAX_ROUNDS):
            if unsettled:
                # A SERIAL read completes or kills the timed-out round: after it,
                # no earlier attempt of ours can still land.
                try:
                    row = self._execute(self._blob_fence, (name,)).one()
                except _READ_TIMEOUTS as exc:
                    last_error = exc
                    continue
                stored = row["version"] if row else None
                if stored == version and row["write_id"] in attempts:
                    return StoredBlob(name, version, data)
                if (stored or 0) != expected_version:
                    return None
                unsettled = False
            write_id = uuid.uuid4()
            attempts.add(write_id)
            now = datetime.now(UTC)
            if expected_version == 0:
                statement, params = self._insert_blob, (name, data, write_id, now)
            else:
                statement = self._update_blob
                params = (version, data, write_id, now, name, expected_version)
            try:
                result = self._execute(statement, params)
            except _UNKNOWN_OUTCOME as exc:
                log.warning("blob %s: CAS to version %d outcome unknown: %r", name, version, exc)
                last_error = exc
                unsettled = True
                continue
            return StoredBlob(name, version, data) if result.was_applied else None
        raise StoreContentionError(
            f"could not settle the write of blob {name!r} version {version}"
        ) from last_error

    def drop_keyspace(self) -> None:
        """Drop this store's keyspace and all its data (throwaway test keyspaces)."""
        self._session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=120)

    def ping(self, timeout: float = 5.0) -> None:
        # A node-local table: answered by the coordinator alone, no replica
        # reads, so it costs the cluster nothing; NoHostAvailable or
        # OperationTimedOut while no node of the cluster answers.
        self._session.execute("SELECT release_version FROM system.local", timeout=timeout).one()

    def close(self) -> None:
        self._cluster.shutdown()

    # -- plumbing ------------------------------------------------------------

    def _create_schema(self, path: Path, replication_cql: str) -> None:
        for statement in schema_statements(path.read_text(), self.keyspace, replication_cql):
            result = self._session.execute(statement, timeout=120)
            if not result.response_future.is_schema_agreed:
                log.warning("schema not agreed after %s...; waiting", statement[:60])
        if not self._cluster.control_connection.wait_for_schema_agreement(wait_time=60):
            raise RuntimeError(f"cassandra nodes disagree on the schema of {self.keyspace}")

    def _prepare(self) -> None:
        ks = self.keyspace
        r, w = self._read_cl, self._write_cl
        fence = (
            f"SELECT version, write_clock, watched, unwatched FROM {ks}.user_states "
            "WHERE user_id = ?"
        )
        self._get_state = self._prep(f"SELECT state FROM {ks}.user_states WHERE user_id = ?", r)
        self._get_fence = self._prep(fence, r)
        self._insert_state = self._prep(
            f"INSERT INTO {ks}.user_states "
            "(user_id, version, state, updated_at, watched, unwatched, write_clock) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
            w,
        )
        self._update_state = self._prep(
            f"UPDATE {ks}.user_states USING TTL ? "
            "SET version = ?, state = ?, updated_at = ?, watched = ?, unwatched = ?, "
            "write_clock = ? "
            "WHERE user_id = ? IF version < ? AND write_clock = ?",
            w,
        )
        self._watch_add = self._prep(
            f"INSERT INTO {ks}.watches (item_id, user_id) VALUES (?, ?) "
            "USING TTL ? AND TIMESTAMP ?",
            w,
        )
        self._watch_del = self._prep(
            f"DELETE FROM {ks}.watches USING TIMESTAMP ? WHERE item_id = ? AND user_id = ?", w
        )
        self._watchers = self._prep(f"SELECT user_id FROM {ks}.watches WHERE item_id = ?", r)
        item_cols = "item_id, vector, title, tags, content_hash, removed"
        self._put_item = self._prep(
            f"INSERT INTO {ks}.items ({item_cols}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", w
        )
        self._get_item = self._prep(f"SELECT {item_cols} FROM {ks}.items WHERE item_id = ?", r)
        self._all_items = self._prep(f"SELECT {item_cols} FROM {ks}.items", r)
        # The feed is global: SERIAL, never LOCAL_SERIAL (see the module docstring).
        g = ConsistencyLevel.SERIAL
        feed = f"{ks}.item_changes"
        self._feed_init = self._prep(
            f"INSERT INTO {feed} (feed, last_seq) VALUES (?, 0) IF NOT EXISTS", w, g
        )
        self._feed_head_read = self._prep(
            f"SELECT last_seq FROM {feed} WHERE feed = ? LIMIT 1", g, g
        )
        self._feed_move = self._prep(
            f"UPDATE {feed} SET last_seq = ? WHERE feed = ? IF last_seq = ?", w, g
        )
        self._feed_row = self._prep(
            f"INSERT INTO {feed} (feed, seq, item_id) VALUES (?, ?, ?)", w, g
        )
        self._feed_since = self._prep(
            f"SELECT seq, item_id FROM {feed} WHERE feed = ? AND seq > ?", g, g
        )
        self._feed_trim = self._prep(f"DELETE FROM {feed} WHERE feed = ? AND seq <= ?", w)
        self._feed_range = self._prep(
            f"SELECT seq, item_id FROM {feed} WHERE feed = ? AND seq > ? AND seq <= ?", g, g
        )
        # Blobs are global too: SERIAL (see the module docstring).
        blobs = f"{ks}.blobs"
        self._get_blob = self._prep(f"SELECT version, data FROM {blobs} WHERE name = ?", g, g)
        self._blob_fence = self._prep(f"SELECT version, write_id FROM {blobs} WHERE name = ?", g, g)
        self._insert_blob = self._prep(
            f"INSERT INTO {blobs} (name, version, data, write_id, updated_at) "
            "VALUES (?, 1, ?, ?, ?) IF NOT EXISTS",
            w,
            g,
        )
        self._update_blob = self._prep(
            f"UPDATE {blobs} SET version = ?, data = ?, write_id = ?, updated_at = ? "
            "WHERE name = ? IF version = ?",
            w,
            g,
        )

    def _prep(self, cql: str, consistency: int, serial: int | None = None) -> PreparedStatement:
        statement = self._session.prepare(cql)
        statement.consistency_level = consistency
        statement.serial_consistency_level = serial or self._serial_cl
        return statement

    def _execute(self, statement: PreparedStatement, params: tuple) -> Any:
        return self._session.execute(statement, params)

    def _concurrent(
        self,
        statements: Sequence[tuple[Statement, tuple | None]],
        tolerate: tuple[type[Exception], ...] = (),
    ) -> list[Any]:
        """Results in order; an error not in ``tolerate`` is raised, the others returned."""
        if not statements:
            return []
        results = execute_concurrent(
            self._session,
            statements,
            concurrency=self.concurrency,
            raise_on_first_error=False,
        )
        out = []
        for ok, value in results:
            if not ok and not isinstance(value, tolerate):
                raise value
            out.append(value)
        return out


def schema_statements(text: str, keyspace: str, replication_cql: str) -> list[str]:
    """The CQL statements of a schema file, placeholders substituted."""
    if not _KEYSPACE.fullmatch(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    body = (
        "\n".join(lines).replace("{keyspace}", keyspace).replace("{replication}", replication_cql)
    )
    return [" ".join(s.split()) for s in body.split(";") if s.strip()]


def _consistency(name: str) -> int:
    try:
        return ConsistencyLevel.name_to_value[name.upper()]
    except KeyError:
        raise ValueError(f"unknown consistency level {name!r}") from None


def _unreachable(points: Sequence[str], port: int, exc: NoHostAvailable) -> str:
    """What a first connect that reached no node says: where, why, what to do.

    >>> err = NoHostAvailable("Unable to connect to any servers",
    ...                       {"127.0.0.1:1": ConnectionRefusedError(111, "Connection refused")})
    >>> print(_unreachable(["127.0.0.1"], 1, err))  # doctest: +NORMALIZE_WHITESPACE
    could not connect to Cassandra at 127.0.0.1:1 (127.0.0.1:1: [Errno 111] Connection refused).
    Is it running (python -m deploy.engines cassandra start)? Are --cassandra and the
    INTEREST_STREAM_CASSANDRA_* settings (contact points, port, credentials, TLS) right?
    Without them the worker uses its embedded store.
    """
    errors = exc.errors if isinstance(getattr(exc, "errors", None), dict) else {}
    why = "; ".join(f"{host}: {error}" for host, error in errors.items()) or str(exc)
    return (
        f"could not connect to Cassandra at {','.join(points)}:{port} ({why[:1000]}). "
        "Is it running (python -m deploy.engines cassandra start)? Are --cassandra and the "
        "INTEREST_STREAM_CASSANDRA_* settings (contact points, port, credentials, TLS) right? "
        "Without them the worker uses its embedded store."
    )


def _firsts(results: Iterable[Any]) -> Iterator[dict[str, Any] | None]:
    for result in results:
        yield result.one()


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _item(row: Mapping[str, Any]) -> StoredItem:
    blob = row["vector"]
    removed = row["removed"] or blob is None
    vector = None if removed else np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return StoredItem(
        row["item_id"],
        vector,
        row["title"] or "",
        tuple(row["tags"] or ()),
        row["content_hash"] or "",
    )
