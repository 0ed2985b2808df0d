"""The evaluation harness and its baselines on a slice of MovieLens-100K."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models.datasets import Interactions, Split, leave_last_out, load_movielens
from models.evaluation import harness, registry
from models.evaluation.baselines import (
    ItemKNN,
    PopularityTimeDecayed,
    Recommender,
    RiverMF,
    TimeDecayCore,
    materialize,
    river_scores,
)
from models.evaluation.metrics import seen_mask, top_k
from tests.paths import require_ml100k

N_USERS = 100


@pytest.fixture(scope="module")
def small() -> tuple[Interactions, Split]:
    log = load_movielens(require_ml100k(), max_users=N_USERS)
    return log, leave_last_out(log)


def _unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["biased", "funk"])
def test_river_scores_equal_predict_one(kind: str) -> None:
    mf = RiverMF(kind, n_factors=4)
    model = mf.new_model(0.05, seed=3)
    materialize(model, range(3), range(5))
    for u, i, y in [(0, 1, 1.0), (1, 2, 1.0), (2, 4, 0.0), (0, 3, 1.0), (1, 0, 0.0)]:
        model.learn_one(u, i, y)
    got = river_scores(model, [0, 1, 2], [0, 1, 2, 3, 4])
    want = [[model.predict_one(u, i) for i in range(5)] for u in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_river_mf_snapshot_scores_equal_predict_one(small: tuple[Interactions, Split]) -> None:
    log, split = small
    mf = RiverMF("biased", learning_rates=(0.05,), n_factors=8)
    mf.fit(split, log, seed=1)
    # Rebuild the model the same way and compare on a few pairs.
    model = mf.new_model(0.05, seed=1)
    materialize(model, range(split.n_users), range(split.n_items))
    mf._learn(model, *harness_known(split), np.random.default_rng(1))
    users = np.array([0, 5, 42])
    got = mf.scores(users, "valid")
    for row, u in enumerate(users):
        for i in (0, 17, 999):
            assert got[row, i] == pytest.approx(model.predict_one(int(u), i), abs=1e-9)


def harness_known(split: Split) -> tuple[np.ndarray, np.ndarray]:
    from models.evaluation.baselines import _known_events

    users, items, _ = _known_events(split, "valid")
    return users, items


def test_same_seed_same_scores_other_seed_differs(small: tuple[Interactions, Split]) -> None:
    log, split = small
    users = np.arange(10)

    def run(seed: int) -> np.ndarray:
        mf = RiverMF("funk", learning_rates=(0.05,), n_factors=8)
        mf.fit(split, log, seed)
        return mf.scores(users, "test")

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_time_decay_core_scores_rank_like_the_core(small: tuple[Interactions, Split]) -> None:
    log, split = small
    model = TimeDecayCore(
        half_lives_days=(1.0,), short_term_weights=(0.3,), event_types=("rating",),
        embeddings=_unit_vectors(log.n_items),
    )  # fmt: skip
    model.fit(split, log, seed=0)
    users = np.arange(20)
    scores = model.scores(users, "test")
    seen = seen_mask([split.history(int(u), "test") for u in users], log.n_items)
    ours = top_k(scores, seen, 10)
    for row, u in enumerate(users):
        state = model._replays[model._key]["test"][u]
        assert [log.item_ids[i] for i in ours[row]] == [item for item, _ in state.top_k]


def test_baselines_follow_the_protocol() -> None:
    for model in (PopularityTimeDecayed(), ItemKNN(), RiverMF(), TimeDecayCore()):
        assert isinstance(model, Recommender)


def test_run_eval_writes_reports(
    small: tuple[Interactions, Split], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = small
    vectors = _unit_vectors(log.n_items)
    monkeypatch.setitem(
        registry.MODELS,
        "time-decay-core",
        lambda: TimeDecayCore(
            half_lives_days=(0.05, 1.0), short_term_weights=(0.0, 0.3), event_types=("rating",),
            embeddings=vectors,
        ),
    )  # fmt: skip
    monkeypatch.setitem(registry.MODELS, "river-funk-mf", lambda: RiverMF("funk", n_factors=8))

    def missing() -> Recommender:
        raise ImportError("No module named 'torch'")

    monkeypatch.setitem(registry.MODELS, "needs-torch", missing)
    names = ["most-popular", "pop-decay", "item-knn", "time-decay-core", "river-funk-mf"]
    report = harness.run_eval(log, [*names, "needs-torch"], [1, 2], tmp_path, dataset="slice")

    models = report["models"]
    assert models["needs-torch"]["status"] == "skipped"
    assert "torch" in models["needs-torch"]["reason"]
    for name in names:
        assert models[name]["status"] == "ok", models[name].get("reason")
        assert len(models[name]["runs"]) == 2
        for phase in ("valid", "test"):
            m = models[name]["mean"][phase]
            assert 0.0 <= m["ndcg"] <= m["hr"] <= 1.0 and 0.0 < m["coverage"] <= 1.0
    pop = models["most-popular"]["mean"]["test"]
    assert 0.01 < pop["ndcg"] < 0.15, pop
    # Deterministic models are fitted once; river depends on the seed.
    assert models["item-knn"]["runs"][1]["reused_from_seed"] == 1
    assert models["item-knn"]["std"]["test"]["ndcg"] == 0.0
    assert models["pop-decay"]["runs"][0]["params"]["half_life_days"] in (
        1.0, 3.0, 7.0, 14.0, 30.0, 90.0, "inf",
    )  # fmt: skip

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["dataset"]["n_users"] == N_USERS and saved["dataset"]["n_items"] == 1682
    md = (tmp_path / "eval.md").read_text()
    assert "| model | HR@10 | NDCG@10 | MRR | Coverage@10 |" in md
    assert "| item-knn |" in md and "skipped" in md


def test_unknown_model_is_an_error(small: tuple[Interactions, Split]) -> None:
    with pytest.raises(ValueError, match="unknown models"):
        harness.run_eval(small[0], ["nope"], [1], None)


def test_register_lazy_reports_missing_module(small: tuple[Interactions, Split]) -> None:
    registry.register_lazy("lazy-missing", "models.no_such_module:Model")
    try:
        report = harness.run_eval(small[0], ["lazy-missing"], [1], None)
    finally:
        del registry.MODELS["lazy-missing"]
    assert report["models"]["lazy-missing"]["status"] == "skipped"


def test_cli_eval(tmp_path: Path) -> None:
    from streams.cli import main

    result = CliRunner().invoke(
        main,
        ["eval", "--data", str(require_ml100k()), "--models", "most-popular,pop-decay",
         "--seeds", "1", "--max-users", "50", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| most-popular |" in result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"]["n_users"] == 50
    assert not math.isnan(report["models"]["pop-decay"]["mean"]["test"]["ndcg"])


@pytest.mark.torch
def test_encode_catalogue_uses_the_onnx_encoder_and_caches(
    encoder_artifact: Path, tmp_path: Path
) -> None:
    from models.datasets import item_texts
    from models.encoder import OnnxEncoder
    from models.evaluation.baselines import encode_catalogue

    log = load_movielens(require_ml100k(), max_users=5)
    short = Interactions(
        log.users[:0], log.items[:0], log.ts[:0], log.ratings[:0], log.user_ids,
        log.item_ids[:6], log.titles[:6], log.genres[:6],
    )  # fmt: skip
    assert item_texts(short)[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    cache = tmp_path / "emb"
    first = encode_catalogue(short, encoder_artifact.parent, cache_dir=cache)
    assert first.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    want = OnnxEncoder(encoder_artifact, device="cpu").encode(item_texts(short))
    np.testing.assert_allclose(first, want, atol=1e-6)
    assert len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(encode_catalogue(short, encoder_artifact.parent, cache), first)
