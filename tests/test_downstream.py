"""The consumer side: `codec.decode_delta` and `streams.downstream.RecommendationView`."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.behaviour import Behaviour, Position
from models.catalogue import Catalogue
from models.core import Cause, CoreParams, Delta, diff, restate, step
from models.state import UserState
from streams import downstream
from streams.codec import DeltaRecord, Rejected, decode_delta, encode_delta
from streams.downstream import RecommendationView

DIM = 8


def _catalogue(n: int = 30) -> Catalogue:
    rng = np.random.default_rng(3)
    catalogue = Catalogue(DIM)
    for i in range(n):
        vec = rng.normal(size=DIM).astype(np.float32)
        catalogue.upsert(f"i{i:02d}", vec / np.linalg.norm(vec), [f"tag{i % 3}"])
    return catalogue


def _events(user: str, items: list[str], first_offset: int = 0) -> list[Behaviour]:
    return [
        Behaviour(user, item, "like", 1_700_000_000.0 + 60 * k, f"e-{user}-{first_offset + k}",
                  position=Position("behaviours", 0, first_offset + k))
        for k, item in enumerate(items)
    ]  # fmt: skip


def _core_deltas() -> list[tuple[Delta, int | None]]:
    """Deltas of every cause kind exactly as the worker's core makes them."""
    catalogue, params = _catalogue(), CoreParams(k=5)
    first = step(None, _events("ü-1", ["i01", "i02"]), catalogue, 1e9, params)
    second = step(first.state, _events("ü-1", ["i07"], 2), catalogue, 1e9 + 1, params)
    gone = first.state.top_k[0][0]
    catalogue.remove(gone)
    items = step(second.state, [], catalogue, 1e9 + 2, params, refresh=[gone])
    assert (first.delta, second.delta, items.delta) != (None, None, None)
    replay = restate(items.state, catalogue, 1e9 + 3, params)
    snapshot = restate(
        items.state, catalogue, 1e9 + 4, params, Cause(kind="snapshot", request_id="req-1")
    )
    nobody = restate(
        UserState("nobody"),
        catalogue,
        1e9 + 5,
        params,
        Cause(kind="snapshot", request_id="req-2"),
    )
    return [
        (first.delta, 1_763_868_000_050),
        (second.delta, None),
        (items.delta, 17),
        (replay, None),
        (snapshot, 1_763_868_000_999),
        (nobody, None),
    ]


CORE_DELTAS = _core_deltas()


@pytest.mark.parametrize(
    ("delta", "source_ts_ms"), CORE_DELTAS, ids=[d.cause.kind for d, _ in CORE_DELTAS]
)
def test_decode_delta_restores_what_encode_delta_wrote(delta: Delta, source_ts_ms: int | None):
    got = decode_delta(encode_delta(delta, source_ts_ms))
    assert isinstance(got, DeltaRecord), got
    assert (got.user_id, got.version, got.ts) == (delta.user_id, delta.version, delta.ts)
    cause = delta.cause
    assert got.cause.kind == cause.kind
    assert got.cause.event_ids == cause.event_ids and got.cause.item_ids == cause.item_ids
    assert got.cause.last_event_ts == cause.last_event_ts
    assert got.cause.request_id == cause.request_id
    assert got.cause.source_ts_ms == source_ts_ms
    assert got.added == delta.added and got.removed == delta.removed
    assert got.reranked == delta.reranked and got.top_k == delta.top_k
    assert got.interest == json.loads(json.dumps(delta.interest))
    assert got.model == delta.model and delta.model, "every delta names its model"


def test_every_cause_kind_is_covered():
    assert {d.cause.kind for d, _ in CORE_DELTAS} == {"events", "items", "replay", "snapshot"}


VALID = json.loads(encode_delta(*CORE_DELTAS[1]))


def _with(path: tuple, value: object) -> bytes:
    """VALID with the field at ``path`` set to ``value`` (``...`` removes it)."""
    body = json.loads(json.dumps(VALID))
    target = body
    for part in path[:-1]:
        target = target[part]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "missing_value"),
        (b"", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'{"schema": ', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"version": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b"[1, 2]", "wrong_type"),
        (_with(("schema",), "interest-stream.delta/3"), "wrong_schema"),
        (_with(("schema",), ["interest-stream.delta/2"]), "wrong_schema"),
        (_with(("user_id",), ...), "missing_field"),
        (_with(("user_id",), ""), "wrong_type"),
        (_with(("version",), "7"), "wrong_type"),
        (_with(("version",), True), "wrong_type"),
        (_with(("version",), -1), "wrong_type"),
        (_with(("ts",), None), "missing_field"),
        (b'{"schema": "interest-stream.delta/1", "user_id": "u", "version": 1, "ts": NaN}',
         "wrong_type"),
        (_with(("ts",), 1e400), "wrong_type"),
        (_with(("cause",), []), "wrong_type"),
        (_with(("cause", "kind"), "teleport"), "unknown_type"),
        (_with(("cause", "event_ids"), "e1"), "wrong_type"),
        (_with(("cause", "event_ids"), ["e1", 2]), "wrong_type"),
        (_with(("cause", "source_ts_ms"), 1.5), "wrong_type"),
        (_with(("cause", "request_id"), 3), "wrong_type"),
        (_with(("added",), {"item_id": "i1"}), "wrong_type"),
        (_with(("added",), [{"item_id": "i1", "score": 0.5}]), "missing_field"),
        (_with(("removed",), [{"item_id": "i1", "previous_rank": "0"}]), "wrong_type"),
        (_with(("reranked",), [7]), "wrong_type"),
        (_with(("top_k",), [{"item_id": "i1", "score": "high"}]), "wrong_type"),
        (_with(("interest",), ...), "missing_field"),
        (_with(("interest",), "jazz"), "wrong_type"),
    ],
)  # fmt: skip
def test_a_malformed_delta_is_rejected_with_a_reason(value: bytes | None, code: str):
    got = decode_delta(value)
    assert isinstance(got, Rejected), got
    assert got.code == code and got.message


