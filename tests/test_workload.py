"""Tests for the seeded workload generators in `streams.workload`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from streams.workload import (
    TAGS,
    Drift,
    Workload,
    bad_behaviour_records,
    bad_item_records,
    movielens_workload,
    synthetic_workload,
    to_json_bytes,
)
from tests.paths import ML_100K, require_ml100k


@pytest.fixture(scope="module")
def synth() -> Workload:
    return synthetic_workload()


@pytest.fixture(scope="module")
def movielens() -> Workload:
    return movielens_workload(require_ml100k())


def test_synthetic_same_seed_same_output() -> None:
    a, b = synthetic_workload(seed=3), synthetic_workload(seed=3)
    assert a == b
    c = synthetic_workload(seed=4)
    assert c.events != a.events
    assert [i["title"] for i in c.items] != [i["title"] for i in a.items]


def test_synthetic_shape(synth: Workload) -> None:
    assert len(synth.items) == 60 * len(TAGS)
    assert len(synth.events) == 40 * 60
    assert len(synth.drifts) == 20
    assert "40 users" in synth.description
    assert {t for i in synth.items for t in i["tags"]} == set(TAGS)
    types = Counter(e["type"] for e in synth.events)
    assert set(types) <= {"view", "click", "like", "purchase", "skip"}
    assert types.most_common(1)[0][0] == "view"
    assert 0 < types["purchase"] < types["like"] < types["view"]


def test_synthetic_ids_unique_and_titles_readable(synth: Workload) -> None:
    ids = [i["item_id"] for i in synth.items]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "i0001"
    titles = [i["title"] for i in synth.items]
    assert len(set(titles)) == len(titles)
    assert all(t[0].isupper() and len(t.split()) >= 6 for t in titles)
    assert all(i["text"].startswith(i["title"] + ". ") for i in synth.items)
    event_ids = [e["event_id"] for e in synth.events]
    assert len(set(event_ids)) == len(event_ids)
    assert all(e["event_id"].startswith(f"e-{e['user_id']}-") for e in synth.events)


@pytest.mark.parametrize("seed", [7, 11])
def test_synthetic_event_invariants(seed: int) -> None:
    w = synthetic_workload(seed=seed)
    ts = [e["ts"] for e in w.events]
    assert ts == sorted(ts)
    assert all(isinstance(t, float) for t in ts)
    item_ids = {i["item_id"] for i in w.items}
    assert all(e["item_id"] in item_ids for e in w.events)
    pairs = [(e["user_id"], e["item_id"]) for e in w.events]
    assert len(set(pairs)) == len(pairs), "a user consumed an item twice"
    # Users are interleaved in time, not one after another.
    assert len({e["user_id"] for e in w.events[:40]}) > 10


def _user_tags(w: Workload, user_id: str) -> list[str]:
    tag_of = {i["item_id"]: i["tags"][0] for i in w.items}
    return [tag_of[e["item_id"]] for e in w.events if e["user_id"] == user_id]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_synthetic_drifts_are_real(seed: int) -> None:
    w = synthetic_workload(seed=seed)
    assert w.drifts
    for d in w.drifts:
        assert isinstance(d, Drift) and d.from_tag != d.to_tag
        assert 0.4 * 60 <= d.event_index <= 0.7 * 60
        tags = _user_tags(w, d.user_id)
        before, after = tags[: d.event_index], tags[d.event_index :]
        assert Counter(before).most_common(1)[0][0] == d.from_tag
        assert Counter(after).most_common(1)[0][0] == d.to_tag
        own = [e for e in w.events if e["user_id"] == d.user_id]
        assert own[d.event_index]["ts"] == d.ts
        assert own[d.event_index]["event_id"] == f"e-{d.user_id}-{d.event_index:04d}"


def test_synthetic_mostly_on_tag_when_items_suffice() -> None:
    w = synthetic_workload(users=10, items_per_tag=100, events_per_user=40, drift_fraction=0.0)
    assert not w.drifts
    share = []
    for u in {e["user_id"] for e in w.events}:
        tags = _user_tags(w, u)
        share.append(Counter(tags).most_common(1)[0][1] / len(tags))
    assert 0.75 < sum(share) / len(share) < 0.95


def test_synthetic_edge_parameters() -> None:
    w = synthetic_workload(users=3, items_per_tag=2, events_per_user=100, drift_fraction=1.0)
    assert len(w.events) == 3 * 2 * len(TAGS)  # capped by the catalogue size
    assert len(w.drifts) == 3
    big = synthetic_workload(users=1, items_per_tag=300, events_per_user=1)
    assert len({i["title"] for i in big.items}) == 300 * len(TAGS)
    with pytest.raises(ValueError):
        synthetic_workload(drift_fraction=1.5)


def test_movielens_full(movielens: Workload) -> None:
    assert len(movielens.items) == 1682
    assert len(movielens.events) == 100_000
    assert len({e["user_id"] for e in movielens.events}) == 943
    assert movielens.drifts == []
    toy = movielens.items[0]
    assert toy["item_id"] == "m1" and toy["title"] == "Toy Story (1995)"
    assert {"Animation", "Children's", "Comedy"} <= set(toy["tags"])
    assert toy["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    ts = [e["ts"] for e in movielens.events]
    assert ts == sorted(ts)
    first = movielens.events[0]
    assert first["type"] == "rating" and isinstance(first["rating"], float)
    assert first["user_id"].startswith("u") and first["item_id"].startswith("m")
    assert len({e["event_id"] for e in movielens.events}) == 100_000
    assert all("unknown" not in i["tags"] or i["tags"] == ["unknown"] for i in movielens.items)
    item_ids = {i["item_id"] for i in movielens.items}
    assert all(e["item_id"] in item_ids for e in movielens.events)


def test_movielens_max_users() -> None:
    w = movielens_workload(str(ML_100K), max_users=10)
    assert {e["user_id"] for e in w.events} == {f"u{n}" for n in range(1, 11)}
    assert len(w.items) == 1682


def test_movielens_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"u\.genre"):
        movielens_workload(tmp_path)
    (tmp_path / "u.genre").write_text("unknown|0\n")
    with pytest.raises(FileNotFoundError, match=r"u\.item"):
        movielens_workload(tmp_path)


def _decode(value: bytes) -> object:
    return json.loads(value.decode("utf-8"))


def test_bad_behaviour_records() -> None:
    records = bad_behaviour_records()
    assert records == bad_behaviour_records()
    codes = {name: code for name, _, _, code in records}
    assert len(codes) == len(records)
    assert set(codes.values()) == {
        "invalid_json", "wrong_type", "missing_field", "unknown_type",
        "ts_future", "ts_before_epoch", "too_large", "out_of_range",
    }  # fmt: skip
    by_name = {name: value for name, _, value, _ in records}
    # The hostile ones are valid JSON to a permissive parser: the codec must reject them itself.
    for name in ("ts_huge_integer", "weight_extreme", "rating_extreme", "weight_nan",
                 "lone_surrogate_user_id", "iso_ts_year_1"):  # fmt: skip
        assert isinstance(_decode(by_name[name]), dict), name
    assert len(by_name["text_too_large"]) > 2_000_000
    with pytest.raises(UnicodeDecodeError):
        by_name["non_utf8"].decode("utf-8")
    with pytest.raises(json.JSONDecodeError):
        _decode(by_name["invalid_json"])
    assert isinstance(_decode(by_name["not_an_object"]), list)
    assert _decode(by_name["unknown_type"])["type"] == "teleport"
    assert _decode(by_name["ts_future"])["ts"] > 7e9
    assert _decode(by_name["ts_before_epoch"])["ts"] < 0
    assert "user_id" not in _decode(by_name["missing_user_id"])
    assert "item_id" not in _decode(by_name["missing_item_id"])
    # Only the named defect: the other fields keep their valid values.
    ok = _decode(by_name["ts_is_list"])
    assert ok["user_id"] == "bad-user" and ok["item_id"] == "i0001" and ok["type"] == "view"


def test_bad_item_records() -> None:
    records = bad_item_records()
    codes = {name: code for name, _, _, code in records}
    assert codes == {
        "invalid_json": "invalid_json",
        "missing_item_id": "missing_field",
        "title_not_string": "wrong_type",
        "tags_not_strings": "wrong_type",
        "text_too_large": "too_large",
        "title_lone_surrogate": "invalid_json",
        "tag_lone_surrogate": "invalid_json",
        "deeply_nested": "invalid_json",
    }
    by_name = {name: value for name, _, value, _ in records}
    assert len(by_name["text_too_large"]) > 2_000_000
    assert "item_id" not in _decode(by_name["missing_item_id"])


def test_to_json_bytes_is_compact_and_sorted() -> None:
    assert to_json_bytes({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert to_json_bytes({"t": "café"}) == '{"t":"café"}'.encode()
