"""The learned updater: artefact format, the numpy cell in the core, parity with torch."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from models.behaviour import Behaviour, event_weight
from models.catalogue import Catalogue
from models.core import CoreParams, step
from models.interest.composition import CompositionSpec, standardise
from models.interest.levels import LevelSpec
from models.learned import (
    FORMAT_VERSION,
    ArtifactError,
    GruCell,
    LearnedUpdater,
    load_artifact,
    save_artifact,
)
from models.state import decode_state, encode_state
from models.update import InterestUpdater, TimeDecayUpdater
from models.window import WindowSpec
from tests.updater_fixtures import (
    COLD,
    HIDDEN,
    ITEM_DIM,
    N_ITEMS,
    TEXT_DIM,
    random_cell_weights,
    unit_texts,
)

HOUR = 3600.0
_text = unit_texts
_random_weights = random_cell_weights


def _catalogue(text: np.ndarray) -> Catalogue:
    cat = Catalogue(TEXT_DIM)
    for i, vec in enumerate(text):
        cat.upsert(f"m{i}", vec, (f"g{i % 3}",))
    return cat


def _events(rng: np.random.Generator, n: int = 25) -> list[Behaviour]:
    items = rng.permutation(N_ITEMS)[:n]
    ts = np.cumsum(rng.choice([0.0, 60.0, 5 * HOUR, 3 * 86400.0], size=n)) + 1e9
    ts[n // 2] = ts[n // 2 - 3]  # a late (out-of-order) event
    ratings = rng.integers(1, 6, size=n)
    return [
        Behaviour("u1", f"m{i}", "rating", float(t), f"e{k}", rating=float(r))
        for k, (i, t, r) in enumerate(zip(items, ts, ratings, strict=True))
    ]


def _params(updater: object) -> CoreParams:
    """The cell alone: one interest, no short or long-term level (the parity the tests check)."""
    return CoreParams(
        k=5,
        window=WindowSpec(max_events=5),
        updater=updater,  # type: ignore[arg-type]
        composition=CompositionSpec(max_interests=1),
        levels=LevelSpec(short_weight=0.0, long_weight=0.0, long_return_weight=0.0),
    )


def _feed(events: list[Behaviour], cat: Catalogue, params: CoreParams, sizes: list[int]):
    state, pos = None, 0
    results = []
    for size in sizes:
        batch = events[pos : pos + size]
        pos += size
        result = step(state, batch, cat, now=0.0, params=params)
        state = result.state
        results.append(result)
    assert pos == len(events)
    return state, results


@pytest.fixture
def artefact(tmp_path):
    rng = np.random.default_rng(7)
    vocab = [f"m{i}" for i in range(N_ITEMS) if i not in COLD]
    save_artifact(tmp_path / "model", _random_weights(rng, len(vocab)), vocab, config={"x": 1})
    return tmp_path / "model", _text(rng)


# -- torch-free ---------------------------------------------------------------


def test_artifact_round_trip_and_version(artefact) -> None:
    path, _ = artefact
    art = load_artifact(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["model_version"] == art.model_version
    assert manifest["config"] == {"x": 1}
    assert len(art.item_ids) == N_ITEMS - len(COLD)
    assert LearnedUpdater(art).name == f"learned-gru({art.model_version}, heads=1)"


def test_unknown_format_version_is_refused(artefact) -> None:
    path, _ = artefact
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(path)


def test_tampered_weights_are_refused(artefact) -> None:
    path, _ = artefact
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["weights_sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="hash"):
        load_artifact(path)


def test_query_heads_are_read_from_the_weights_and_checked(tmp_path) -> None:
    """``out_w`` of K * item_dim rows is a K-head model (1 before heads existed);
    rows that are no multiple of the item width are refused before any use."""
    rng = np.random.default_rng(3)
    vocab = [f"m{i}" for i in range(N_ITEMS)]
    art = save_artifact(tmp_path / "a", _random_weights(rng, len(vocab), heads=4), vocab)
    assert art.heads == 4 == load_artifact(tmp_path / "a").manifest["heads"]
    updater = LearnedUpdater(art)
    assert updater.initial(TEXT_DIM).shape == (HIDDEN + 1,)
    with pytest.raises(ValueError, match="head 4 of a 4-head"):
        updater.with_head(updater.initial(TEXT_DIM), 4)
    weights = _random_weights(rng, len(vocab))
    weights["out_w"] = np.zeros((ITEM_DIM + 1, HIDDEN), dtype=np.float32)
    weights["out_b"] = np.zeros(ITEM_DIM + 1, dtype=np.float32)
    with pytest.raises(ArtifactError, match="not a multiple of the item width"):
        save_artifact(tmp_path / "b", weights, vocab)


def test_cold_items_rest_on_text_alone(artefact) -> None:
    path, text = artefact
    cell = GruCell(load_artifact(path))
    w = cell.artifact.weights
    cold = cell.represent("m3", text[3])
    np.testing.assert_allclose(cold[:-1], text[3] @ w["text_w"] + w["text_b"], rtol=1e-6)
    warm = cell.represent("m4", text[4])
    row = cell.vocab["m4"]
    np.testing.assert_allclose(
        warm[:-1], text[4] @ w["text_w"] + w["text_b"] + w["id_emb"][row], rtol=1e-6
    )


def test_both_updaters_share_one_base_and_only_the_learned_one_has_its_own_space(
    artefact,
) -> None:
    path, _ = artefact
    learned, decay = LearnedUpdater.load(path), TimeDecayUpdater()
    assert isinstance(learned, InterestUpdater) and isinstance(decay, InterestUpdater)
    assert type(decay).represent is InterestUpdater.represent
    assert type(decay).scores is InterestUpdater.scores
    assert type(learned).represent is not InterestUpdater.represent
    assert type(learned).scores is not InterestUpdater.scores


def test_core_event_by_event_equals_batched_cell(artefact) -> None:
    """The core (one event per step, or any batching) gives the numpy batch path's state."""
    path, text = artefact
    updater = LearnedUpdater.load(path)
    cat, events = _catalogue(text), _events(np.random.default_rng(1))
    one_by_one, _ = _feed(events, cat, _params(updater), [1] * len(events))
    batched, _ = _feed(events, cat, _params(updater), [4, 1, 10, 10])
    cell = updater.cell
    reps = cell.represent_many([f"m{i}" for i in range(N_ITEMS)], text)
    items = np.array([int(e.item_id[1:]) for e in events])
    weights = np.array([event_weight(e) for e in events], dtype=np.float32)
    ts = np.array([e.ts for e in events])
    expected = cell.final_states([items], [weights], [ts], reps)[0]
    assert one_by_one is not None and batched is not None
    assert one_by_one.interests[0].hidden.shape == (HIDDEN,)
    np.testing.assert_allclose(one_by_one.interests[0].hidden, expected, atol=1e-6)
    np.testing.assert_allclose(batched.interests[0].hidden, expected, atol=1e-6)
    assert one_by_one.updater == updater.name


