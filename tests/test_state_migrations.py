"""State schema migrations: old bytes are read and upgraded, newer ones are an isolated error."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from models.behaviour import Behaviour, Position
from models.state import (
    MIGRATIONS,
    SCHEMA_VERSION,
    PendingEvent,
    StateDecodeError,
    UnreadableState,
    UserState,
    WindowEntry,
    decode_state,
    encode_state,
    read_state,
)
from streams.stores.sqlite import SqliteStore

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_older_schema_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_bytes_written_by_schema_1_are_read_and_upgraded() -> None:
    """`state_v1.bin` was written by the code of schema 1 (commit 7ab758d), kept as is."""
    data = (FIXTURES / "state_v1.bin").read_bytes()
    assert struct.unpack_from("<4sH", data) == (b"ISUS", 1)
    state = decode_state(data)
    assert state == UserState(
        user_id="u-fixture",
        version=7,
        interests=state.interests,
        long_term=state.long_term,
        updater="time-decay",  # was "time-decay(half_life_s=259200)"
        last_event_ts=1_700_000_300.0,
        window=(
            WindowEntry("i1", "view", 1_700_000_000.0, 1.0),
            WindowEntry("i2", "like", 1_700_000_300.0, 3.0),
        ),
        consumed=frozenset({"i1", "i2"}),
        recent_event_ids=("e1", "e2"),
        offsets={"behaviours[0]": 41},
        pending=(PendingEvent("i9", "click", 1_700_000_200.0, 1.5, "e3", position=None),),
        top_k=(("i3", 0.5), ("i4", 0.25)),
        events_applied=2,
    )
    (only,) = state.interests
    np.testing.assert_array_equal(only.hidden, np.linspace(-1, 1, 8, dtype=np.float32))
    assert only.hidden_ts == only.mass_ts == 1_700_000_300.0 and only.events == 2
    upgraded = encode_state(state)
    assert struct.unpack_from("<4sH", upgraded) == (b"ISUS", SCHEMA_VERSION)
    assert encode_state(decode_state(upgraded)) == upgraded


def test_bytes_written_by_schema_2_are_read_and_upgraded() -> None:
    """`state_v2.bin` was written by the code of schema 2 (commit 348face), kept as is.

    The one interest vector becomes the only interest (mass 1 at its time);
    the long-term profile, topics, gap and query start empty.
    """
    data = (FIXTURES / "state_v2.bin").read_bytes()
    assert struct.unpack_from("<4sH", data) == (b"ISUS", 2)
    state = decode_state(data)
    (only,) = state.interests
    np.testing.assert_array_equal(only.hidden, np.linspace(-1, 1, 8, dtype=np.float32))
    assert (only.hidden_ts, only.mass, only.mass_ts, only.events) == (
        1_700_000_600.0,
        1.0,
        1_700_000_600.0,
        2,
    )
    assert state.long_term.shape == (0,) and state.topics == {} and state.query is None
    assert state.last_event_ts == 1_700_000_600.0 and state.gap_s is None
    assert state.pending[0].position == Position("behaviours", 1, 76)
    assert state.offsets == {"behaviours[1]": 77} and state.version == 12
    upgraded = encode_state(state)
    assert struct.unpack_from("<4sH", upgraded) == (b"ISUS", SCHEMA_VERSION)
    assert encode_state(decode_state(upgraded)) == upgraded


def test_a_migrated_state_goes_on_through_the_core() -> None:
    """A schema-2 user keeps their interest and takes new events (no reset)."""
    from models.catalogue import Catalogue
    from models.core import CoreParams, step

    cat = Catalogue(8)
    for n in range(8):
        cat.upsert(f"i{n}", np.eye(8, dtype=np.float32)[n] + 0.05)
    state = decode_state((FIXTURES / "state_v2.bin").read_bytes())
    ev = Behaviour("u-fixture-2", "i7", "like", 1_700_000_900.0, "e9")
    result = step(state, [ev], cat, 0.0, CoreParams(k=3))
    assert result.migrated_from is None and result.state.version == 13
    assert result.state.events_applied == 3 and result.state.gap_s == 300.0
    assert sum(i.events for i in result.state.interests) == 3


def test_pending_positions_round_trip() -> None:
    pos = Position("behaviours", 3, 99)
    state = UserState("u", pending=(PendingEvent("i", "view", 1.0, 1.0, "e", pos),))
    assert decode_state(encode_state(state)).pending[0].position == pos


def test_a_newer_schema_is_a_clear_error_and_an_unreadable_state() -> None:
    data = bytearray(encode_state(UserState("u")))
    struct.pack_into("<H", data, 4, SCHEMA_VERSION + 1)
    with pytest.raises(StateDecodeError, match=f"version {SCHEMA_VERSION + 1}"):
        decode_state(bytes(data))
    got = read_state("u", bytes(data))
    assert isinstance(got, UnreadableState) and "this code reads" in got.error


@pytest.mark.parametrize(
    "data",
    [b"", b"ISUS", b"XXXX\x02\x00\x00\x00\x00\x00", b"ISUS\x02\x00\x05\x00\x00\x00{bad}",
     b"ISUS\x02\x00\x02\x00\x00\x00{}", b"ISUS\x00\x00\x02\x00\x00\x00{}"],
    ids=["empty", "short", "magic", "json", "fields", "version-0"],
)  # fmt: skip
def test_corrupt_bytes_are_unreadable_never_an_exception(data: bytes) -> None:
    assert isinstance(read_state("u", data), UnreadableState)


def test_a_store_hands_back_unreadable_rows_without_raising() -> None:
    store = SqliteStore(":memory:")
    store.put_states([UserState("ok", version=1)])
    store._db.execute("INSERT INTO user_states VALUES ('bad', 3, x'00')")
    got = store.get_states(["ok", "bad", "nobody"])
    assert isinstance(got["ok"], UserState) and isinstance(got["bad"], UnreadableState)
    assert "nobody" not in got


def test_bytes_written_by_schema_3_are_read_and_upgraded() -> None:
    """`state_v3.bin` was written by the code of schema 3 (commit b8e0d78), kept as is.

    Everything carries over; the shift detector starts fresh.
    """
    data = (FIXTURES / "state_v3.bin").read_bytes()
    assert struct.unpack_from("<4sH", data) == (b"ISUS", 3)
    state = decode_state(data)
    assert [i.events for i in state.interests] == [2, 1]
    assert state.topics == {3: 0.75, 5: 0.25} and state.gap_s == 300.0
    assert state.query is not None and state.query.text == "jazz, nothing loud"
    np.testing.assert_array_equal(state.query.negatives[0], np.eye(8, dtype=np.float32)[2])
    assert (state.shift_detector, state.shifts, state.last_shift_ts) == (None, 0, None)
    upgraded = encode_state(state)
    assert struct.unpack_from("<4sH", upgraded) == (b"ISUS", SCHEMA_VERSION)
    assert encode_state(decode_state(upgraded)) == upgraded


def test_a_corrupt_shift_detector_is_an_unreadable_state() -> None:
    state = UserState("u", shift_detector=(30, 0.5, 0.1, -0.2, 0.3, 0.4), shifts=2)
    data = encode_state(state)
    assert decode_state(data).shift_detector == (30, 0.5, 0.1, -0.2, 0.3, 0.4)
    bad = data.replace(b'"detector":[30,', b'"detector":[-3,')  # same length, n < 0
    assert bad != data
    with pytest.raises(StateDecodeError, match="corrupt state header"):
        decode_state(bad)


def test_bytes_written_by_schema_4_are_read_and_upgraded() -> None:
    """`state_v4.bin` was written by the code of schema 4 (commit 094f87e), kept as is.

    Everything carries over; the last query has no positive vectors (its
    interests are already in ``interests``, nothing to re-open on a rebase).
    """
    data = (FIXTURES / "state_v4.bin").read_bytes()
    assert struct.unpack_from("<4sH", data) == (b"ISUS", 4)
    state = decode_state(data)
    assert [i.events for i in state.interests] == [2, 1]
    assert state.query is not None and state.query.text == "jazz, nothing loud"
    np.testing.assert_array_equal(state.query.negatives[0], np.eye(8, dtype=np.float32)[2])
    assert state.query.positives == () and state.query.positive_phrases() == []
    assert state.shift_detector == (3, 0.5, 0.1, -0.2, 0.3, 0.4) and state.shifts == 1
    upgraded = encode_state(state)
    assert struct.unpack_from("<4sH", upgraded) == (b"ISUS", SCHEMA_VERSION)
    assert encode_state(decode_state(upgraded)) == upgraded


def test_a_query_keeps_its_positive_vectors_and_weight_through_its_bytes() -> None:
    from models.state import LastQuery, QueryPhrase

    e = np.eye(4, dtype=np.float32)
    query = LastQuery(
        "jazz and space, nothing loud",
        5.0,
        (QueryPhrase("jazz", 1, 0.6), QueryPhrase("space", 1, 0.4), QueryPhrase("loud", -1, 1.0)),
        negatives=(e[3],),
        positives=(e[0], e[1]),
        weight=2.5,
    )
    back = decode_state(encode_state(UserState("u", long_term=e[2], query=query))).query
    assert back is not None and back.weight == 2.5
    np.testing.assert_array_equal(np.stack(back.negatives), e[[3]])
    assert [(p.text, v.tolist()) for p, v in back.positive_phrases()] == [
        ("jazz", e[0].tolist()),
        ("space", e[1].tolist()),
    ]
