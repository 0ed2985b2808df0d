"""Several interests per user, the levels and queries, through the pure core.

Hand-made catalogues: items are unit vectors near an axis ("a<axis>-<j>"),
and "mix-<j>" items sit between axes 0 and 1 (nearer 0), where the single
mean vector of a user who likes both, more of axis 0, ends up.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from models.behaviour import Behaviour, EncodedPhrase
from models.catalogue import Catalogue
from models.core import CoreParams, interest_summary, rank, scores, step
from models.interest import composition
from models.interest.composition import CompositionSpec, Interest
from models.interest.levels import LevelSpec, level_weights, update_long
from models.state import decode_state, encode_state
from models.update import TimeDecayUpdater
from models.window import WindowSpec

DIM = 16
DAY = 86400.0


def catalogue(per_axis: int = 12, mixed: int = 6) -> Catalogue:
    rng = np.random.default_rng(0)
    cat = Catalogue(DIM)
    for axis in range(4):
        for j in range(per_axis):
            vec = np.eye(DIM, dtype=np.float32)[axis] + 0.15 * rng.standard_normal(DIM)
            cat.upsert(f"a{axis}-{j}", vec, (f"tag{axis}",))
    for j in range(mixed):
        vec = np.eye(DIM)[0] + 0.6 * np.eye(DIM)[1] + 0.15 * rng.standard_normal(DIM)
        cat.upsert(f"mix-{j}", vec, ("tag0", "tag1"))
    return cat


def params(max_interests: int, **kw) -> CoreParams:
    return CoreParams(
        k=10,
        window=WindowSpec(max_events=20, max_age_s=30 * DAY),
        composition=CompositionSpec(max_interests=max_interests),
        **kw,
    )


def two_tastes(n_first: int = 6, n_second: int = 4) -> list[Behaviour]:
    """Likes on axis 0 (jazz documentaries) and axis 1 (horror), interleaved in time."""
    items = [f"a0-{j}" for j in range(n_first)] + [f"a1-{j}" for j in range(n_second)]
    order = np.random.default_rng(1).permutation(len(items))
    return [
        Behaviour("u", items[i], "like", 1e9 + n * 3600.0, f"e{n}") for n, i in enumerate(order)
    ]


def kinds(top_k) -> dict[str, int]:
    out = {"a0": 0, "a1": 0, "mix": 0, "other": 0}
    for item, _ in top_k:
        key = item.split("-")[0]
        out[key if key in out else "other"] += 1
    return out


def test_two_tastes_single_vector_fails_and_several_interests_pass() -> None:
    """A single mean vector recommends the in-between items and no horror;
    several interests recommend both tastes, the heavier one more."""
    cat, events = catalogue(), two_tastes()
    single = step(None, events, cat, 0.0, params(1)).state
    multi = step(None, events, cat, 0.0, params(4)).state
    one, many = kinds(single.top_k), kinds(multi.top_k)
    assert len(single.interests) == 1 and len(multi.interests) >= 2
    assert one["a1"] == 0, one  # the lighter taste is lost
    # Both tastes, the heavier one more (the in-between items lean to axis 0).
    assert many["a1"] >= 3 and many["a0"] + many["mix"] > many["a1"], many


def test_weights_follow_the_events_and_decay() -> None:
    cat, events = catalogue(), two_tastes(6, 3)
    state = step(None, events, cat, 0.0, params(4)).state
    w = composition.weights(state.interests, state.last_event_ts, CompositionSpec())
    assert sorted(np.round(w, 2)) == pytest.approx([1 / 3, 2 / 3], abs=0.02)
    # 120 days later, with new events on a third taste, the old two weigh little.
    later = [Behaviour("u", f"a2-{j}", "like", 1e9 + 180 * DAY + j, f"x{j}") for j in range(3)]
    state = step(state, later, cat, 0.0, params(4)).state
    w = composition.weights(state.interests, state.last_event_ts, CompositionSpec())
    assert len(state.interests) == 3 and max(w) > 0.9


def test_count_is_bounded_and_close_interests_merge() -> None:
    cat = catalogue()
    events = [
        Behaviour("u", f"a{axis}-{j}", "like", 1e9 + 10 * axis + j, f"e{axis}{j}")
        for axis in range(4)
        for j in range(3)
    ]
    state = step(None, events, cat, 0.0, params(2)).state
    assert len(state.interests) == 2
    assert sum(i.events for i in state.interests) == len(events)
    # Two interests that become close merge into one.
    up, spec = TimeDecayUpdater(), CompositionSpec(max_interests=4, merge_above=0.8)
    a = Interest(cat.vector("a0-0").copy(), 1e9, 1.0, 1e9, 1)
    b = Interest(cat.vector("a1-0").copy(), 1e9, 1.0, 1e9, 1)
    toward = cat.vector("a0-1") * 0.2 + cat.vector("a1-1")
    merged, _ = composition.absorb((a, b), toward, toward, 3.0, 1e9 + 1, up, spec)
    assert len(merged) == 2  # b moved toward a, not yet within 0.8
    again, _ = composition.absorb(
        merged, cat.vector("a0-2"), cat.vector("a0-2"), 9.0, 1e9, up, spec
    )
    assert len(again) <= 2


def test_a_negative_event_never_opens_an_interest() -> None:
    cat = catalogue()
    liked = step(None, [Behaviour("u", "a0-0", "like", 1e9, "e0")], cat, 0.0, params(4)).state
    skipped = step(liked, [Behaviour("u", "a2-0", "skip", 1e9 + 1, "e1")], cat, 0.0, params(4))
    assert len(skipped.state.interests) == 1
    assert skipped.state.interests[0].mass == pytest.approx(liked.interests[0].mass)


def test_one_interest_is_the_single_vector_state() -> None:
    """``max_interests = 1``: the one hidden vector is the updater's over all events."""
    cat, events = catalogue(), two_tastes()
    state = step(None, events, cat, 0.0, params(1)).state
    up = TimeDecayUpdater()
    hidden, ts = up.initial(DIM), None
    for e in sorted(events, key=lambda e: e.ts):
        hidden, ts = up.apply(hidden, ts, cat.vector(e.item_id), 3.0, e.ts)
    np.testing.assert_allclose(state.interests[0].hidden, hidden, rtol=1e-5, atol=1e-6)