def test_core_ranks_by_the_model_score_and_state_round_trips(artefact) -> None:
    path, text = artefact
    updater = LearnedUpdater.load(path)
    cat, events = _catalogue(text), _events(np.random.default_rng(2), n=8)
    state, results = _feed(events, cat, _params(updater), [8])
    assert state is not None
    cell = updater.cell
    reps = cell.represent_many([f"m{i}" for i in range(N_ITEMS)], text)
    scores = cell.scores(state.interests[0].hidden, reps)
    seen = {int(e.item_id[1:]) for e in events}
    order = [i for i in np.argsort(-scores, kind="stable") if i not in seen][:5]
    assert [item for item, _ in state.top_k] == [f"m{i}" for i in order]
    # Scores are the model's, standardised over the catalogue (`models.core.scores`).
    np.testing.assert_allclose([s for _, s in state.top_k], standardise(scores)[order], atol=1e-5)
    back = decode_state(encode_state(state))
    assert (
        np.array_equal(back.interests[0].hidden, state.interests[0].hidden)
        and back.top_k == state.top_k
    )
    # the readable summary still works (a direction in the catalogue's text space)
    assert results[-1].delta is not None and "mid_term" in results[-1].delta.interest


def test_learned_ranking_follows_catalogue_changes(artefact) -> None:
    """The fused item vectors are memoised per catalogue revision, never stale."""
    path, text = artefact
    updater = LearnedUpdater.load(path)
    cat = _catalogue(text)
    state, _ = _feed(_events(np.random.default_rng(2), n=8), cat, _params(updater), [8])
    assert state is not None
    best = state.top_k[0][0]
    assert cat.remove(best)  # a tombstone
    ranked = _rank(updater, state, cat, 5)
    assert best not in [item for item, _ in ranked]
    cat.upsert(best, text[int(best[1:])])  # back, then a brand-new (cold) item
    assert _rank(updater, state, cat, 5)[0][0] == best
    cat.upsert("new", text[0])
    ids = [i for i, _ in _rank(updater, state, cat, N_ITEMS + 1)]
    assert "new" in ids and len(ids) == len(cat) - len(state.consumed & set(cat.item_ids()))


