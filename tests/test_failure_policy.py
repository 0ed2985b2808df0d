"""The failure policy: bad input and one-user failures are isolated, outages are not.

Tier 2 (the processors with in-memory parts). Every test mixes the failure
with valid users and checks that those go on as if nothing happened.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence

import numpy as np
import pytest

from models.encoder.base import l2_normalize
from streams.codec import Rejected
from streams.failures import InfrastructureError, internal_error, is_infrastructure
from streams.processor import (
    BehaviourProcessor,
    CatalogueSync,
    ItemProcessor,
    Outcome,
    RawRecord,
    encode_isolated,
)
from streams.settings import Settings
from streams.stores.sqlite import SqliteStore
from streams.workload import bad_behaviour_records, to_json_bytes

SETTINGS = Settings(top_k=3)
TOPICS = SETTINGS.topics
NOW = 1_750_000_000.0
TS = 1_700_000_000.0


class HashEncoder:
    """A deterministic toy encoder; raises on texts containing ``poison``."""

    name = "hash-encoder/1"
    dim = 16

    def __init__(self, poison: str = "\x00never\x00", broken: bool = False) -> None:
        self.poison, self.broken, self.calls = poison, broken, 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.broken:
            raise RuntimeError("model session lost")
        if any(self.poison in t for t in texts):
            raise ValueError(f"cannot tokenize {self.poison!r}")
        rows = [np.random.default_rng(list(t.encode())).normal(size=self.dim) for t in texts]
        return l2_normalize(np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim))


class Worker:
    def __init__(self, store: SqliteStore, encoder: HashEncoder | None = None) -> None:
        self.store = store
        self.encoder = encoder or HashEncoder()
        self.sync = CatalogueSync(store, self.encoder.dim)
        self.items = ItemProcessor(store, self.sync, self.encoder, TOPICS)
        self.behaviours = BehaviourProcessor(
            store,
            self.sync,
            self.encoder,
            SETTINGS.core_params(),
            TOPICS,
            clock=lambda: NOW,
            limits=SETTINGS.limits(),
        )


@pytest.fixture
def store() -> SqliteStore:
    return SqliteStore(":memory:")


@pytest.fixture
def worker(store: SqliteStore) -> Worker:
    w = Worker(store)
    items = [{"item_id": f"i{n}", "title": f"item number {n}"} for n in range(12)]
    w.items.process(
        [RawRecord(TOPICS.items, 0, n, i["item_id"].encode(), to_json_bytes(i)) for n, i in
         enumerate(items)]
    )  # fmt: skip
    return w


def event(user: str, item: str, n: int, **extra: object) -> dict:
    return {"user_id": user, "item_id": item, "type": "view", "ts": TS + n,
            "event_id": f"{user}-{n}", **extra}  # fmt: skip


def records(values: list[tuple[bytes | None, bytes | None]], start: int = 0) -> list[RawRecord]:
    return [
        RawRecord(TOPICS.behaviours, 0, start + n, key, value, 1000)
        for n, (key, value) in enumerate(values)
    ]


def valid_batch(users: int = 3, per_user: int = 3) -> list[tuple[bytes, bytes]]:
    return [
        (f"ok{u}".encode(), to_json_bytes(event(f"ok{u}", f"i{(u + n) % 12}", n)))
        for n in range(per_user)
        for u in range(users)
    ]


def letters(out: Outcome) -> list[dict]:
    return [json.loads(o.value) for o in out.outputs if o.topic == TOPICS.dead_letters]


def deltas(out: Outcome) -> list[dict]:
    return [json.loads(o.value) for o in out.outputs if o.topic == TOPICS.deltas]


def assert_valid_users_served(out: Outcome, store: SqliteStore, users: int = 3) -> None:
    names = [f"ok{u}" for u in range(users)]
    assert {d["user_id"] for d in deltas(out)} >= set(names)
    states = store.get_states(names)
    assert all(states[u].events_applied == 3 for u in names), states


def test_every_hostile_record_is_dead_lettered_and_the_batch_goes_on(
    worker: Worker, store: SqliteStore
) -> None:
    """The records that once halted the worker, between valid ones, in one batch."""
    bad = [(key, value) for _, key, value, _ in bad_behaviour_records()]
    good = valid_batch()
    mixed = [
        pair for i in range(max(len(bad), len(good))) for pair in good[i : i + 1] + bad[i : i + 1]
    ]
    out = worker.behaviours.process(records(mixed))

    by_offset = {x["source"]["offset"]: x["reason"] for x in letters(out)}
    expected = {
        n: code
        for n, (key, value) in enumerate(mixed)
        for name, k, v, code in bad_behaviour_records()
        if (key, value) == (k, v)
    }
    assert by_offset == expected
    assert_valid_users_served(out, store)
    for state in store.get_states([f"ok{u}" for u in range(3)]).values():
        assert np.isfinite(state.interests[0].hidden).all()


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("weight", 100.5, "out_of_range"),
        ("weight", -1e300, "out_of_range"),
        ("rating", 10.5, "out_of_range"),
        ("rating", -0.1, "out_of_range"),
        ("ts", NOW + 86400 + 1, "ts_future"),
        ("ts", 10**30, "ts_future"),
    ],
)
def test_numbers_outside_the_limits_are_rejected(
    worker: Worker, field: str, value: float, code: str
) -> None:
    ev = event("u", "i1", 0, **{field: value})
    if field == "rating":
        ev["type"] = "rating"
    (letter,) = letters(worker.behaviours.process(records([(b"u", to_json_bytes(ev))])))
    assert letter["reason"] == code and field in letter["message"]


def test_limits_are_settings(store: SqliteStore) -> None:
    strict = Worker(store)
    strict.behaviours.limits = Settings(max_abs_weight=2.0, rating_max=5.0).limits()
    strict.items.process([RawRecord(TOPICS.items, 0, 0, b"i1", b'{"item_id":"i1","title":"x"}')])
    out = strict.behaviours.process(
        records([
            (b"u", to_json_bytes(event("u", "i1", 0, weight=3.0))),
            (b"u", to_json_bytes(event("u", "i1", 1, type="rating", rating=6.0))),
            (b"u", to_json_bytes(event("u", "i1", 2, weight=2.0))),
        ])
    )  # fmt: skip
    assert [x["reason"] for x in letters(out)] == ["out_of_range", "out_of_range"]
    assert out.counts["events"] == 1


def test_extreme_finite_weights_at_the_limit_keep_the_state_finite(
    worker: Worker, store: SqliteStore
) -> None:
    """Thousands of events at the largest allowed weight, all at one instant."""
    values = [
        (b"heavy", to_json_bytes(event("heavy", f"i{n % 12}", 0, weight=100.0, event_id=f"h{n}")))
        for n in range(3000)
    ]
    out = worker.behaviours.process(records(values))
    assert out.counts["events"] == 3000
    state = store.get_states(["heavy"])["heavy"]
    assert np.isfinite(state.interests[0].hidden).all() and all(
        np.isfinite(s) for _, s in state.top_k
    )


def test_an_unreadable_state_is_never_overwritten_and_its_events_are_kept(
    worker: Worker, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    broken = b"ISUS\x07\x00garbage from a newer or broken writer"
    store._db.execute(
        "INSERT INTO user_states (user_id, version, state) VALUES (?, ?, ?)", ("bad", 9, broken)
    )
    values = [(b"bad", to_json_bytes(event("bad", "i1", n))) for n in range(2)] + valid_batch()
    with caplog.at_level(logging.WARNING, logger="interest_stream.processor"):
        out = worker.behaviours.process(records(values))

    assert [x["reason"] for x in letters(out)] == ["state_unreadable"] * 2
    assert [x["source"]["offset"] for x in letters(out)] == [0, 1]
    assert all(x["value_b64"] for x in letters(out)), "original bytes kept for a re-drive"
    assert "unknown state schema version 7" in letters(out)[0]["message"]
    row = store._db.execute("SELECT version, state FROM user_states WHERE user_id='bad'")
    assert row.fetchone() == (9, broken), "the stored state is untouched"
    assert out.counts["state_unreadable"] == 2
    assert f"{TOPICS.behaviours}[0]@0" in caplog.text
    assert_valid_users_served(out, store)


def test_a_core_failure_for_one_event_isolates_that_event(
    worker: Worker, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    updater = worker.behaviours.params.updater
    real = updater.apply

    def apply(hidden, hidden_ts, item, weight, ts):
        if weight == 7.0:
            raise FloatingPointError("a bug in the update rule")
        return real(hidden, hidden_ts, item, weight, ts)

    monkeypatch.setattr(updater, "apply", apply)
    values = [
        (b"mixed", to_json_bytes(event("mixed", "i1", 0))),
        (b"mixed", to_json_bytes(event("mixed", "i2", 1, weight=7.0))),
        (b"mixed", to_json_bytes(event("mixed", "i3", 2))),
        *valid_batch(),
    ]
    out = worker.behaviours.process(records(values))

    (letter,) = letters(out)
    assert letter["reason"] == "internal_error" and letter["source"]["offset"] == 1
    assert "FloatingPointError: a bug in the update rule" in letter["message"]
    state = store.get_states(["mixed"])["mixed"]
    assert state.events_applied == 2 and set(state.recent_event_ids) == {"mixed-0", "mixed-2"}
    assert out.counts["internal_errors"] == 1
    assert_valid_users_served(out, store)


def test_a_non_finite_state_is_refused(
    worker: Worker, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Independently of the input limits: the core never writes a non-finite vector."""
    updater = worker.behaviours.params.updater
    real = updater.apply

    def apply(hidden, hidden_ts, item, weight, ts):
        h, t = real(hidden, hidden_ts, item, weight, ts)
        return (h * np.float32(np.inf) if weight == 5.0 else h), t

    monkeypatch.setattr(updater, "apply", apply)
    values = [
        (b"u", to_json_bytes(event("u", "i1", 0))),
        (b"u", to_json_bytes(event("u", "i2", 1, weight=5.0))),
        *valid_batch(),
    ]
    out = worker.behaviours.process(records(values))
    (letter,) = letters(out)
    assert letter["reason"] == "internal_error" and "NonFiniteState" in letter["message"]
    state = store.get_states(["u"])["u"]
    assert np.isfinite(state.interests[0].hidden).all() and state.events_applied == 1
    assert_valid_users_served(out, store)