def test_unknown_fields_are_ignored():
    body = {**VALID, "shard": 3, "cause": {**VALID["cause"], "trace": "x"}}
    assert isinstance(decode_delta(json.dumps(body).encode()), DeltaRecord)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from([*sorted(VALID), "cause.kind", "cause.event_ids", "top_k.0"]),
    value=JSON,
    cut=st.integers(0, 2000),
)
def test_decode_delta_never_raises(field: str, value: object, cut: int):
    body = json.loads(json.dumps(VALID))
    path = [int(p) if p.isdigit() else p for p in field.split(".")]
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    raw = json.dumps(body).encode()
    for candidate in (raw, raw[:cut], raw[cut:]):
        assert isinstance(decode_delta(candidate), DeltaRecord | Rejected)


# --- the view --------------------------------------------------------------------


def _delta(
    version: int,
    old: list[tuple[str, float]],
    new: list[tuple[str, float]],
    kind: str = "events",
    user: str = "u1",
) -> bytes:
    """A delta from list ``old`` to ``new`` (a restatement of ``new`` for replay/snapshot)."""
    state = UserState(user, version=version, top_k=tuple(new))
    if kind in ("replay", "snapshot"):
        made = Delta(user, version, 0.0, Cause(kind=kind), (), (), (), tuple(new), {})
    else:
        made = diff(old, new, state, 0.0, Cause(kind=kind), {})
        assert made is not None
    return encode_delta(made, None)


L1 = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
L2 = [("b", 0.95), ("a", 0.9), ("d", 0.6)]
L3 = [("d", 0.9), ("e", 0.8), ("a", 0.5)]
L4 = [("e", 0.9), ("f", 0.8), ("d", 0.7)]


def test_deltas_in_order_build_the_list():
    view = RecommendationView()
    for version, (old, new) in enumerate([([], L1), (L1, L2), (L2, L3)], start=1):
        assert view.apply_bytes(_delta(version, old, new)) == "applied"
    assert view.top_k("u1") == tuple(L3) and view.version("u1") == 3
    assert view.counts()["applied"] == 3


def test_out_of_order_and_duplicate_deltas_are_dropped():
    view = RecommendationView()
    d1, d2, d3 = _delta(1, [], L1), _delta(2, L1, L2), _delta(3, L2, L3)
    outcomes = [view.apply_bytes(d) for d in (d1, d3, d2, d1, d3, d3)]
    assert outcomes == ["applied", "repaired", "stale", "stale", "duplicate", "duplicate"]
    assert view.top_k("u1") == tuple(L3) and view.version("u1") == 3
    assert view.counts() == {"applied": 1, "repaired": 1, "duplicate": 2, "stale": 2,
                             "conflict": 0, "rejected": 0}  # fmt: skip


def test_versions_may_skip_without_a_gap():
    """A batch that moved no rank bumps the version but publishes nothing."""
    view = RecommendationView()
    view.apply_bytes(_delta(1, [], L1))
    assert view.apply_bytes(_delta(7, L1, L2)) == "applied"


def test_a_gap_is_repaired_from_the_full_list():
    view = RecommendationView()
    view.apply_bytes(_delta(1, [], L1))
    # version 2 (L1 -> L2) is lost; version 3 is a diff against L2
    assert view.apply_bytes(_delta(3, L2, L3)) == "repaired"
    assert view.top_k("u1") == tuple(L3)
    assert view.apply_bytes(_delta(4, L3, L4)) == "applied"
    assert view.counts()["repaired"] == 1


def test_a_consumer_starting_mid_topic_repairs_each_user_once():
    view = RecommendationView()
    assert view.apply_bytes(_delta(5, L2, L3)) == "repaired"
    assert view.apply_bytes(_delta(6, L3, L4)) == "applied"


