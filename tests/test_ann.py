"""Approximate ranking (`models.ann`, `models.core.rank_many`) against the exact path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import ann
from models.ann import AnnSpec
from models.behaviour import Behaviour
from models.catalogue import Catalogue
from models.core import (
    CoreParams,
    finish,
    prepare,
    rank,
    rank_exact,
    rank_many,
    step,
    summaries_for,
)
from models.interest.composition import CompositionSpec
from models.state import UserState, encode_state
from streams.settings import SettingsError, load_settings
from streams.workload import TAGS, synthetic_workload
from tests.updater_fixtures import TEXT_DIM, random_learned_updater, small_catalogue

DIM = 48


def clustered(
    n: int, rng: np.random.Generator, topics: np.ndarray, noise: float = 0.9
) -> np.ndarray:
    """Unit vectors around ``topics`` (one drawn per row), with a common part."""
    which = rng.integers(len(topics), size=n)
    x = 0.4 * topics[-1] + topics[which] + noise * rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def workload_catalogue(
    size: int, seed: int = 0, noise: float = 0.9
) -> tuple[Catalogue, list[UserState]]:
    """The synthetic workload's items (tag ``j`` on topic ``j``) in ``size`` clustered rows,
    and its users' states after all their events (`prepare`: no ranking needed)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((60, DIM))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    work = synthetic_workload(users=12, events_per_user=40, seed=seed)
    cat = Catalogue(DIM)
    for it in work.items:
        tag = TAGS.index(it["tags"][0])
        cat.upsert(it["item_id"], clustered(1, rng, topics[[tag, -1]], noise)[0], it["tags"])
    for j, vec in enumerate(clustered(size - len(cat), rng, topics, noise)):
        cat.upsert(f"f{j}", vec)
    params = CoreParams(ann=AnnSpec(min_items=0))
    states: dict[str, UserState] = {}
    for e in work.events:
        event = Behaviour(e["user_id"], e["item_id"], e["type"], e["ts"], e["event_id"])
        p = prepare(states.get(event.user_id), [event], cat, params)
        state = p.state if p.result is None else p.result.state
        if state is not None:
            states[event.user_id] = state
    return cat, [states[u] for u in sorted(states)]