def test_compose_is_softmax_weighted_and_keeps_removed_items_out() -> None:
    a = np.array([3.0, 0.0, 0.0, 0.0, -np.inf])
    b = np.array([0.0, 3.0, 0.0, 0.0, -np.inf])
    even = composition.compose([a, b], np.array([0.5, 0.5]), 0.5)
    tilted = composition.compose([a, b], np.array([0.9, 0.1]), 0.5)
    assert even[0] == pytest.approx(even[1]) and tilted[0] > tilted[1] > tilted[2]
    assert even[4] == -np.inf and tilted[4] == -np.inf
    # A high temperature tends to the weighted mean of the z-scores.
    hot = composition.compose([a, b], np.array([0.9, 0.1]), 1e6)
    za, zb = composition.standardise(a), composition.standardise(b)
    np.testing.assert_allclose(hot[:4], (0.9 * za + 0.1 * zb)[:4], atol=1e-3)


def test_quota_shares_the_list_in_proportion_whatever_the_spread() -> None:
    """The heavier interest's few standout items (high z-scores) crowd a
    broad lighter taste (many good items, none standing out) out of a
    softmax composition; quota gives each its share of the list."""
    rng = np.random.default_rng(3)
    n, idx = 200, np.arange(200)
    tight = np.where(idx < 40, 5.0 + 0.01 * rng.standard_normal(n), rng.standard_normal(n))
    loose = np.where((idx >= 40) & (idx < 140), 1.0 + 0.3 * rng.random(n), 0.0)
    loose[-1] = -np.inf
    shares = np.array([0.7, 0.3])
    soft = composition.compose([tight, loose], shares, 0.5)
    quota = composition.compose([tight, loose], shares, 1.0, mode="quota")
    sharp = composition.compose([tight, loose], shares, 0.5, mode="quota")
    top = lambda s: np.argsort(-s, kind="stable")[:10]  # noqa: E731
    light = lambda top: int(((top >= 40) & (top < 140)).sum())  # noqa: E731
    assert light(top(soft)) == 0
    assert light(top(quota)) == 3 and int((top(quota) < 40).sum()) == 7
    # A lower temperature sharpens the weights (0.7, 0.3 -> 0.84, 0.16): fewer light items.
    assert 1 <= light(top(sharp)) < 3
    assert quota[-1] == -np.inf and np.isfinite(quota[:-1]).all()
    # One interest: both modes are its z-scores.
    np.testing.assert_allclose(
        composition.compose([loose], np.array([1.0]), 0.5, mode="quota"),
        composition.standardise(loose),
    )
    with pytest.raises(ValueError, match="mode"):
        CompositionSpec(mode="average")


