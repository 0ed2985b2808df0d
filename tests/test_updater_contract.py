"""One contract for every interest updater (river's `checks`, for our updaters).

Each check runs over every entry of `tests.updater_fixtures.updater_factories`
(test ids ``time-decay``, ``learned-gru``): purity, state bytes round trip,
unseen users and items, cold items, order independence where promised,
finite outputs on the most extreme inputs the codec lets through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.behaviour import Behaviour, EncodedPhrase, event_weight
from models.core import CoreParams, step
from models.interest.composition import CompositionSpec
from models.state import decode_state, encode_state
from models.update import InterestUpdater
from models.window import WindowSpec
from streams.codec import DEFAULT_LIMITS
from tests.updater_fixtures import COLD, N_ITEMS, small_catalogue, updater_factories

FACTORIES = updater_factories()
HOUR = 3600.0


@pytest.fixture(params=sorted(FACTORIES))
def updater(request: pytest.FixtureRequest, tmp_path: Path) -> InterestUpdater:
    return FACTORIES[request.param](tmp_path)


def params(updater: InterestUpdater, max_interests: int = 1) -> CoreParams:
    """One interest by default: the updater's own semantics (order, migration) are checked."""
    return CoreParams(
        k=5,
        window=WindowSpec(max_events=6),
        updater=updater,
        composition=CompositionSpec(max_interests=max_interests),
    )


def events(seed: int, n: int = 20, user: str = "u1") -> list[Behaviour]:
    rng = np.random.default_rng(seed)
    ts = 1e9 + np.cumsum(rng.choice([0.0, 60.0, 5 * HOUR, 3 * 86400.0], size=n))
    return [
        Behaviour(user, f"m{int(rng.integers(N_ITEMS))}", "rating", float(t), f"e{k}",
                  rating=float(rng.integers(1, 6)))
        for k, t in enumerate(ts)
    ]  # fmt: skip


def test_apply_is_pure(updater: InterestUpdater) -> None:
    cat = small_catalogue()
    hidden = updater.initial(cat.dim)
    item = updater.represent("m0", cat.vector("m0"))
    before_h, before_i = hidden.copy(), item.copy()
    a = updater.apply(hidden, None, item, 1.5, 1e9)
    b = updater.apply(hidden, None, item, 1.5, 1e9)
    np.testing.assert_array_equal(hidden, before_h)
    np.testing.assert_array_equal(item, before_i)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_step_is_pure_and_deterministic(updater: InterestUpdater) -> None:
    cat, evs = small_catalogue(), events(1)
    first = step(None, evs[:10], cat, 0.0, params(updater)).state
    snapshot = encode_state(first)
    a = step(first, evs[10:], cat, 0.0, params(updater))
    b = step(first, evs[10:], cat, 0.0, params(updater))
    assert encode_state(first) == snapshot, "the input state was not mutated"
    assert encode_state(a.state) == encode_state(b.state) and a.delta == b.delta


def test_state_round_trips_through_its_bytes(updater: InterestUpdater) -> None:
    """Stopping after any batch and reading the state back changes nothing."""
    cat, evs = small_catalogue(), events(2)
    straight = step(None, evs, cat, 0.0, params(updater)).state
    state = None
    for start in range(0, len(evs), 7):
        state = step(state, evs[start : start + 7], cat, 0.0, params(updater)).state
        state = decode_state(encode_state(state))
    np.testing.assert_allclose(state.interests[0].hidden, straight.interests[0].hidden, atol=1e-6)
    assert state.top_k == straight.top_k and state.updater == updater.name


def test_an_unseen_user_and_unseen_items(updater: InterestUpdater) -> None:
    cat = small_catalogue()
    assert step(None, [], cat, 0.0, params(updater)).state is None
    fresh = step(None, [Behaviour("new", "m1", "view", 1e9, "x")], cat, 0.0, params(updater))
    assert fresh.state.events_applied == 1 and len(fresh.state.top_k) == 5
    missing = step(fresh.state, [Behaviour("new", "zz", "view", 1e9 + 1, "y")], cat, 0.0,
                   params(updater))  # fmt: skip
    assert [p.item_id for p in missing.state.pending] == ["zz"]
    cat.upsert("zz", cat.vector("m2"))  # the item arrives: the waiting event is applied
    later = step(missing.state, [], cat, 0.0, params(updater), refresh=["zz"])
    assert later.state.pending == () and later.state.events_applied == 2


def test_cold_items_work_and_rank(updater: InterestUpdater) -> None:
    """Items the model never saw in training rest on their text."""
    cat = small_catalogue()
    cold = [f"m{i}" for i in sorted(COLD)]
    evs = [Behaviour("u", item, "like", 1e9 + n, f"c{n}") for n, item in enumerate(cold)]
    state = step(None, evs, cat, 0.0, params(updater)).state
    assert state.events_applied == len(cold) and np.isfinite(state.interests[0].hidden).all()
    assert len(state.top_k) == 5 and not set(cold) & {i for i, _ in state.top_k}
    ranked = updater.rank(state.interests[0].hidden, np.zeros(cat.dim), cat, N_ITEMS, set(), 0.0)
    assert set(cold) <= {i for i, _ in ranked}, "cold items can be recommended"


