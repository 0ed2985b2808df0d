"""`models.interest.popularity`: the decayed item counter, its bytes, and the composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation.baselines import decayed_counts
from models.interest.composition import standardise
from models.interest.popularity import (
    DAY,
    ItemPopularity,
    KeyedPopularity,
    PopularityParams,
    compose,
    newcomer_weight,
)


def _events(seed: int, n: int = 200, n_items: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, n), np.sort(rng.uniform(0.0, 60 * DAY, n))


def _brute(items, ts, weights, now, half_life, n_items):
    out = np.zeros(n_items)
    for i, t, w in zip(items, ts, weights, strict=True):
        out[i] += w * (1.0 if math.isinf(half_life) else 2.0 ** (-(now - t) / half_life))
    return out


@pytest.mark.parametrize("half_life", [DAY, 7 * DAY, math.inf], ids=["1d", "7d", "inf"])
def test_counts_match_the_harness_sweep_and_a_brute_force_sum(half_life: float) -> None:
    items, ts = _events(0)
    at = np.array([ts[50], ts[120], ts[-1]])
    expected = decayed_counts(ts, items, at, 30, half_life)
    pop = ItemPopularity(half_life)
    seen = 0
    for row, now in enumerate(at):
        end = int(np.searchsorted(ts, now, side="right"))
        pop = pop.observe(items[seen:end], ts[seen:end])
        seen = end
        got = pop.counts_at(float(now), n_items=30)
        np.testing.assert_allclose(got, expected[row], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            got, _brute(items[:end], ts[:end], np.ones(end), now, half_life, 30), rtol=1e-9
        )


def test_weights_scale_counts_and_zero_weights_add_nothing() -> None:
    pop = ItemPopularity(DAY).observe([0, 1, 2], [0.0, 0.0, 0.0], [2.0, 0.0, 0.5])
    assert pop.counts_at(DAY).tolist() == [1.0, 0.0, 0.25]
    assert pop.events == 2.5


def test_late_events_count_as_of_their_own_time() -> None:
    items, ts = _events(1)
    order = np.random.default_rng(2).permutation(len(items))
    in_order = ItemPopularity(3 * DAY).observe(items, ts)
    shuffled = ItemPopularity(3 * DAY)
    for chunk in np.array_split(order, 7):
        shuffled = shuffled.observe(items[chunk], ts[chunk])
    now = float(ts[-1])
    np.testing.assert_allclose(shuffled.counts_at(now), in_order.counts_at(now), rtol=1e-9)


def test_observe_returns_a_new_value_and_mutates_nothing() -> None:
    pop = ItemPopularity(DAY).observe([1], [0.0])
    held = pop.scaled.copy()
    items, ts, w = np.array([0, 1]), np.array([5.0, 6.0]), np.array([1.0, 1.0])
    later = pop.observe(items, ts, w)
    assert np.array_equal(pop.scaled, held) and pop.events == 1.0
    assert items.tolist() == [0, 1] and ts.tolist() == [5.0, 6.0] and w.tolist() == [1.0, 1.0]
    assert later.events == 3.0
    with pytest.raises(ValueError):
        pop.scaled[0] = 2.0


def test_years_of_events_keep_the_exponents_finite() -> None:
    half_life = 3600.0
    pop = ItemPopularity(half_life)
    for day in range(400):
        pop = pop.observe([day % 3], [day * DAY])
    now = 399 * DAY
    counts = pop.counts_at(now)
    assert np.isfinite(pop.scaled).all() and np.isfinite(counts).all()
    assert counts[399 % 3] == pytest.approx(1.0)
    assert pop.ref_ts > 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.floats(0.0, 1e6), st.floats(0.0, 5.0)),
        min_size=0,
        max_size=40,
    ),
    st.integers(0, 40),
)
def test_merging_two_counters_equals_observing_all_events(events, cut) -> None:
    half_life = 5e4
    a_ev, b_ev = events[:cut], events[cut:]

    def counter(evs):
        pop = ItemPopularity(half_life)
        if evs:
            items, ts, w = map(list, zip(*evs, strict=True))
            pop = pop.observe(items, ts, w)
        return pop

    merged = counter(a_ev).merge(counter(b_ev))
    whole = counter(events)
    now = 1e6
    np.testing.assert_allclose(
        merged.counts_at(now, 10), whole.counts_at(now, 10), rtol=1e-9, atol=1e-12
    )
    assert merged.events == pytest.approx(whole.events)


def test_merge_refuses_different_half_lives() -> None:
    with pytest.raises(ValueError, match="half-lives"):
        ItemPopularity(DAY).merge(ItemPopularity(2 * DAY))


@pytest.mark.parametrize("half_life", [DAY, math.inf], ids=["1d", "inf"])
def test_bytes_round_trip(half_life: float) -> None:
    items, ts = _events(3)
    pop = ItemPopularity(half_life).observe(items, ts, np.linspace(0.0, 2.0, len(items)))
    back = ItemPopularity.from_bytes(pop.to_bytes())
    assert back == pop
    assert back.to_bytes() == pop.to_bytes()
    assert ItemPopularity.from_bytes(ItemPopularity(DAY).to_bytes()) == ItemPopularity(DAY)


@pytest.mark.parametrize(
    "blob",
    [b"", b"XXXX\x00\x01\x00\x00\x00\x02{}", b"ISIP\x00\x09\x00\x00\x00\x02{}"],
    ids=["empty", "magic", "schema"],
)
def test_from_bytes_rejects_other_blobs(blob: bytes) -> None:
    with pytest.raises(ValueError):
        ItemPopularity.from_bytes(blob)


def test_from_bytes_rejects_a_truncated_body() -> None:
    data = ItemPopularity(DAY).observe([0, 4], [0.0, 1.0]).to_bytes()
    with pytest.raises(ValueError, match="rows"):
        ItemPopularity.from_bytes(data[:-8])


@pytest.mark.parametrize(
    ("items", "ts", "weights"),
    [([-1], [0.0], None), ([0], [math.nan], None), ([0], [0.0], [-1.0]), ([0, 1], [0.0], None)],
    ids=["negative-row", "nan-time", "negative-weight", "lengths"],
)
def test_observe_rejects_bad_events(items, ts, weights) -> None:
    with pytest.raises(ValueError):
        ItemPopularity(DAY).observe(items, ts, weights)


def test_prior_is_standardised_and_empty_counter_favours_nothing() -> None:
    assert ItemPopularity(DAY).prior(0.0, n_items=4).tolist() == [0.0] * 4
    pop = ItemPopularity(DAY).observe([0, 0, 1, 2, 2, 2], [0.0] * 6)
    p = pop.prior(0.0, n_items=5)
    assert p.mean() == pytest.approx(0.0, abs=1e-12) and p.std() == pytest.approx(1.0)
    assert np.argsort(-p, kind="stable")[:3].tolist() == [2, 0, 1]
    assert pop.prior(0.0, n_items=2).shape == (2,)


def test_compose_keeps_filtered_rows_out_and_zero_weight_ranks_by_prior() -> None:
    rng = np.random.default_rng(4)
    q, p = rng.normal(size=50), rng.normal(size=50)
    q[[3, 7]] = -np.inf
    for w in (0.0, 0.125, 4.0):
        s = compose(q, p, w)
        assert np.isneginf(s[[3, 7]]).all() and np.isfinite(np.delete(s, [3, 7])).all()
    assert np.array_equal(compose(q, p, 0.0)[np.isfinite(q)], p[np.isfinite(q)])
    big = compose(q, p, 1e6)
    finite = np.isfinite(q)
    assert np.argmax(np.where(finite, big, -np.inf)) == np.argmax(np.where(finite, q, -np.inf))
    with pytest.raises(ValueError, match="shape"):
        compose(q, p[:10], 0.1)


def test_newcomer_weight_and_params() -> None:
    params = PopularityParams()
    assert newcomer_weight(0, params.newcomer_events) == 1.0
    assert newcomer_weight(params.newcomer_events, params.newcomer_events) == 0.0
    bad_settings = (
        {"half_life_s": 0.0},
        {"newcomer_events": 0},
        {"query_weight": -1.0},
        {"cold_items": -1},
    )
    for bad in bad_settings:
        with pytest.raises(ValueError):
            PopularityParams(**bad)


# --------------------------------------------------------------------------- rows named by id


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefg"), st.floats(0.0, 1e6), st.floats(0.0, 5.0)),
        max_size=30,
    ),
    st.integers(0, 30),
)
def test_keyed_counters_merged_by_id_equal_one_counter_of_all_events(events, cut) -> None:
    """Two workers' counters, rows numbered in their own order, merge as one counter would."""

    def counter(evs):
        pop = KeyedPopularity.empty(5e4)
        if evs:
            items, ts, w = map(list, zip(*evs, strict=True))
            pop = pop.observe(items, ts, w)
        return pop

    merged = counter(events[cut:]).merge(counter(events[:cut]))
    whole = counter(events)
    ids = list("gfedcbaz")  # another order, and an id nobody observed
    np.testing.assert_allclose(
        merged.counts_at(1e6, ids), whole.counts_at(1e6, ids), rtol=1e-9, atol=1e-12
    )
    assert merged.events == pytest.approx(whole.events)
    assert sorted(merged.ids) == sorted(whole.ids) == sorted({e[0] for e in events})