def test_levels_lean_on_the_long_term_after_a_long_absence() -> None:
    spec = LevelSpec()
    active, back = level_weights(3600.0, spec), level_weights(45 * DAY, spec)
    assert back["long"] > 0.5 > active["long"]
    assert sum(active.values()) == pytest.approx(1.0) == sum(back.values())
    cat = catalogue(per_axis=24)
    # Months of axis 0, then after 45 days away, two events on axis 2.
    history = [Behaviour("u", f"a0-{j}", "like", 1e9 + j * DAY, f"h{j}") for j in range(10)]
    state = step(None, history, cat, 0.0, params(1)).state
    away = 1e9 + 9 * DAY + 45 * DAY
    back_state = step(state, [Behaviour("u", "a2-0", "view", away, "b0")], cat, 0.0, params(1))
    s = back_state.state
    assert s.gap_s == pytest.approx(45 * DAY)
    summary = back_state.delta.interest
    assert summary["levels"]["long"]["weight"] > 0.5
    assert summary["levels"]["long"]["tags"][0][0] == "tag0"
    assert summary["levels"]["short"]["tags"][0][0] == "tag2"
    # The list still carries the long-term taste (axis 0) next to the new one.
    assert kinds(s.top_k)["a0"] >= 3
    # Once active again (small gaps), the short and mid-term levels take over.
    active_state = step(
        s,
        [Behaviour("u", "a2-1", "view", away + 600, "b1")],
        cat,
        0.0,
        params(1),
    ).state
    assert level_weights(active_state.gap_s, spec)["long"] < 0.15


def test_long_term_profile_is_order_independent() -> None:
    vecs = [np.eye(3)[i % 3] for i in range(6)]
    times = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    a = b = (np.zeros(3), None)
    for v, t in zip(vecs, times, strict=True):
        a = update_long(*a, v, 1.0, t, 10.0)
    for n in np.random.default_rng(0).permutation(6):
        b = update_long(*b, vecs[n], 1.0, times[n], 10.0)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    assert a[1] == b[1] == 9.0


def test_behaviour_type_weights_are_settings() -> None:
    cat = catalogue()
    ev = Behaviour("u", "a0-0", "click", 1e9, "e0")
    heavy = dataclasses.replace(params(1), type_weights={**params(1).type_weights, "click": 7.0})
    a = step(None, [ev], cat, 0.0, params(1)).state
    b = step(None, [ev], cat, 0.0, heavy).state
    np.testing.assert_allclose(b.interests[0].hidden, a.interests[0].hidden * 7.0 / 1.5, rtol=1e-6)


def phrase(text: str, polarity: int, weight: float, vec: np.ndarray) -> EncodedPhrase:
    return EncodedPhrase(text, polarity, weight, np.asarray(vec, dtype=np.float32))


def query(phrases: list[EncodedPhrase], ts: float = 1e9, text: str = "q") -> Behaviour:
    return Behaviour("u", "", "query", ts, f"q-{ts}", text=text, phrases=tuple(phrases))


def test_a_query_alone_gives_a_cold_start_list() -> None:
    cat = catalogue()
    q = query(
        [phrase("axis one", +1, 0.6, np.eye(DIM)[1]), phrase("axis two", +1, 0.4, np.eye(DIM)[2])]
    )
    result = step(None, [q], cat, 0.0, params(4))
    state = result.state
    assert len(state.interests) == 2 and state.events_applied == 1 and not state.consumed
    got = kinds(state.top_k)
    top = [item for item, _ in state.top_k]
    assert top[0].startswith("a1") and any(i.startswith("a2") for i in top)
    assert got["a1"] >= sum(1 for i in top if i.startswith("a2")) >= 3
    summary = result.delta.interest
    assert summary["query"]["phrases"] == [
        {"text": "axis one", "polarity": "positive", "weight": 0.6},
        {"text": "axis two", "polarity": "positive", "weight": 0.4},
    ]
    assert decode_state(encode_state(state)) is not None


