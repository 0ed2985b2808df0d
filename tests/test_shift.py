"""Interest shift detection: the pure detector and signal, and the generator's shift kinds.

`models.interest.shift` (Page-Hinkley port against river's, block distance,
serialisation) and `streams.workload.synthetic_workload` with ``shift_kinds``
(sudden, gradual, recurring, never), whose default output is pinned.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import astuple

import numpy as np
import pytest

from models.catalogue import Catalogue
from models.interest.shift import (
    DetectorState,
    ShiftSpec,
    block_distance,
    blocks,
    consecutive_distance,
    observe,
)
from models.state import WindowEntry
from streams.workload import SHIFT_KINDS, Drift, Workload, synthetic_workload

# -- the generator --------------------------------------------------------------------------

# sha256 of the default workload (and of one other call) as produced before the shift kinds
# were added: the demo and the README's output depend on it staying byte-identical.
DEFAULT_SHA256 = "bd9fb4efb3cdbad2a445393533e179c9d78320ca5a6e8f97a21c463040d88377"
OTHER_CALL = {"users": 60, "events_per_user": 80, "items_per_tag": 40, "drift_fraction": 0.3,
              "seed": 11}  # fmt: skip
OTHER_SHA256 = "88dd098df895be3d56acc00ffce8d0038d42b6218925a3497d6a3e83e6b31db4"


def _digest(w: Workload) -> str:
    """The hash of everything the workload had before ``kind`` and ``span`` existed."""
    drifts = [
        {"user_id": d.user_id, "event_index": d.event_index, "ts": d.ts,
         "from_tag": d.from_tag, "to_tag": d.to_tag}
        for d in w.drifts
    ]  # fmt: skip
    blob = {"items": w.items, "events": w.events, "drifts": drifts, "d": w.description}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def test_default_workload_is_byte_identical_to_before() -> None:
    w = synthetic_workload()
    assert _digest(w) == DEFAULT_SHA256
    assert all(d.kind == "sudden" and d.span == 1 for d in w.drifts)
    assert _digest(synthetic_workload(**OTHER_CALL)) == OTHER_SHA256
    assert _digest(synthetic_workload(shift_kinds=None)) == DEFAULT_SHA256


@pytest.fixture(scope="module")
def kinds() -> Workload:
    return synthetic_workload(users=80, events_per_user=120, items_per_tag=120,
                              drift_fraction=0.75, shift_kinds=SHIFT_KINDS, seed=3)  # fmt: skip


def _tags(w: Workload, user_id: str) -> list[str]:
    tag_of = {i["item_id"]: i["tags"][0] for i in w.items}
    return [tag_of[e["item_id"]] for e in w.events if e["user_id"] == user_id]


def _share(tags: list[str], tag: str) -> float:
    return sum(t == tag for t in tags) / len(tags)


def test_shift_kinds_are_all_there_with_never_shifting_users(kinds: Workload) -> None:
    counts = Counter(d.kind for d in kinds.drifts)
    assert set(counts) == {"sudden", "gradual", "recurring", "return"}
    assert counts["recurring"] == counts["return"]
    shifting = {d.user_id for d in kinds.drifts}
    assert len(shifting) == 60  # round(0.75 * 80); the other 20 never shift
    for user in {e["user_id"] for e in kinds.events} - shifting:
        tags = _tags(kinds, user)
        top, n = Counter(tags).most_common(1)[0]
        assert n / len(tags) > 0.7
        assert _share(tags[:60], top) > 0.6 and _share(tags[60:], top) > 0.6


def test_recorded_start_is_the_users_event(kinds: Workload) -> None:
    for d in kinds.drifts:
        assert isinstance(d, Drift) and d.from_tag != d.to_tag
        own = [e for e in kinds.events if e["user_id"] == d.user_id]
        assert own[d.event_index]["ts"] == d.ts
        assert own[d.event_index]["event_id"] == f"e-{d.user_id}-{d.event_index:04d}"


def test_sudden_and_recurring_shifts_switch_at_the_recorded_event(kinds: Workload) -> None:
    by_user: dict[str, list[Drift]] = {}
    for d in kinds.drifts:
        by_user.setdefault(d.user_id, []).append(d)
    for ds in by_user.values():
        first = ds[0]
        tags = _tags(kinds, first.user_id)
        if first.kind == "sudden":
            assert len(ds) == 1 and first.span == 1
            assert _share(tags[: first.event_index], first.from_tag) > 0.6
            assert _share(tags[first.event_index :], first.to_tag) > 0.6
        elif first.kind == "recurring":
            move, back = ds
            assert back.kind == "return" and back.event_index > move.event_index
            assert (back.from_tag, back.to_tag) == (move.to_tag, move.from_tag)
            assert 0.2 * 120 <= back.event_index - move.event_index <= 0.3 * 120
            stay = tags[move.event_index : back.event_index]
            assert _share(stay, move.to_tag) > 0.6
            assert _share(tags[back.event_index :], move.from_tag) > 0.6
            assert _share(tags[: move.event_index], move.from_tag) > 0.6


def test_gradual_shifts_ramp_the_new_tag_up(kinds: Workload) -> None:
    gradual = [d for d in kinds.drifts if d.kind == "gradual"]
    assert gradual and all(d.span == 20 for d in gradual)
    for d in gradual:
        tags = _tags(kinds, d.user_id)
        s = d.event_index
        assert _share(tags[:s], d.from_tag) > 0.6
        assert _share(tags[s + d.span :], d.to_tag) > 0.6
    # Over all gradual users: the new tag's share rises across the ramp, the old one's falls.
    half = 10
    assert sum(_on(kinds, d, 0, half) for d in gradual) < sum(
        _on(kinds, d, half, 2 * half) for d in gradual
    )
    assert sum(_on(kinds, d, 0, half, old=True) for d in gradual) > sum(
        _on(kinds, d, half, 2 * half, old=True) for d in gradual
    )


def _on(w: Workload, d: Drift, lo: int, hi: int, old: bool = False) -> int:
    """How many of the user's events ``d.event_index + [lo, hi)`` are on the new (old) tag."""
    tags = _tags(w, d.user_id)[d.event_index + lo : d.event_index + hi]
    return sum(t == (d.from_tag if old else d.to_tag) for t in tags)


