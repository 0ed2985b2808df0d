"""Topic contracts: every bad record gets a reason, good ones decode exactly."""

from __future__ import annotations

import base64
import json

import pytest

from models.behaviour import Position
from streams import codec
from streams.codec import ItemTombstone, ItemUpdate, Rejected
from streams.workload import bad_behaviour_records, bad_item_records, to_json_bytes

NOW = 1_750_000_000.0
POS = Position("behaviours", 2, 41)
GOOD = {"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1_700_000_000}


@pytest.mark.parametrize(
    ("name", "key", "value", "code"),
    bad_behaviour_records(),
    ids=[r[0] for r in bad_behaviour_records()],
)
def test_bad_behaviours_are_rejected_with_their_reason(name, key, value, code) -> None:
    got = codec.decode_behaviour(key, value, POS, NOW)
    assert isinstance(got, Rejected), name
    assert got.code == code


@pytest.mark.parametrize(
    ("name", "key", "value", "code"), bad_item_records(), ids=[r[0] for r in bad_item_records()]
)
def test_bad_items_are_rejected_with_their_reason(name, key, value, code) -> None:
    got = codec.decode_item(key, value)
    assert isinstance(got, Rejected), name
    assert got.code == code


def test_good_behaviour_decodes() -> None:
    got = codec.decode_behaviour(b"u1", to_json_bytes({**GOOD, "event_id": "e1"}), POS, NOW)
    assert got.user_id == "u1" and got.item_id == "i1" and got.type == "click"
    assert got.ts == 1_700_000_000.0 and got.event_id == "e1" and got.position == POS


def test_iso_timestamps_and_derived_event_ids() -> None:
    value = to_json_bytes({**GOOD, "ts": "2023-11-14T22:13:20+00:00"})
    a = codec.decode_behaviour(b"u1", value, POS, NOW)
    b = codec.decode_behaviour(b"u1", value, POS, NOW)
    assert a.ts == 1_700_000_000.0
    assert a.event_id == b.event_id and a.event_id.startswith("h-")
    naive = to_json_bytes({**GOOD, "ts": "2023-11-14T22:13:20"})
    assert codec.decode_behaviour(b"u1", naive, POS, NOW).code == "wrong_type"


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"type": "rating"}, "missing_field"),
        ({"weight": "heavy"}, "wrong_type"),
        ({"weight": True}, "wrong_type"),
        ({"user_id": ""}, "wrong_type"),
        ({"user_id": "x" * 300}, "wrong_type"),
        ({"event_id": 5}, "wrong_type"),
        ({"ts": None}, "missing_field"),
    ],
)
def test_more_invalid_fields(patch: dict, code: str) -> None:
    got = codec.decode_behaviour(b"u1", to_json_bytes({**GOOD, **patch}), POS, NOW)
    assert isinstance(got, Rejected) and got.code == code


def test_key_must_match_user() -> None:
    got = codec.decode_behaviour(b"someone-else", to_json_bytes(GOOD), POS, NOW)
    assert got.code == "key_mismatch"


def test_items_and_tombstones() -> None:
    value = to_json_bytes({"item_id": "i1", "title": "Alien", "text": "In space", "tags": ["sf"]})
    assert codec.decode_item(b"i1", value) == ItemUpdate("i1", "Alien", "Alien. In space", ("sf",))
    assert codec.decode_item(b"i1", None) == ItemTombstone("i1")
    assert codec.decode_item(None, None).code == "missing_field"


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    raw = b"\xff{not json"
    rej = codec.decode_behaviour(b"k", raw, POS, NOW)
    letter = json.loads(codec.encode_dead_letter(b"k", raw, POS, rej, NOW))
    assert base64.b64decode(letter["value_b64"]) == raw
    assert letter["source"] == {"topic": "behaviours", "partition": 2, "offset": 41}
    assert letter["reason"] == "invalid_json" and letter["message"]


@pytest.mark.parametrize(
    "wakeup",
    [
        codec.Wakeup("u1", ("i1", "i2")),
        codec.Wakeup("u1", snapshot="snap-1"),
        codec.Wakeup("u1", ("i1",), snapshot="snap-2"),
    ],
)
def test_wakeups_round_trip(wakeup: codec.Wakeup) -> None:
    assert codec.decode_wakeup(codec.encode_wakeup(wakeup)) == wakeup


def test_a_wakeup_without_snapshot_is_a_plain_rerank() -> None:
    value = json.dumps({"schema": codec.WAKEUP_SCHEMA, "user_id": "u1", "item_ids": ["i1"]})
    assert codec.decode_wakeup(value.encode()) == codec.Wakeup("u1", ("i1",), None)


@pytest.mark.parametrize("snapshot", [7, "", "x" * 257, ["a"]])
def test_a_bad_snapshot_request_id_is_rejected(snapshot: object) -> None:
    value = json.dumps({"user_id": "u1", "snapshot": snapshot}).encode()
    got = codec.decode_wakeup(value)
    assert isinstance(got, Rejected) and got.code == "wrong_type"
    assert "request id" in got.message


def test_a_delta_names_the_snapshot_request_it_answers() -> None:
    from models.core import Cause, Delta

    delta = Delta("u1", 4, NOW, Cause(kind="snapshot", request_id="snap-9"), (), (), (), (), {})
    body = json.loads(codec.encode_delta(delta, 123))
    assert body["cause"]["kind"] == "snapshot" and body["cause"]["request_id"] == "snap-9"
    assert body["cause"]["source_ts_ms"] == 123


def test_a_schema_2_delta_names_its_model_and_schema_1_does_not() -> None:
    from models.core import Cause, Delta

    delta = Delta("u1", 4, NOW, Cause(), (), (), (), (), {}, model="learned-gru(abc)")
    assert json.loads(codec.encode_delta(delta, None))["model"] == "learned-gru(abc)"
    got = codec.decode_delta(codec.encode_delta(delta, None))
    assert not isinstance(got, Rejected) and got.model == "learned-gru(abc)"
    assert "model" not in json.loads(codec.encode_delta(delta, None, schema=1))
    old = codec.decode_delta(codec.encode_delta(delta, None, schema=1))
    assert not isinstance(old, Rejected) and old.model is None