def test_switching_updater_restarts_interest(artefact) -> None:
    path, text = artefact
    cat, events = _catalogue(text), _events(np.random.default_rng(3), n=4)
    old, _ = _feed(events[:2], cat, _params(TimeDecayUpdater()), [2])
    new = step(old, events[2:], cat, now=0.0, params=_params(LearnedUpdater.load(path))).state
    assert new is not None and new.interests[0].hidden.shape == (HIDDEN,)
    assert new.version == old.version + 1  # type: ignore[union-attr]


def test_settings_build_the_learned_updater(artefact) -> None:
    from streams.settings import Settings, SettingsError

    path, _ = artefact
    assert isinstance(Settings().core_params().updater, TimeDecayUpdater)
    assert isinstance(Settings(updater=str(path)).core_params().updater, LearnedUpdater)
    missing = Settings(updater=str(path / "missing"))  # validating reads no file ...
    with pytest.raises(SettingsError, match="learned-updater folder"):
        missing.core_params()  # ... the worker's start does, and says what is wrong


# -- parity with torch ----------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("heads", [1, 3])
def test_streaming_core_matches_torch_batch_forward(tmp_path, heads: int) -> None:
    """Events fed one at a time through `step` give torch's batch state and scores
    (several heads and one interest: each item's best head, as trained)."""
    torch = pytest.importorskip("torch")
    from models.training.export import export_gru
    from models.training.gru import FusedGru, GruConfig
    from models.training.sequences import gap_matrix, rating_weights

    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    text = _text(rng)
    warm = torch.tensor([i not in COLD for i in range(N_ITEMS)])
    cfg = GruConfig(item_dim=ITEM_DIM, hidden_dim=HIDDEN, dropout=0.3, heads=heads)
    model = FusedGru(torch.from_numpy(text), warm, cfg).eval()
    with torch.no_grad():  # move the id embeddings and biases away from their init
        model.id_bias.normal_(0.0, 0.5)
        model.id_emb.weight.mul_(10.0)
    export_gru(model, [f"m{i}" for i in range(N_ITEMS)], tmp_path / "model")
    updater = LearnedUpdater.load(tmp_path / "model")
    assert updater.heads == heads == updater.artifact.manifest["heads"]

    events = _events(rng)
    cat = _catalogue(text)
    state, _ = _feed(events, cat, _params(updater), [1] * len(events))
    assert state is not None

    items = np.array([int(e.item_id[1:]) for e in events])
    ratings = np.array([e.rating for e in events], dtype=np.float32)
    ts = np.array([e.ts for e in events])
    with torch.no_grad():
        reps = model.item_reps()
        h = model.hidden_states(
            reps,
            torch.from_numpy(items)[None],
            torch.from_numpy(rating_weights(ratings))[None],
            torch.from_numpy(gap_matrix(ts))[None],
            torch.tensor([len(items)]),
        )[0, -1]
        scores = model.head_scores(h, reps).numpy()
    np.testing.assert_allclose(state.interests[0].hidden[:HIDDEN], h.numpy(), atol=1e-5)
    if heads > 1:
        assert updater.head_of(state.interests[0].hidden) == LearnedUpdater.ALL_HEADS
    ranked = [i for i in np.argsort(-scores, kind="stable") if i not in set(items.tolist())][:5]
    assert [item for item, _ in state.top_k] == [f"m{i}" for i in ranked]
    z = standardise(scores)  # the core's scores: the model's, standardised over the catalogue
    np.testing.assert_allclose([s for _, s in state.top_k], z[ranked], atol=1e-5)


def _rank(updater: LearnedUpdater, state, cat, k: int) -> list:
    """The learned model's list, as the core asks for it (no short-term mix)."""
    short = np.zeros(cat.dim, dtype=np.float32)
    return updater.rank(state.interests[0].hidden, short, cat, k, state.consumed, 0.3)