def same_lists(a: list, b: list, tol: float = 2e-6) -> bool:
    """Same items in the same order, scores equal up to the float rounding of the moments."""
    return [i for i, _ in a] == [i for i, _ in b] and all(
        abs(x - y) <= tol for (_, x), (_, y) in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def small() -> tuple[Catalogue, list[UserState]]:
    return workload_catalogue(1500)


def test_index_path_equals_exact_when_every_row_is_a_candidate(small) -> None:
    cat, states = small
    exact = CoreParams(ann=AnnSpec(min_items=0))
    full = CoreParams(ann=AnnSpec(min_items=1, candidates=len(cat), ef_search=len(cat)))
    for state in states:
        assert same_lists(rank(state, cat, full), rank(state, cat, exact))
    assert cat.ann is not None  # the index path was taken


def test_rank_many_equals_rank_one_user_at_a_time(small) -> None:
    cat, states = small
    for spec in (AnnSpec(min_items=0), AnnSpec(min_items=1, candidates=50)):
        params = CoreParams(ann=spec)
        assert rank_many(states, cat, params) == [rank(s, cat, params) for s in states]


def test_below_min_items_the_exact_path_is_used(small) -> None:
    cat, states = small
    cat.ann = None
    params = CoreParams(ann=AnnSpec(min_items=len(cat)))
    assert rank(states[0], cat, params) == rank_exact(states[0], cat, params)
    assert cat.ann is None
    quota = CoreParams(ann=AnnSpec(min_items=1), composition=CompositionSpec(mode="quota"))
    assert rank(states[0], cat, quota) == rank_exact(states[0], cat, quota)
    assert cat.ann is None  # quota ranks within each interest: only the whole catalogue will do


def test_recall_at_10_on_a_clustered_20k_catalogue_with_default_candidates() -> None:
    # Loose clusters (noise 3): there a fetch of one row per direction (plus
    # the consumed) already misses some of the exact top 10 (recall 0.98).
    cat, states = workload_catalogue(20_000, seed=3, noise=3.0)
    params = CoreParams(ann=replace(AnnSpec(), min_items=1))
    shares = []
    for state in states:
        truth = {i for i, _ in rank_exact(state, cat, params)}
        found = {i for i, _ in rank(state, cat, params)}
        shares.append(len(truth & found) / len(truth))
    assert np.mean(shares) >= 0.95


def test_moments_and_index_follow_adds_updates_and_removals() -> None:
    rng = np.random.default_rng(5)
    cat = Catalogue(DIM)
    vecs = rng.standard_normal((300, DIM)).astype(np.float32)
    for j in range(200):
        cat.upsert(f"i{j}", vecs[j])
    cat.moments()  # from here on, kept up to date by changes
    index = ann.index_for(cat, AnnSpec(min_items=1))
    for j in range(200, 300):
        cat.upsert(f"i{j}", vecs[j])  # new
    for j in range(0, 40):
        cat.upsert(f"i{j}", -vecs[j])  # moved
    for j in range(40, 80):
        cat.remove(f"i{j}")
    cat.upsert("i250", vecs[0])  # new, then moved before any sync
    cat.upsert("i260", vecs[1])
    cat.remove("i260")  # added and removed between two asks

    n, total, second = cat.moments()
    _, matrix, alive = cat.rows()
    live = matrix[alive].astype(np.float64)
    assert n == len(live) == 259
    np.testing.assert_allclose(total, live.sum(axis=0), atol=1e-9)
    np.testing.assert_allclose(second, live.T @ live, atol=1e-9)

    assert ann.index_for(cat, AnnSpec(min_items=1)) is index
    assert len(index) == 259
    found = index.search(matrix, 1)
    assert found is not None
    for row in np.flatnonzero(alive):
        assert found[row][0] == row or np.allclose(matrix[found[row][0]], matrix[row])
    removed = {cat.row_of(f"i{j}") for j in range(40, 80)} | {cat.row_of("i260")}
    everything = index.search(matrix[:1], len(alive))
    assert everything is not None and not removed & set(everything[0].tolist())


@pytest.mark.parametrize("min_items", [1, 10**6], ids=["index", "exact"])
def test_step_is_prepare_rank_finish_and_a_batch_may_share_one_rank_many(
    small, min_items: int
) -> None:
    cat, states = small
    params = CoreParams(ann=AnnSpec(min_items=min_items, candidates=50))
    items = cat.item_ids()
    batches = [
        [Behaviour(s.user_id, items[(7 * n) % len(items)], "click", 2e9, f"x{n}")]
        for n, s in enumerate(states)
    ]
    one_by_one = [step(s, b, cat, 2e9, params) for s, b in zip(states, batches, strict=True)]
    prepared = [prepare(s, b, cat, params) for s, b in zip(states, batches, strict=True)]
    lists = rank_many([p.state for p in prepared], cat, params)
    # The batch's summaries made in one block, as the processor makes them.
    summaries = summaries_for(prepared, lists, cat, params)
    together = [
        finish(p, r, cat, 2e9, params, summary=m)
        for p, r, m in zip(prepared, lists, summaries, strict=True)
    ]
    assert all(m is not None for m in summaries)
    assert [encode_state(r.state) for r in together] == [encode_state(r.state) for r in one_by_one]
    assert [r.delta for r in together] == [r.delta for r in one_by_one]


def test_an_updater_with_its_own_item_space_is_scored_in_full_and_adds_its_best_rows(
    tmp_path: Path,
) -> None:
    updater = random_learned_updater(tmp_path / "m")
    cat = small_catalogue()
    exact = CoreParams(updater=updater, ann=AnnSpec(min_items=0))
    events = [Behaviour("u", f"m{j}", "click", 1e9 + 60 * j, f"e{j}") for j in (0, 4, 9, 13)]
    state = step(None, events, cat, 1e9, exact).state
    assert state is not None and state.interests[0].hidden.shape[0] != TEXT_DIM
    full = CoreParams(updater=updater, ann=AnnSpec(min_items=1, candidates=len(cat)))
    assert same_lists(rank(state, cat, full), rank(state, cat, exact))
    narrow = CoreParams(updater=updater, ann=AnnSpec(min_items=1, candidates=1))
    assert len(rank(state, cat, narrow)) == exact.k


def test_settings_build_the_ann_spec() -> None:
    spec = load_settings({}, ann_min_items=5000, ann_candidates=150).core_params().ann
    assert (spec.min_items, spec.candidates) == (5000, 150)
    assert load_settings({}).core_params().ann == AnnSpec()
    with pytest.raises(SettingsError, match="approximate ranking"):
        load_settings({}, ann_candidates=0)