def test_shift_kinds_are_seeded_and_validated() -> None:
    a = synthetic_workload(users=10, shift_kinds=("gradual",), seed=4)
    assert a == synthetic_workload(users=10, shift_kinds=("gradual",), seed=4)
    assert {d.kind for d in a.drifts} == {"gradual"}
    with pytest.raises(ValueError):
        synthetic_workload(shift_kinds=("teleport",))
    with pytest.raises(ValueError):
        synthetic_workload(shift_kinds=())
    with pytest.raises(ValueError):
        synthetic_workload(shift_kinds=("gradual",), gradual_span=0)


# -- the detector ---------------------------------------------------------------------------


def _feed(values, spec: ShiftSpec) -> tuple[list[int], DetectorState]:
    state, flags = None, []
    for i, x in enumerate(values):
        state, flagged = observe(state, x, spec)
        if flagged:
            flags.append(i)
    return flags, state


def _stationary(n: int, seed: int) -> np.ndarray:
    """A user's block distance while nothing changes: a level, noise, rare off-taste spikes."""
    rng = np.random.default_rng(seed)
    x = 0.25 + 0.05 * rng.standard_normal(n)
    spikes = rng.random(n) < 0.05
    return np.where(spikes, x + 0.25, x).clip(0.0, 2.0)


def test_flags_a_clear_change_within_a_few_observations() -> None:
    x = np.concatenate(
        [_stationary(60, seed=1), 0.75 + 0.05 * np.random.default_rng(2).standard_normal(20)]
    )
    flags, _ = _feed(x, ShiftSpec())
    assert flags and 60 <= flags[0] <= 63


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silent_on_a_stationary_stream(seed: int) -> None:
    flags, state = _feed(_stationary(5000, seed), ShiftSpec())
    assert flags == []
    assert state.n == 5000 and abs(state.mean - 0.2625) < 0.01


def test_resets_after_a_flag_and_detects_the_next_shift() -> None:
    rng = np.random.default_rng(3)
    levels = [0.2] * 40 + [0.7] * 40 + [1.2] * 40
    x = np.array(levels) + 0.03 * rng.standard_normal(len(levels))
    spec = ShiftSpec()
    flags, _ = _feed(x, spec)
    assert len(flags) == 2
    assert 40 <= flags[0] <= 43 and 80 <= flags[1] <= 83
    state = None
    for value in x[: flags[0] + 1]:
        state, flagged = observe(state, value, spec)
    assert flagged and state == DetectorState()


def test_observe_is_pure_and_skips_non_finite_values() -> None:
    spec = ShiftSpec()
    state, _ = observe(None, 0.3, spec)
    again, _ = observe(state, 0.4, spec)
    assert state == DetectorState(1, 0.3, -0.05, -0.05, 0.05, 0.05)
    assert observe(state, 0.4, spec) == (again, False)
    assert observe(again, float("nan"), spec) == (again, False)


def test_state_round_trips_through_a_tuple_and_json() -> None:
    _, state = _feed(_stationary(37, seed=5), ShiftSpec())
    values = state.to_tuple()
    assert values == astuple(state) and len(values) == 6
    assert DetectorState.from_tuple(values) == state
    assert DetectorState.from_tuple(json.loads(json.dumps(values))) == state
    assert DetectorState.from_tuple(DetectorState().to_tuple()) == DetectorState()
    for bad in ([1, 2.0], [1.5, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0], [1, float("inf"), 0, 0, 0, 0]):
        with pytest.raises(ValueError):
            DetectorState.from_tuple(bad)