def test_negative_phrases_push_matching_items_out() -> None:
    """ "X and Y" lists both; "X, nothing Y" lists no Y item."""
    cat = catalogue()
    x, y = np.eye(DIM)[0], np.eye(DIM)[1]
    both = step(
        None, [query([phrase("x", 1, 0.5, x), phrase("y", 1, 0.5, y)])], cat, 0.0, params(4)
    )
    assert kinds(both.state.top_k)["a1"] >= 3
    without = step(
        None, [query([phrase("x", 1, 1.0, x), phrase("y", -1, 1.0, y)])], cat, 0.0, params(4)
    )
    got = kinds(without.state.top_k)
    assert got["a1"] == 0 and got["mix"] == 0, got
    back = decode_state(encode_state(without.state))
    assert back.query is not None and len(back.query.negatives) == 1
    np.testing.assert_array_equal(back.query.negatives[0], y.astype(np.float32))
    # A later query replaces the negatives.
    again = step(without.state, [query([phrase("y", 1, 1.0, y)], ts=2e9)], cat, 0.0, params(4))
    assert again.state.query.negatives == () and kinds(again.state.top_k)["a1"] >= 3


def test_summary_reports_levels_interests_and_moves() -> None:
    cat, events = catalogue(), two_tastes()
    state = step(None, events, cat, 0.0, params(4)).state
    summary = interest_summary(state, cat, params(4))
    assert set(summary) >= {"events", "short_term", "mid_term", "pending", "levels", "interests"}
    assert set(summary["levels"]) == {"short", "mid", "long"}
    assert {i["tags"][0][0] for i in summary["interests"]} == {"tag0", "tag1"}
    assert sum(i["weight"] for i in summary["interests"]) == pytest.approx(1.0, abs=0.01)


def test_scores_are_what_step_ranks_with() -> None:
    cat, events = catalogue(), two_tastes()
    state = step(None, events, cat, 0.0, params(4)).state
    s = scores(state, cat, params(4))
    ids = cat.rows()[0]
    order = [ids[r] for r in np.argsort(-s, kind="stable") if ids[r] not in state.consumed]
    assert [i for i, _ in state.top_k] == order[:10]


def shift_events(before: int = 25, after: int = 12) -> list[Behaviour]:
    """Likes on axis 0, then the user moves to axis 2 (a sudden shift at event ``before``)."""
    items = [f"a0-{j % 12}" for j in range(before)] + [f"a2-{j % 12}" for j in range(after)]
    return [Behaviour("u", item, "like", 1e9 + n * 600.0, f"s{n}") for n, item in enumerate(items)]


def test_a_shift_is_flagged_in_the_delta_with_topics_before_and_after() -> None:
    cat, events = catalogue(), shift_events()
    p = params(4)
    state, flagged = None, []
    for n, ev in enumerate(events):
        result = step(state, [ev], cat, ev.ts, p)
        state = result.state
        if result.delta is not None and "shift" in result.delta.interest:
            flagged.append((n, result.delta.interest["shift"]))
    assert flagged, "the move to axis 2 was never flagged"
    (at, flag), *rest = flagged
    assert 25 <= at <= 25 + 8 and not rest  # within 8 events of the move, once
    assert flag["event_id"] == f"s{at}" and flag["total"] == 1 and flag["flags"] == 1
    assert flag["before"]["tags"][0][0] == "tag0" and flag["after"]["tags"][0][0] == "tag2"
    assert state.shifts == 1 and state.last_shift_ts == events[at].ts
    # The detector's state survives the state's bytes.
    assert decode_state(encode_state(state)).shift_detector == state.shift_detector


def test_no_shift_without_a_move_or_with_the_detector_off() -> None:
    cat = catalogue()
    steady = shift_events(before=40, after=0)
    state = None
    for ev in steady:
        result = step(state, [ev], cat, ev.ts, params(4))
        state = result.state
        assert result.delta is None or "shift" not in result.delta.interest
    assert state.shifts == 0 and state.shift_detector is not None
    off = step(None, shift_events(), cat, 0.0, params(4, shift=None)).state
    assert off.shifts == 0 and off.shift_detector is None


