"""CI-sized training: train + export + parity + harness eval on a slice of ML-100K."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.paths import require_ml100k

pytestmark = pytest.mark.torch

USERS = 60
GRU_SET = ("item_dim=24", "hidden_dim=24", "max_len=40", "batch_size=64", "heads=2")
SAS_SET = ("hidden=16", "max_len=40", "batch_size=64")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("torch")
    from streams.cli.train import train_command

    data = require_ml100k()
    out = tmp_path_factory.mktemp("train")
    args = ["--data", str(data), "--out", str(out), "--max-users", str(USERS), "--epochs", "2"]
    for kv in GRU_SET:
        args += ["--gru", kv]
    for kv in SAS_SET:
        args += ["--sasrec", kv]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    return data, out, args, result.output


def _configs():
    from models.training.gru import GruConfig
    from models.training.pipeline import with_overrides
    from models.training.sasrec import SasrecConfig

    def kv(pairs: tuple[str, ...]) -> dict[str, str]:
        return dict(p.split("=") for p in pairs)

    gru = with_overrides(GruConfig(), {**kv(GRU_SET), "max_epochs": "2"})
    sasrec = with_overrides(SasrecConfig(), {**kv(SAS_SET), "max_epochs": "2"})
    return gru, sasrec


def test_train_writes_artefact_report_and_resumes(trained) -> None:
    from streams.cli.train import train_command

    _, out, args, output = trained
    assert "learned-gru epoch" in output and "sasrec epoch" in output  # progress lines
    manifest = json.loads((out / "learned-gru-seed0" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and len(manifest["model_version"]) == 16
    assert manifest["config"]["train"]["hidden_dim"] == 24
    assert manifest["metrics"]["numpy_vs_torch_max_abs"] < 1e-4
    assert (out / "sasrec-seed0.pt").is_file()
    assert (out / "report.png").stat().st_size > 1000
    runs = json.loads((out / "report.json").read_text())
    assert {r["model"] for r in runs} == {"learned-gru", "sasrec"}
    assert all(len(r["history"]) == 2 for r in runs)
    # Same command again: finished models are reused, not retrained.
    again = CliRunner().invoke(train_command, args)
    assert again.exit_code == 0, again.output
    assert "epoch" not in again.output.replace("NDCG", "")
    assert (
        json.loads((out / "learned-gru-seed0" / "manifest.json").read_text())["model_version"]
        == manifest["model_version"]
    )


def test_trained_cell_in_the_core_matches_torch(trained) -> None:
    import torch

    from models.behaviour import Behaviour
    from models.catalogue import Catalogue
    from models.core import CoreParams, step
    from models.datasets import leave_last_out, load_movielens
    from models.interest.composition import CompositionSpec
    from models.learned import LearnedUpdater
    from models.training.gru import FusedGru
    from models.training.sequences import gap_matrix, histories
    from models.training.text import text_embeddings

    data, out, _, _ = trained
    gru_cfg, _ = _configs()
    log = load_movielens(data, max_users=USERS)
    split = leave_last_out(log)
    assert len(list((out / "text-embeddings").glob("*.npy"))) == 1
    text = text_embeddings(log, out / "text-embeddings")  # the cached vectors it trained on
    counts = np.bincount(np.concatenate(split.train), minlength=split.n_items)
    model = FusedGru(torch.from_numpy(text), torch.from_numpy(counts > 0), gru_cfg)
    ckpt = torch.load(out / "checkpoints" / "checkpoint-learned-gru-seed0.pt", weights_only=False)
    model.load_state_dict(ckpt["best_state"])
    model.eval()

    updater = LearnedUpdater.load(out / "learned-gru-seed0")
    cat = Catalogue(text.shape[1])
    for i, item in enumerate(log.item_ids):
        cat.upsert(f"m{item}", text[i])
    seqs = histories(split, log, "test")
    ratings = log.sequence_ratings()
    user = 0
    state = None
    for k, (i, t) in enumerate(zip(seqs.items[user], seqs.ts[user], strict=True)):
        rating = float(ratings[user][k])
        ev = Behaviour("u", f"m{log.item_ids[i]}", "rating", float(t), f"e{k}", rating=rating)
        one = CoreParams(updater=updater, composition=CompositionSpec(max_interests=1))
        state = step(state, [ev], cat, now=0.0, params=one).state
    assert state is not None
    with torch.no_grad():
        items = torch.from_numpy(seqs.items[user])[None]
        h = model.hidden_states(
            model.item_reps(),
            items,
            torch.from_numpy(seqs.weights[user])[None],
            torch.from_numpy(gap_matrix(seqs.ts[user]))[None],
            torch.tensor([items.shape[1]]),
        )[0, -1]
    assert items.shape[1] > 100  # a long sequence: errors would accumulate
    # Every interest holds the one shared state (then its head index, the model has 2).
    np.testing.assert_allclose(state.interests[0].hidden[:-1], h.numpy(), atol=1e-5)


def test_harness_evaluates_both_models(trained, tmp_path) -> None:
    from models.datasets import load_movielens
    from models.evaluation.harness import run_eval
    from models.evaluation.registry import MODELS, register
    from models.training.recommenders import LearnedGruRecommender, SasrecRecommender

    assert {"sasrec", "learned-gru"} <= set(MODELS)
    data, out, _, _ = trained
    gru_cfg, sas_cfg = _configs()
    register("learned-gru-ci", functools.partial(LearnedGruRecommender, config=gru_cfg, out=out))
    register("sasrec-ci", functools.partial(SasrecRecommender, config=sas_cfg, out=out))
    try:
        log = load_movielens(data, max_users=USERS)
        report = run_eval(log, ["most-popular", "sasrec-ci", "learned-gru-ci"], [0], tmp_path)
    finally:
        MODELS.pop("learned-gru-ci")
        MODELS.pop("sasrec-ci")
    for name in ("sasrec-ci", "learned-gru-ci"):
        entry = report["models"][name]
        assert entry["status"] == "ok", entry.get("reason")
        ndcg = entry["runs"][0]["test"]["ndcg"]
        assert 0.0 <= ndcg <= 1.0
    # scored through the exported artefact: its version is reported
    params = report["models"]["learned-gru-ci"]["runs"][0]["params"]
    assert len(params["model_version"]) == 16


def test_ablation_runs_the_learned_updater_with_several_interests(trained, tmp_path) -> None:
    """``eval --ablation --updater``: every variant with the exported GRU cell; the
    full variant gives each user an interest per query head it uses."""
    from streams.cli.evaluate import eval_command

    data, out, _, _ = trained
    model = out / "learned-gru-seed0"
    args = [
        *("--ablation", "--data", str(data), "--max-users", str(USERS), "--synthetic", "none"),
        *("--variants", "full,no-multi", "--updater", str(model), "--out", str(tmp_path)),
    ]
    result = CliRunner().invoke(eval_command, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ablation.json").read_text())
    version = json.loads((model / "manifest.json").read_text())["model_version"]
    assert report["protocol"]["updater"] == f"learned-gru({version}, heads=2)"
    entry = report["datasets"]["ml-100k"]
    full, single = entry["variants"]["full"], entry["variants"]["no-multi"]
    assert full["status"] == single["status"] == "ok"
    assert full["params"]["updater"] == report["protocol"]["updater"]
    assert full["params"]["half_life_days"] is None  # nothing of the cell was tuned
    assert full["params"]["max_interests"] > 1 and single["params"]["max_interests"] == 1
    assert 0.0 < full["test"]["ndcg"] <= 1.0
    assert full["test"] != single["test"]  # heads apart rank differently from their best
    assert "| full |" in result.output and "| – |" in result.output


def test_ablation_refuses_an_updater_folder_that_is_not_a_model(tmp_path) -> None:
    from streams.cli.evaluate import eval_command

    data = require_ml100k()
    args = ["--ablation", "--data", str(data), "--updater", str(tmp_path), "--synthetic", "none"]
    result = CliRunner().invoke(eval_command, args)
    assert result.exit_code == 2 and "--updater" in result.output, result.output


def test_multi_task_training_learns_the_next_events_weight(tmp_path) -> None:
    """aux_weight > 0 adds a head that predicts the next event's signed weight; it
    learns (its error falls below that of always guessing the mean) and is not exported."""
    import torch

    from models.datasets import leave_last_out, load_movielens
    from models.learned.artifact import WEIGHT_NAMES
    from models.training.gru import FusedGru
    from models.training.pipeline import with_overrides
    from models.training.sequences import histories
    from models.training.text import text_embeddings
    from models.training.trainer import _gru_epoch, gru_batch

    gru, _ = _configs()
    gru = with_overrides(gru, {"aux_weight": "1.0", "dropout": "0.0"})
    log = load_movielens(require_ml100k(), max_users=USERS)
    split = leave_last_out(log)
    text = text_embeddings(log, tmp_path / "text-embeddings")
    seqs = histories(split, log, "train")
    torch.manual_seed(0)
    warm = np.bincount(np.concatenate(split.train), minlength=split.n_items) > 0
    model = FusedGru(torch.from_numpy(text), torch.from_numpy(warm), gru)
    opt = torch.optim.Adam(model.parameters(), lr=gru.lr)
    rng = np.random.default_rng(0)
    for _ in range(16):
        assert np.isfinite(_gru_epoch(model, opt, seqs, gru, rng, torch.device("cpu")))
    assert sorted(model.export_weights()[0]) == sorted(WEIGHT_NAMES), "the head stays here"
    items, weights, gaps, lengths = gru_batch(seqs, np.arange(USERS), 10**6, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        h = model.hidden_states(model.item_reps(), items[:, :-1], weights[:, :-1], gaps[:, :-1],
                                lengths - 1)  # fmt: skip
        mask = torch.arange(h.shape[1])[None] < (lengths - 1)[:, None]
        pred, want = model.next_weight(h[mask]), weights[:, 1:][mask]
    mse = float(((pred - want) ** 2).mean())
    baseline = float(((want - want.mean()) ** 2).mean())
    assert mse < 0.95 * baseline, (mse, baseline)
