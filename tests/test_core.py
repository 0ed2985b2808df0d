"""Tier 1: the pure core, with hand-made embeddings."""

from __future__ import annotations

import copy
import dataclasses
import random

import numpy as np
import pytest

from models.behaviour import Behaviour, Position
from models.catalogue import Catalogue
from models.core import CoreParams, StepResult, step
from models.interest.composition import CompositionSpec
from models.interest.levels import LevelSpec
from models.state import UserState, decode_state, encode_state
from models.update import TimeDecayUpdater
from models.window import WindowSpec

DIM = 8
HOUR = 3600.0


def catalogue(n_per_axis: int = 3) -> Catalogue:
    """Items clustered on axes: item "a{axis}-{j}" points mostly along axis."""
    rng = np.random.default_rng(0)
    cat = Catalogue(DIM)
    for axis in range(4):
        for j in range(n_per_axis):
            vec = np.zeros(DIM, dtype=np.float32)
            vec[axis] = 1.0
            vec += 0.1 * rng.standard_normal(DIM).astype(np.float32)
            cat.upsert(f"a{axis}-{j}", vec, (f"tag{axis}",))
    return cat


def ev(item: str, ts: float, offset: int | None = None, type_: str = "view", **kw) -> Behaviour:
    pos = None if offset is None else Position("behaviours", 0, offset)
    return Behaviour(
        "u1", item, type_, ts, kw.pop("event_id", f"e-{item}-{ts}"), position=pos, **kw
    )


#: The classic single-vector core: one interest, no long-term level (see
#: tests/test_interest_structure.py for several interests and the levels).
PARAMS = CoreParams(
    k=4,
    window=WindowSpec(max_events=5, max_age_s=48 * HOUR),
    composition=CompositionSpec(max_interests=1),
    levels=LevelSpec(long_weight=0.0, long_return_weight=0.0),
)


def run(events: list[Behaviour], cat: Catalogue | None = None, state=None) -> StepResult:
    return step(state, events, cat or catalogue(), now=1e9, params=PARAMS)


def test_first_events_create_state_and_full_delta() -> None:
    r = run([ev("a0-0", 0.0, 0), ev("a0-1", HOUR, 1)])
    assert r.changed and r.state is not None
    assert r.state.version == 1
    assert r.state.offsets == {"behaviours[0]": 1}
    assert r.state.consumed == {"a0-0", "a0-1"}
    # consumed items are never recommended; the rest of axis 0 comes first
    assert r.delta is not None
    assert r.delta.added[0][0] == "a0-2"
    assert {i for i, _ in r.state.top_k}.isdisjoint(r.state.consumed)
    assert [rank for _, _, rank in r.delta.added] == list(range(4))
    assert r.delta.cause.event_ids == ("e-a0-0-0.0", "e-a0-1-3600.0")


def test_no_state_no_events_is_nothing() -> None:
    r = run([])
    assert r.state is None and r.delta is None and not r.changed


def test_replayed_offsets_are_skipped_and_state_unchanged() -> None:
    first = run([ev("a0-0", 0.0, 0), ev("a1-0", HOUR, 1)])
    again = run([ev("a0-0", 0.0, 0), ev("a1-0", HOUR, 1)], state=first.state)
    assert not again.changed and again.delta is None
    assert again.state is first.state
    assert len(again.replayed) == 2


def test_duplicate_event_id_applied_once() -> None:
    first = run([ev("a0-0", 0.0, 0, event_id="x")])
    dup = run([ev("a0-0", 0.0, 1, event_id="x"), ev("a0-1", 1.0, 2)], state=first.state)
    assert [e.event_id for e in dup.duplicates] == ["x"]
    assert dup.state.events_applied == 2
    assert dup.state.offsets["behaviours[0]"] == 2


def test_version_bumps_once_per_applied_batch() -> None:
    s = None
    for i in range(3):
        batch = [ev("a2-0", i * HOUR, 2 * i), ev("a2-1", i * HOUR + 1, 2 * i + 1, event_id=f"y{i}")]
        s = run(batch, state=s).state
    assert s.version == 3