@pytest.mark.torch
def test_heads_share_one_state_and_each_event_credits_its_best_head(tmp_path) -> None:
    """Several interests of a multi-head model: one GRU state (torch's) under every
    interest, each ranking by its own head's query; an event's mass goes to the
    head that scored its item highest before it."""
    torch = pytest.importorskip("torch")
    from models.training.export import export_gru
    from models.training.gru import FusedGru, GruConfig
    from models.training.sequences import gap_matrix, rating_weights

    rng = np.random.default_rng(11)
    torch.manual_seed(11)
    text = _text(rng)
    warm = torch.tensor([i not in COLD for i in range(N_ITEMS)])
    cfg = GruConfig(item_dim=ITEM_DIM, hidden_dim=HIDDEN, heads=3)
    model = FusedGru(torch.from_numpy(text), warm, cfg).eval()
    with torch.no_grad():
        model.out.weight.mul_(4.0)  # heads far apart, so that several are credited
    export_gru(model, [f"m{i}" for i in range(N_ITEMS)], tmp_path / "model")
    updater = LearnedUpdater.load(tmp_path / "model")
    cat = _catalogue(text)
    events = _events(rng, n=20)
    params = CoreParams(
        k=5,
        updater=updater,
        composition=CompositionSpec(max_interests=3, merge_above=1.0),
        levels=LevelSpec(short_weight=0.0, long_weight=0.0, long_return_weight=0.0),
    )
    state, want_heads = None, []
    for e in events:
        rep = updater.represent(e.item_id, cat.vector(e.item_id))
        prev = updater.initial(0) if state is None else state.interests[0].hidden
        want_heads.append(int(np.argmax(updater.head_scores(prev, rep))))
        state = step(state, [e], cat, 0.0, params).state
    assert state is not None and 1 < len(state.interests) <= 3
    items = torch.tensor([[int(e.item_id[1:]) for e in events]])
    weights = rating_weights(np.array([e.rating for e in events], dtype=np.float32))
    with torch.no_grad():
        reps = model.item_reps()
        h = model.hidden_states(
            reps, items, torch.from_numpy(weights)[None],
            torch.from_numpy(gap_matrix(np.array([e.ts for e in events])))[None],
            torch.tensor([len(events)]),
        )[0, -1]  # fmt: skip
        queries = model.queries(h).numpy()
    zero = np.zeros(cat.dim, dtype=np.float32)
    credited = {}
    for interest in state.interests:
        head = updater.head_of(interest.hidden)
        np.testing.assert_allclose(interest.hidden[:HIDDEN], h.numpy(), atol=1e-5)
        own = updater.scores(interest.hidden, zero, cat, 0.0)
        np.testing.assert_allclose(own, queries[head] @ reps.numpy().T, atol=1e-4)
        credited[head] = interest.events
    assert credited == {k: want_heads.count(k) for k in set(want_heads)}


def test_heads_within_the_bound_keep_one_state_and_distinct_heads(tmp_path) -> None:
    """Fewer interests allowed than the model has heads: an event whose head has no
    interest (no room, or a negative event) goes to the user's best head; every
    interest is still the one shared state, each a different head."""
    from tests.updater_fixtures import random_learned_updater

    updater = random_learned_updater(tmp_path / "m", heads=3)
    cat = _catalogue(_text(np.random.default_rng(0)))
    params = CoreParams(
        updater=updater, composition=CompositionSpec(max_interests=2, merge_above=1.0)
    )
    events = _events(np.random.default_rng(4), n=30)
    state = step(None, events, cat, 0.0, params).state
    assert len(state.interests) == 2
    heads = [updater.head_of(i.hidden) for i in state.interests]
    assert len(set(heads)) == 2 and all(0 <= k < 3 for k in heads)
    np.testing.assert_array_equal(state.interests[0].hidden[:-1], state.interests[1].hidden[:-1])
    assert sum(i.events for i in state.interests) == len(events)
    one = step(
        None, events, cat, 0.0, replace(params, composition=CompositionSpec(max_interests=1))
    )
    assert [updater.head_of(i.hidden) for i in one.state.interests] == [LearnedUpdater.ALL_HEADS]
    np.testing.assert_array_equal(
        one.state.interests[0].hidden[:-1], state.interests[0].hidden[:-1]
    )


@pytest.mark.parametrize("heads", [1, 3])
def test_a_cold_users_query_ranks_by_its_phrases_with_a_learned_model(tmp_path, heads) -> None:
    """The learned model never saw phrases: a user with only a query ranks by the
    phrases' own directions, each in proportion (both of "m4 and m9" lead the
    list), and by the model again once the user has consumed an item."""
    from models.behaviour import EncodedPhrase
    from models.core import _phrase_directions
    from tests.updater_fixtures import random_learned_updater

    updater = random_learned_updater(tmp_path / "m", heads=heads)
    cat = _catalogue(_text(np.random.default_rng(0)))
    phrases = tuple(EncodedPhrase(f"like {i}", 1, 0.5, cat.vector(i)) for i in ("m4", "m9"))
    query = Behaviour("u1", "", "query", 1e9, "q1", text="m4 and m9", phrases=phrases)
    params = CoreParams(k=5, updater=updater)
    cold = step(None, [query], cat, 0.0, params).state
    assert {item for item, _ in cold.top_k[:2]} == {"m4", "m9"}
    took = Behaviour("u1", "m20", "like", 1e9 + 60, "e1")
    warm = step(cold, [took], cat, 0.0, params).state
    assert _phrase_directions(cold, params) is not None
    assert _phrase_directions(warm, params) is None and warm.top_k != cold.top_k
    # The time-decayed rule's phrases are interests of its own: never this path.
    assert (
        _phrase_directions(replace(cold, updater=""), replace(params, updater=TimeDecayUpdater()))
        is None
    )