def test_spec_is_validated() -> None:
    for bad in ({"recent": 0}, {"min_reference": 20}, {"threshold": 0.0}, {"delta": -1.0},
                {"alpha": 0.0}, {"mode": "sideways"}, {"min_instances": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            ShiftSpec(**bad)


PARITY = [
    ("up", 1.0, 5, 1.2, 0.05),
    ("up", 1 - 1e-4, 30, 50.0 / 40, 0.005),
    ("down", 1.0, 5, 1.0, 0.02),
    ("both", 0.999, 10, 0.8, 0.0),
]


@pytest.mark.parametrize(("mode", "alpha", "min_instances", "threshold", "delta"), PARITY,
                         ids=[p[0] + f"-alpha{p[1]}" for p in PARITY])  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1])
def test_port_matches_river_page_hinkley(
    mode: str, alpha: float, min_instances: int, threshold: float, delta: float, seed: int
) -> None:
    """Same flags and, between flags, the same running mean and sums as river's class."""
    from river.drift import PageHinkley

    rng = np.random.default_rng(seed)
    parts = [rng.normal(m, 0.1, 150) for m in (0.3, 0.8, 0.4, 0.1, 0.9, 0.9, 0.2)]
    stream = np.concatenate(parts)
    spec = ShiftSpec(threshold=threshold, delta=delta, min_instances=min_instances,
                     alpha=alpha, mode=mode)  # fmt: skip
    river = PageHinkley(min_instances=min_instances, delta=delta, threshold=threshold,
                        alpha=alpha, mode=mode)  # fmt: skip
    state, ours, theirs = None, [], []
    for i, x in enumerate(stream):
        state, flagged = observe(state, float(x), spec)
        river.update(float(x))
        if flagged:
            ours.append(i)
        if river.drift_detected:
            theirs.append(i)
        elif state.n:
            assert state.n == river._x_mean.n
            assert state.mean == pytest.approx(river._x_mean.get(), abs=1e-12)
            assert state.sum_up == pytest.approx(river._sum_increase, abs=1e-9)
            assert state.min_up == pytest.approx(river._min_increase, abs=1e-9)
            assert state.sum_down == pytest.approx(river._sum_decrease, abs=1e-9)
            assert state.max_down == pytest.approx(river._max_decrease, abs=1e-9)
    assert ours == theirs
    assert len(ours) >= 2


# -- the signals ----------------------------------------------------------------------------


def _catalogue() -> Catalogue:
    cat = Catalogue(3)
    for name, vec in (("a1", [1, 0.1, 0]), ("a2", [1, -0.1, 0]), ("b1", [0, 1, 0.1]),
                      ("b2", [0, 1, -0.1]), ("c", [0, 0, 1])):  # fmt: skip
        cat.upsert(name, np.array(vec, dtype=np.float32))
    return cat


def _window(items: list[str], weights: list[float] | None = None) -> tuple[WindowEntry, ...]:
    weights = weights or [1.0] * len(items)
    return tuple(
        WindowEntry(i, "view", float(t), w)
        for t, (i, w) in enumerate(zip(items, weights, strict=True))
    )


def test_block_distance_is_small_without_a_shift_and_large_after_one() -> None:
    cat, spec = _catalogue(), ShiftSpec(recent=2, reference=4, min_reference=2)
    steady = block_distance(_window(["a1", "a2"] * 4), cat, spec)
    moved = block_distance(_window(["a1", "a2"] * 3 + ["b1", "b2"]), cat, spec)
    assert steady is not None and moved is not None
    assert steady < 0.01 and moved > 0.9
    assert block_distance(_window(["a1", "a2", "b1"]), cat, spec) is None  # too few yet
    recent, reference = blocks(_window(["a1", "a2"] * 3 + ["b1", "b2"]), cat, spec)
    assert np.argmax(recent) == 1 and np.argmax(reference) == 0


def test_block_distance_ignores_negative_events_and_unknown_items() -> None:
    cat, spec = _catalogue(), ShiftSpec(recent=2, reference=4, min_reference=2)
    plain = block_distance(_window(["a1", "a2"] * 3 + ["b1", "b2"]), cat, spec)
    noisy = _window(["a1", "a2"] * 3 + ["b1", "c", "gone", "b2"], [1.0] * 7 + [-1.0, 1.0, 1.0])
    assert block_distance(noisy, cat, spec) == pytest.approx(plain)


def test_consecutive_distance() -> None:
    assert consecutive_distance(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(0.0)
    assert consecutive_distance(np.zeros(2), np.array([1.0, 0.0])) is None