def test_interest_follows_a_shift() -> None:
    before = [ev(f"a0-{j}", j * HOUR, j) for j in range(2)]
    after = [ev(f"a3-{j}", (10 + j) * 24 * HOUR, 10 + j) for j in range(2)]
    s1 = run(before).state
    tops1 = [i for i, _ in s1.top_k]
    r2 = run(after, state=s1)
    tops2 = [i for i, _ in r2.state.top_k]
    assert tops1[0].startswith("a0")
    assert tops2[0].startswith("a3")
    assert r2.delta.interest["mid_term"][0][0] == "tag3"


def test_out_of_order_arrival_gives_the_same_state() -> None:
    events = [ev(f"a{j % 4}-{j // 4}", j * 5 * HOUR, None) for j in range(10)]
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    a, b = run(events).state, run(shuffled).state
    np.testing.assert_allclose(a.interests[0].hidden, b.interests[0].hidden, rtol=1e-5, atol=1e-6)
    assert a.interests[0].hidden_ts == b.interests[0].hidden_ts
    assert a.window == b.window
    assert [i for i, _ in a.top_k] == [i for i, _ in b.top_k]


def test_batching_does_not_change_the_state() -> None:
    events = [ev(f"a{j % 3}-{j % 2}", j * HOUR, j, event_id=f"e{j}") for j in range(8)]
    one = run(events).state
    s = None
    for chunk in (events[:3], events[3:4], events[4:]):
        s = run(chunk, state=s).state
    np.testing.assert_array_equal(one.interests[0].hidden, s.interests[0].hidden)
    assert one.top_k == s.top_k and one.window == s.window and one.offsets == s.offsets


def test_window_bounds_by_count_and_age() -> None:
    events = [ev(f"a1-{j % 3}", j * 20 * HOUR, j, event_id=f"w{j}") for j in range(8)]
    w = run(events).state.window
    assert len(w) <= 5
    assert w[-1].ts - w[0].ts <= 48 * HOUR
    assert [e.ts for e in w] == sorted(e.ts for e in w)


def test_missing_item_waits_then_applies() -> None:
    cat = catalogue()
    r1 = run([ev("new-1", 0.0, 0), ev("a0-0", 1.0, 1)], cat=cat)
    assert [e.item_id for e in r1.parked] == ["new-1"]
    assert [p.item_id for p in r1.state.pending] == ["new-1"]
    assert r1.state.events_applied == 1
    cat.upsert("new-1", np.eye(DIM, dtype=np.float32)[0], ("tag0",))
    r2 = step(r1.state, [], cat, 1e9, PARAMS, refresh=["new-1"])
    assert r2.state.pending == () and r2.state.events_applied == 2
    assert "new-1" in r2.state.consumed
    assert r2.state.version == 2


def test_removed_item_leaves_top_k() -> None:
    cat = catalogue()
    s = run([ev("a0-0", 0.0, 0)], cat=cat).state
    gone = s.top_k[0][0]
    cat.remove(gone)
    r = step(s, [], cat, 1e9, PARAMS, refresh=[gone])
    assert gone not in [i for i, _ in r.state.top_k]
    assert (gone, 0) in r.delta.removed
    assert r.delta.cause.kind == "items" and r.delta.cause.item_ids == (gone,)


def test_pending_overflow_is_reported() -> None:
    params = CoreParams(k=2, max_pending=2)
    r = step(None, [ev(f"x{j}", float(j), j) for j in range(4)], catalogue(), 1e9, params)
    assert [p.item_id for p in r.state.pending] == ["x2", "x3"]
    assert [p.item_id for p in r.overflow] == ["x0", "x1"]


def test_skip_pushes_interest_away() -> None:
    liked = run([ev("a0-0", 0.0, 0, "like")]).state
    skipped = run([ev("a0-0", 0.0, 0, "skip")]).state
    assert liked.interests[0].hidden[0] > 0 > skipped.interests[0].hidden[0]


def test_step_does_not_mutate_inputs() -> None:
    cat = catalogue()
    s = run([ev("a0-0", 0.0, 0)], cat=cat).state
    snapshot = copy.deepcopy(s)
    events = [ev("a1-0", HOUR, 1)]
    step(s, events, cat, 1e9, PARAMS)
    assert encode_state(s) == encode_state(snapshot)


def test_same_input_same_output() -> None:
    events = [ev(f"a{j % 4}-0", j * HOUR, j) for j in range(6)]
    a, b = run(events), run(events)
    assert encode_state(a.state) == encode_state(b.state)
    assert a.delta == b.delta