def test_order_independence_where_promised(updater: InterestUpdater) -> None:
    if not updater.order_independent:
        assert not type(updater).order_independent  # learned: arrival order matters
        return
    cat, evs = small_catalogue(), events(3)
    ordered = step(None, evs, cat, 0.0, params(updater)).state
    shuffled = [evs[i] for i in np.random.default_rng(0).permutation(len(evs))]
    other = step(None, shuffled, cat, 0.0, params(updater)).state
    np.testing.assert_allclose(
        other.interests[0].hidden, ordered.interests[0].hidden, rtol=1e-5, atol=1e-6
    )


def test_outputs_stay_finite_at_the_limits(updater: InterestUpdater) -> None:
    """The largest weights the codec accepts, zero and decade-long gaps, late events."""
    cat = small_catalogue()
    w = DEFAULT_LIMITS.max_abs_weight
    times = [0.0, 0.0, 3e8, 3e8, 1.0, 1.7e9, 1.7e9, 5.0]
    evs = [
        Behaviour("u", f"m{n % 10}", "view", t, f"x{n}", weight=(w if n % 3 else -w))
        for n, t in enumerate(times * 50)
    ]
    state = step(None, evs, cat, 0.0, params(updater)).state
    assert np.isfinite(state.interests[0].hidden).all()
    assert all(np.isfinite(score) for _, score in state.top_k) and state.top_k
    scores = updater.scores(state.interests[0].hidden, np.zeros(cat.dim), cat, 0.3)
    assert np.isfinite(scores).all()
    assert np.isfinite(updater.query(state.interests[0].hidden)).all()
    assert all(np.isfinite(event_weight(e)) for e in evs)


def test_a_model_change_moves_users_over(updater: InterestUpdater, tmp_path: Path) -> None:
    """A state written under another updater is rebuilt from its window, not reset."""
    other = next(f for name, f in FACTORIES.items() if name != _name(updater))(tmp_path / "o")
    cat, evs = small_catalogue(), events(4)
    old = step(None, evs[:10], cat, 0.0, params(other)).state
    moved = step(old, evs[10:], cat, 0.0, params(updater))
    assert moved.migrated_from == other.name and moved.state.updater == updater.name
    assert moved.state.interests[0].hidden.shape == updater.initial(cat.dim).shape
    assert moved.state.events_applied == len(evs)
    assert not np.array_equal(moved.state.interests[0].hidden, updater.initial(cat.dim))


def _name(updater: InterestUpdater) -> str:
    return "learned-gru" if updater.name.startswith("learned") else "time-decay"


def test_several_interests_work_with_every_updater(updater: InterestUpdater) -> None:
    """Each interest is one hidden vector of the updater (a learned model's one
    state under each of its query heads: a one-head model has one interest);
    the composition ranks, the state round-trips."""
    cat, evs = small_catalogue(), events(5, n=30)
    state = step(None, evs, cat, 0.0, params(updater, max_interests=3)).state
    if updater.shared_state and updater.heads == 1:
        assert len(state.interests) == 1
    else:
        assert 1 < len(state.interests) <= 3
    assert sum(i.events for i in state.interests) == len(evs)
    shape = updater.initial(cat.dim).shape
    assert all(i.hidden.shape == shape and np.isfinite(i.hidden).all() for i in state.interests)
    assert len(state.top_k) == 5 and all(np.isfinite(s) for _, s in state.top_k)
    back = decode_state(encode_state(state))
    assert back.top_k == state.top_k and len(back.interests) == len(state.interests)
    # A query (phrases in the catalogue's text space) moves or opens interests too.
    phrase = EncodedPhrase("like m4", 1, 1.0, cat.vector("m4"))
    q = Behaviour("u1", "", "query", evs[-1].ts + 1, "q1", text="like m4", phrases=(phrase,))
    after = step(state, [q], cat, 0.0, params(updater, max_interests=3)).state
    assert after.query is not None and after.events_applied == len(evs) + 1
    assert sum(i.events for i in after.interests) == len(evs) + 1


def test_the_readable_direction_follows_what_the_updater_ranks(updater: InterestUpdater) -> None:
    """The tags a delta shows are read from a direction that agrees with the list:
    the catalogue's best item by that direction is among the updater's own top 5."""
    cat, evs = small_catalogue(), events(9, n=12)
    state = step(None, evs, cat, 0.0, params(updater)).state
    hidden = state.interests[0].hidden
    (direction,) = updater.readable_directions([hidden], cat)
    assert direction.shape == (cat.dim,) and abs(float(np.linalg.norm(direction)) - 1) < 1e-5
    zero = np.zeros(cat.dim, dtype=np.float32)
    own = np.argsort(-updater.scores(hidden, zero, cat, 0.0))[:5]
    assert int(np.argmax(cat.scores(direction))) in own
    assert updater.readable_directions([], cat).shape == (0, cat.dim)