def test_a_negative_leaning_towards_a_positive_pushes_only_its_own_part() -> None:
    """ "x and z, nothing y" where y's vector leans towards x (as MiniLM's "jazz"
    leans towards "space"): the x items stay, next to z, and no y item comes in.
    Pushing with the raw phrase vector would have lost the x items."""
    cat = catalogue()
    x, y, z = np.eye(DIM)[2], np.eye(DIM)[1], np.eye(DIM)[3]
    leaning = (y + 0.8 * x) / np.linalg.norm(y + 0.8 * x)
    asked = query([phrase("x", 1, 0.5, x), phrase("z", 1, 0.5, z), phrase("y", -1, 1.0, leaning)])
    state = step(None, [asked], cat, 0.0, params(4)).state

    def count(top: list[tuple[str, float]]) -> Counter:
        return Counter(item.split("-")[0] for item, _ in top)

    got = count(state.top_k)
    assert got["a2"] >= 3 and got["a3"] >= 3 and got["a1"] == 0, got
    raw = dataclasses.replace(state, query=dataclasses.replace(state.query, negatives=(leaning,)))
    assert count(rank(raw, cat, params(4)))["a2"] < got["a2"]


# --------------------------------------------------------------------------- rebase keeps a query


class OtherModel(TimeDecayUpdater):
    """Another model (a new name): a state of the time-decay rule is rebased onto it."""

    name = "other-model"


def test_a_rebase_reopens_the_query_interests_and_keeps_its_negatives() -> None:
    """The query's phrases come along when the updater changes (hot reload, another model)."""
    cat = catalogue()
    p = params(6)
    history = two_tastes(4, 4)  # likes on axes 0 and 1
    asked = query(
        [phrase("axis two", 1, 0.6, np.eye(DIM)[2]), phrase("axis three", 1, 0.4, np.eye(DIM)[3]),
         phrase("axis one", -1, 1.0, np.eye(DIM)[1])],
        ts=history[-1].ts + 60.0,
    )  # fmt: skip
    later = Behaviour("u", "a0-9", "like", asked.ts + 60.0, "late")
    state = step(None, [*history, asked, later], cat, 0.0, p).state
    assert state.query is not None and len(state.query.positives) == 2

    moved = dataclasses.replace(p, updater=OtherModel())
    result = step(state, [], cat, 0.0, moved)
    rebased = result.state
    assert result.migrated_from == "time-decay" and rebased.updater == "other-model"
    dirs = composition.directions(rebased.interests, moved.updater)
    for axis in (2, 3):
        assert (dirs @ np.eye(DIM)[axis]).max() > 0.95, f"no interest along the phrase {axis}"
    # The other model runs the same rule: replaying the window with the query
    # at its place gives back the very interests the events and the query made.
    assert [(i.mass, i.events) for i in rebased.interests] == [
        (i.mass, i.events) for i in state.interests
    ]
    for mine, theirs in zip(rebased.interests, state.interests, strict=True):
        np.testing.assert_allclose(mine.hidden, theirs.hidden, rtol=1e-6)
    assert rebased.top_k == state.top_k

    # The negative phrase still pushes axis one down after the rebase.
    axis_one = [n for n, item in enumerate(cat.rows()[0]) if item.startswith("a1")]
    kept = dataclasses.replace(rebased.query, negatives=())
    unpushed = dataclasses.replace(rebased, query=kept)
    assert kinds(rebased.top_k)["a1"] == 0 < kinds(rank(unpushed, cat, moved))["a1"]
    assert (scores(rebased, cat, moved)[axis_one] < scores(unpushed, cat, moved)[axis_one]).all()

    # Without the query's phrases only the window's events come along.
    bare = step(dataclasses.replace(state, query=None), [], cat, 0.0, moved).state
    bare_dirs = composition.directions(bare.interests, moved.updater)
    assert len(bare.interests) == 2 and (bare_dirs @ np.eye(DIM)[2]).max() < 0.5