def test_changing_the_half_life_keeps_every_users_interest() -> None:
    """The half-life is a setting, not a model: no reset, no migration."""
    s = run([ev("a0-0", 0.0, 0)]).state
    other = dataclasses.replace(PARAMS, updater=TimeDecayUpdater(half_life_s=60.0))
    r = step(s, [ev("a1-0", 10.0, 1)], catalogue(), 1e9, other)
    assert r.migrated_from is None and r.state.updater == s.updater == "time-decay"
    expected, _ = other.updater.apply(
        s.interests[0].hidden, s.interests[0].hidden_ts, catalogue().vector("a1-0"), 1.0, 10.0
    )
    np.testing.assert_array_equal(r.state.interests[0].hidden, expected)


class Doubling(TimeDecayUpdater):
    """Another model: same rule, twice the weight."""

    name = "doubling"

    def apply(self, hidden, hidden_ts, item, weight, ts):
        return super().apply(hidden, hidden_ts, item, 2 * weight, ts)


def test_changing_the_updater_replays_the_window_through_the_new_one() -> None:
    s = run([ev("a0-0", 0.0, 0), ev("a1-0", 5.0, 1)]).state
    other = dataclasses.replace(PARAMS, updater=Doubling())
    r = step(s, [ev("a2-0", 10.0, 2)], catalogue(), 1e9, other)
    assert r.migrated_from == "time-decay" and r.state.updater == "doubling"
    cat = catalogue()
    hidden, t = other.updater.initial(cat.dim), None
    for item, ts in (("a0-0", 0.0), ("a1-0", 5.0), ("a2-0", 10.0)):
        hidden, t = other.updater.apply(hidden, t, cat.vector(item), 1.0, ts)
    np.testing.assert_allclose(r.state.interests[0].hidden, hidden, rtol=1e-6)
    assert r.state.consumed == {"a0-0", "a1-0", "a2-0"} and r.state.interests[0].hidden_ts == 10.0
    # A model change alone, with no new event, moves the user too (and re-ranks).
    moved = step(s, [], cat, 1e9, other, refresh=())
    assert moved.changed and moved.migrated_from == "time-decay"


@pytest.mark.parametrize("events", [0, 1, 30])
def test_state_bytes_round_trip(events: int) -> None:
    s = run([ev("a0-0", 0.0, 0)]).state if events else UserState("u1")
    if events > 1:
        s = run([ev(f"z{j}", float(j), j + 1) for j in range(events)], state=s).state
    back = decode_state(encode_state(s))
    assert encode_state(back) == encode_state(s)
    for a, b in zip(back.vectors(), s.vectors(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.pending == s.pending and back.window == s.window and back.top_k == s.top_k


def test_catalogue_revision_changes_with_every_change() -> None:
    cat = Catalogue(2)
    seen = {cat.revision}
    cat.upsert("a", np.array([1.0, 0.0]))
    seen.add(cat.revision)
    cat.upsert("a", np.array([0.0, 1.0]))  # same id, new vector
    seen.add(cat.revision)
    assert not cat.remove("zz") and cat.revision in seen  # no change, same revision
    assert cat.remove("a")
    seen.add(cat.revision)
    assert len(seen) == 4 and Catalogue(2).revision not in seen
    ids, matrix, alive = cat.rows()
    assert ids == ["a"] and matrix.shape == (1, 2) and not alive[0]
    assert cat.row_of("a") == 0 and cat.row_of("zz") is None
    with pytest.raises(ValueError):
        matrix[0, 0] = 1.0  # read-only view


def test_stage_clock_charges_nested_stages_to_themselves_only() -> None:
    import time

    from models.stages import StageClock, measuring, stage

    clock = StageClock()
    with measuring(clock):
        with stage("outer"):
            time.sleep(0.02)
            with stage("inner"):
                time.sleep(0.03)
        time.sleep(0.01)
    s = clock.seconds
    assert 0.015 < s["outer"] < 0.03 + 0.02  # its own sleep, not the inner one
    assert s["inner"] >= 0.03
    assert s["other"] >= 0.01
    with stage("outside"):  # no clock open: nothing is charged anywhere
        pass
    assert "outside" not in clock.seconds