def test_a_decoder_bug_dead_letters_the_record_not_the_batch(
    worker: Worker, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import codec

    real = codec.decode_behaviour

    def decode(key, value, position, now, limits=codec.DEFAULT_LIMITS):
        if b"trigger" in (value or b""):
            raise IndexError("a decoder bug")
        return real(key, value, position, now, limits)

    monkeypatch.setattr(codec, "decode_behaviour", decode)
    values = [(b"t", to_json_bytes(event("t", "i1", 0, note="trigger"))), *valid_batch()]
    out = worker.behaviours.process(records(values))
    (letter,) = letters(out)
    assert letter["reason"] == "internal_error" and "IndexError" in letter["message"]
    assert letter["source"] == {"topic": TOPICS.behaviours, "partition": 0, "offset": 0}
    assert_valid_users_served(out, store)


def test_a_failure_after_the_state_write_is_isolated_without_applying_twice(
    worker: Worker, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line: a batch that raises anywhere is redone one record at a time."""
    from streams import codec

    real = codec.encode_delta

    def encode(delta, source_ts_ms, schema=2):
        if delta.user_id == "ok1":
            raise TypeError("cannot serialise")
        return real(delta, source_ts_ms, schema)

    monkeypatch.setattr(codec, "encode_delta", encode)
    out = worker.behaviours.process(records(valid_batch()))

    assert out.counts["isolated_batches"] == 1
    assert {x["reason"] for x in letters(out)} == {"internal_error"}
    assert sorted(x["source"]["offset"] for x in letters(out)) == [1, 4, 7]  # ok1's records
    states = store.get_states(["ok0", "ok1", "ok2"])
    assert all(s.events_applied == 3 for s in states.values()), "no event applied twice"
    assert {d["user_id"] for d in deltas(out)} == {"ok0", "ok2"}


class DownStore:
    """A store whose reads fail like an unreachable database."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def get_states(self, user_ids):
        raise sqlite3.OperationalError("unable to open database file")


def test_an_outage_is_not_a_bad_record(worker: Worker, store: SqliteStore) -> None:
    """Infrastructure errors propagate (the agent retries the batch); nothing is dead-lettered."""
    worker.behaviours.store = DownStore(store)
    with pytest.raises(sqlite3.OperationalError):
        worker.behaviours.process(records(valid_batch()))
    worker.behaviours.store = store
    out = worker.behaviours.process(records(valid_batch()))  # the retry, once it is back
    assert letters(out) == [] and out.counts["events"] == 9


def test_one_text_the_encoder_fails_on_is_isolated(store: SqliteStore) -> None:
    w = Worker(store, HashEncoder(poison="\u2603"))
    items = [
        {"item_id": "a", "title": "fine"},
        {"item_id": "b", "title": "snowman \u2603"},
        {"item_id": "c", "title": "also fine"},
    ]
    out = w.items.process(
        [RawRecord(TOPICS.items, 0, n, i["item_id"].encode(), to_json_bytes(i)) for n, i in
         enumerate(items)]
    )  # fmt: skip
    (letter,) = letters(out)
    assert letter["reason"] == "encode_failed" and letter["source"]["offset"] == 1
    assert set(store.get_items(["a", "b", "c"])) == {"a", "c"}

    # Inline text the encoder fails on: the event waits for the item, it is not dropped.
    value = to_json_bytes(event("u", "new", 0, text="\u2603 inline"))
    out = w.behaviours.process(records([(b"u", value)]))
    assert letters(out) == [] and out.counts["parked"] == 1
    assert out.counts["inline_encode_failed"] == 1
    assert store.get_states(["u"])["u"].pending[0].item_id == "new"


def test_an_encoder_that_fails_on_everything_is_an_outage() -> None:
    with pytest.raises(InfrastructureError, match="fails on every text"):
        encode_isolated(HashEncoder(broken=True), ["a", "b"])


def test_non_finite_embeddings_are_encoder_errors() -> None:
    class NanEncoder(HashEncoder):
        def encode(self, texts):
            out = super().encode(texts)
            out[[i for i, t in enumerate(texts) if t == "nan"]] = np.nan
            return out

    got = encode_isolated(NanEncoder(), ["ok", "nan"])
    assert isinstance(got[0], np.ndarray) and isinstance(got[1], ValueError)


def test_failure_classification() -> None:
    from cassandra import OperationTimedOut
    from cassandra.cluster import NoHostAvailable
    from kafka.errors import KafkaConnectionError

    infra = [
        NoHostAvailable("down", {}),
        OperationTimedOut(),
        KafkaConnectionError(),
        TimeoutError(),
        ConnectionResetError(),
        sqlite3.OperationalError("disk I/O error"),
        InfrastructureError("encoder"),
    ]
    assert all(is_infrastructure(e) for e in infra)
    wrapped = ValueError("outer")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_infrastructure(wrapped)
    for exc in (KeyError("x"), ValueError("x"), ZeroDivisionError(), UnicodeEncodeError(
            "utf-8", "\ud800", 0, 1, "surrogates not allowed")):  # fmt: skip
        assert not is_infrastructure(exc)
    reason = internal_error(KeyError("user_id"), "core")
    assert reason == Rejected("internal_error", "core: KeyError: 'user_id'")