def test_keyed_prior_follows_the_given_rows_and_leaves_removed_ones_out() -> None:
    pop = KeyedPopularity.empty(DAY).observe(["b", "b", "b", "a"], [0.0] * 4)
    ids = ["a", "new", "b", "gone"]
    alive = np.array([True, True, True, False])
    p = pop.prior(0.0, ids, alive)
    assert np.isneginf(p[3]) and np.isfinite(p[:3]).all()
    kept = standardise(np.log1p(np.array([1.0, 0.0, 3.0])))
    np.testing.assert_allclose(p[:3], kept)
    np.testing.assert_array_equal(pop.prior_rows(0.0, pop.rows_of(ids), alive), p)
    assert pop.rows_of(ids).tolist() == [1, -1, 0, -1]
    assert KeyedPopularity.empty(DAY).prior(0.0, ids).tolist() == [0.0] * 4


def test_keyed_counter_keeps_its_ids_object_until_an_id_is_added() -> None:
    """`streams.shared_popularity` caches a catalogue's row index while the ids stay the same."""
    pop = KeyedPopularity.empty(DAY).observe(["a", "b"], [0.0, 1.0])
    assert pop.observe(["b", "a"], [2.0, 3.0]).ids is pop.ids
    assert pop.merge(KeyedPopularity.empty(DAY).observe(["a"], [4.0])).ids is pop.ids
    assert pop.observe(["c"], [2.0]).ids == ("a", "b", "c")


def test_keyed_bytes_round_trip_and_refuse_other_blobs() -> None:
    pop = KeyedPopularity.empty(math.inf).observe(["x", "y", "x"], [0.0, 1.0, 2.0], [1, 2, 3])
    back = KeyedPopularity.from_bytes(pop.to_bytes())
    assert back == pop and back.to_bytes() == pop.to_bytes()
    assert KeyedPopularity.from_bytes(KeyedPopularity.empty(DAY).to_bytes()).ids == ()
    for blob in (b"", pop.counts.to_bytes(), pop.to_bytes()[:-8]):
        with pytest.raises(ValueError):
            KeyedPopularity.from_bytes(blob)
    with pytest.raises(ValueError, match="unique"):
        KeyedPopularity(ItemPopularity(DAY), ("a", "a"))
    with pytest.raises(ValueError, match="ids"):
        KeyedPopularity(ItemPopularity(DAY).observe([0, 1], [0.0, 0.0]), ("a",))
    with pytest.raises(ValueError, match="half-lives"):
        pop.merge(KeyedPopularity.empty(DAY))