def test_scores_come_from_top_k_when_ranks_hold():
    """The diff lists only moved items; one that kept its rank gets its score from top_k."""
    view = RecommendationView()
    view.apply_bytes(_delta(1, [], L1))  # a, b, c
    now = [("b", 0.6), ("a", 0.5), ("c", 0.3)]  # a and b swap, c keeps rank 2 at a new score
    made = Delta("u1", 2, 0.0, Cause(), (), (), (("b", 0.6, 0, 1), ("a", 0.5, 1, 0)),
                 tuple(now), {})  # fmt: skip
    assert view.apply_bytes(encode_delta(made, None)) == "applied"
    assert view.top_k("u1") == tuple(now)


def test_a_replay_restating_the_current_version_must_agree():
    view = RecommendationView()
    view.apply_bytes(_delta(1, [], L1))
    view.apply_bytes(_delta(2, L1, L2))
    assert view.apply_bytes(_delta(2, [], L2, kind="replay")) == "duplicate"
    assert view.apply_bytes(_delta(2, [], L3, kind="replay")) == "conflict"
    assert view.top_k("u1") == tuple(L2)
    assert view.apply_bytes(_delta(1, [], L1, kind="replay")) == "stale"


def test_a_newer_replay_is_the_list_of_a_delta_lost_in_a_crash():
    """State v2 was written, the worker died before its delta went out: the replay restates it."""
    view = RecommendationView()
    view.apply_bytes(_delta(1, [], L1))
    assert view.apply_bytes(_delta(2, [], L2, kind="replay")) == "applied"
    assert view.apply_bytes(_delta(3, L2, L3)) == "applied"
    assert view.top_k("u1") == tuple(L3)


def test_a_snapshot_replaces_the_view_when_newer_and_is_otherwise_a_no_op():
    view = RecommendationView()
    view.apply_bytes(_delta(3, [], L1))
    assert view.apply_bytes(_delta(2, [], L4, kind="snapshot")) == "stale"
    assert view.apply_bytes(_delta(3, [], L1, kind="snapshot")) == "duplicate"
    assert view.top_k("u1") == tuple(L1)
    assert view.apply_bytes(_delta(9, [], L4, kind="snapshot")) == "applied"
    assert view.top_k("u1") == tuple(L4) and view.version("u1") == 9
    assert view.apply_bytes(_delta(0, [], [], kind="snapshot", user="nobody")) == "applied"
    assert view.top_k("nobody") == () and view.version("nobody") == 0


def test_users_are_independent_and_bad_bytes_are_counted():
    view = RecommendationView()
    view.apply_bytes(_delta(4, [], L1, user="x"))
    assert view.apply_bytes(_delta(1, [], L2, user="y")) == "applied"
    assert view.apply_bytes(b"{not json") == "rejected"
    assert view.last_rejection is not None and view.last_rejection.code == "invalid_json"
    assert view.users() == ["x", "y"] and "x" in view and len(view) == 2
    assert view.items("x") == ["a", "b", "c"] and view.items("zed") == []


LISTS = st.lists(
    st.lists(st.sampled_from("abcdefgh"), min_size=0, max_size=5, unique=True),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(history=LISTS, order=st.randoms(use_true_random=False), dups=st.integers(0, 5))
def test_any_delivery_order_ends_at_the_newest_list(history, order, dups):
    """Deltas of a user's successive lists, shuffled and partly repeated: the view
    ends with the list of the newest version, whatever arrived in between."""
    lists = [[(item, 1.0 - 0.1 * r) for r, item in enumerate(items)] for items in history]
    deltas, previous = [], []
    for version, new in enumerate(lists, start=1):
        if diff(previous, new, UserState("u1", version=version), 0.0, Cause(), {}) is not None:
            deltas.append((version, _delta(version, previous, new)))
        previous = new
    if not deltas:
        return
    stream = deltas + [order.choice(deltas) for _ in range(dups)]
    order.shuffle(stream)
    view = RecommendationView()
    for _, value in stream:
        view.apply_bytes(value)
    newest_version, _ = max(deltas)
    assert view.version("u1") == newest_version
    assert view.top_k("u1") == tuple(lists[newest_version - 1])
    counts = view.counts()
    assert counts["conflict"] == counts["rejected"] == 0
    assert sum(counts.values()) == len(stream)


def test_in_order_delivery_never_repairs():
    """Consecutive published deltas chain: each diff applies to the list before it.

    The view's items are the state's; its scores are those of the last delta:
    a batch that moved no rank publishes nothing, though the scores moved.
    """
    view = RecommendationView()
    catalogue, params = _catalogue(), CoreParams(k=5)
    state, offset = None, 0
    rng = np.random.default_rng(11)
    for _ in range(25):
        items = [f"i{int(i):02d}" for i in rng.choice(30, size=2, replace=False)]
        result = step(state, _events("u9", items, offset), catalogue, 1e9, params)
        state, offset = result.state, offset + 2
        if result.delta is not None:
            assert view.apply_bytes(encode_delta(result.delta, None)) == "applied"
    assert view.items("u9") == [item for item, _ in state.top_k]
    assert view.counts()["repaired"] == 0


def test_the_module_doctest_runs():
    result = doctest.testmod(downstream)
    assert result.attempted >= 10 and result.failed == 0