def test_a_query_from_before_its_window_is_reopened_first_and_weighted_as_applied() -> None:
    """The phrase absorbs at the query's place in time, with the query event's weight."""
    cat = catalogue()
    p = params(6)
    asked = query([phrase("axis two", 1, 1.0, np.eye(DIM)[2])], ts=1e9)
    asked = dataclasses.replace(asked, weight=3.0)
    events = [Behaviour("u", f"a0-{j}", "like", 1e9 + (j + 1) * 60.0, f"l{j}") for j in range(3)]
    state = step(None, [asked, *events], cat, 0.0, p).state
    assert state.query.weight == 3.0
    rebased = step(state, [], cat, 0.0, dataclasses.replace(p, updater=OtherModel())).state
    before = {round(i.mass, 6) for i in state.interests}
    after = {round(i.mass, 6) for i in rebased.interests}
    assert before == after, "same events, same order, same weights: the same masses"


# --------------------------------------------------------------------------- popularity prior


def _prior_on(cat: Catalogue, prefix: str) -> np.ndarray:
    """A prior favouring the items whose id starts with ``prefix`` (the popular ones)."""
    ids = cat.rows()[0]
    return composition.standardise(np.array([3.0 if i.startswith(prefix) else 0.0 for i in ids]))


def test_a_cold_user_is_ranked_by_the_query_composed_with_the_prior() -> None:
    from models.core import uses_prior, with_prior
    from models.interest.popularity import compose

    cat, p = catalogue(), params(4)
    asked = query([phrase("axis one", 1, 1.0, np.eye(DIM)[1])], ts=5e8)
    prior = _prior_on(cat, "a3")
    reads: list[float] = []

    def prior_at(ts: float) -> np.ndarray:
        reads.append(ts)
        return prior

    plain = step(None, [asked], cat, 0.0, p)
    cold = step(None, [asked], cat, 0.0, p, prior=prior_at)
    assert reads == [5e8], "the prior is read at the query's event time"
    state = cold.state
    assert uses_prior(state, p)
    base = scores(state, cat, p)
    np.testing.assert_array_equal(scores(state, cat, p, prior), with_prior(base, prior, p))
    np.testing.assert_array_equal(with_prior(base, prior, p), compose(base, prior, 0.125))
    assert kinds(plain.state.top_k)["a1"] == 10
    top = [item for item, _ in state.top_k]
    # The popular items lead, ordered among themselves by the query.
    assert all(i.startswith("a3") for i in top)
    assert top == [i for i, _ in rank(state, cat, p, prior)]
    assert cold.delta.interest["popularity_prior"] == {"query_weight": 0.125}
    assert "popularity_prior" not in plain.delta.interest
    weighted = dataclasses.replace(p, popularity=dataclasses.replace(p.popularity, query_weight=8))
    heavy = step(None, [asked], cat, 0.0, weighted, prior=prior_at).state
    assert kinds(heavy.top_k)["a1"] >= 8, "a heavy query weight lets the query lead"


def test_the_prior_leaves_users_with_history_alone_and_negatives_push_after_it() -> None:
    from models.core import uses_prior

    cat, p = catalogue(), params(4)
    prior = _prior_on(cat, "a3")
    liked = Behaviour("u", "a0-0", "like", 1e9, "l0")
    asked = query([phrase("axis one", 1, 1.0, np.eye(DIM)[1])], ts=1e9 + 60)

    def never(ts: float) -> np.ndarray:
        raise AssertionError("the prior is not read for a user with history")

    warm = step(None, [liked, asked], cat, 0.0, p, prior=never).state
    assert not uses_prior(warm, p)
    np.testing.assert_array_equal(scores(warm, cat, p, prior), scores(warm, cat, p))
    lenient = dataclasses.replace(p, popularity=dataclasses.replace(p.popularity, cold_items=2))
    assert uses_prior(warm, lenient)
    within = step(None, [liked, asked], cat, 0.0, lenient, prior=lambda t: prior).state
    assert kinds(within.top_k)["other"] >= 5, "within cold_items the prior ranks"

    refused = query(
        [phrase("axis one", 1, 1.0, np.eye(DIM)[1]), phrase("axis three", -1, 1.0, np.eye(DIM)[3])]
    )
    pushed = step(None, [refused], cat, 0.0, p, prior=lambda t: prior).state
    assert not any(item.startswith("a3") for item, _ in pushed.top_k), "popular but refused"
    assert uses_prior(pushed, p) and not uses_prior(dataclasses.replace(pushed, query=None), p)
