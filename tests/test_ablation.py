"""The ablation of the interest structure on small seeded synthetic logs (``eval --ablation``).

The logs are the demo workload's catalogue (`streams.workload.synthetic_workload`),
embedded by the session's ONNX export, with two kinds of users: one taste at a
time (the workload's own, some drifting) and two tastes at once
(`models.datasets.synthetic.two_taste_events`). Several interests exist for the
second kind: a single vector averages two tastes into one direction, so its
top 10 falls on one side or between them, while composed interests keep a
share of the list for each.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models.datasets.synthetic import interactions_from_records, two_taste_events
from models.evaluation import ablation
from models.evaluation.ablation import VARIANTS, AblationData, run_ablation
from models.evaluation.metrics import MetricAccumulator, intra_list_diversity
from streams.cli import evaluate
from streams.workload import synthetic_workload

SMALL = {"users": 60, "items_per_tag": 30, "events_per_user": 30}


def test_diversity_by_hand() -> None:
    genres = [("a",), ("a", "b"), ("c",), ("a",)]
    # Pairs (0,1): J=1/2, (0,2): 0, (1,2): 0 -> 1 - 1/6.
    got = intra_list_diversity(np.array([[0, 1, 2], [0, 3, -1]]), genres)
    np.testing.assert_allclose(got, [1 - 1 / 6, 0.0])


def test_accumulator_recall_is_hit_rate_at_n_and_diversity_is_per_user() -> None:
    acc = MetricAccumulator(5, k=2, recall_at=(3,), genres=[("a",), ("b",), ("a",), ("c",), ()])
    scores = np.array([[5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5]])
    none = np.zeros_like(scores, dtype=bool)
    acc.update(scores, np.array([2, 0]), none)  # ranks 3 and 5; lists [0, 1] and [4, 3]
    r = acc.result()
    assert r["hr"] == 0.0 and r["recall@3"] == 0.5
    np.testing.assert_allclose(acc.diversity, [1.0, 1.0])  # {a} vs {b}; {} vs {c}
    assert r["diversity"] == 1.0


def test_records_become_a_log_with_tags_as_genres() -> None:
    w = synthetic_workload(users=5, items_per_tag=4, events_per_user=8, seed=2)
    log = interactions_from_records(w.items, w.events)
    kept = [e for e in w.events if e["type"] not in ("skip", "dislike")]
    assert log.n_rows == len(kept) and log.n_items == len(w.items)
    assert log.genres[0] == tuple(w.items[0]["tags"])
    for u, seq in enumerate(log.sequence_ts()):
        assert np.all(np.diff(seq) >= 0), log.user_ids[u]


def test_two_taste_users_hold_two_tags() -> None:
    w = synthetic_workload(users=0, items_per_tag=40, seed=1)
    tag = {r["item_id"]: r["tags"][0] for r in w.items}
    events = two_taste_events(w.items, users=30, events_per_user=40, noise=0.1, seed=4)
    by_user: dict[str, list[str]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(tag[e["item_id"]])
    seconds = []
    for tags in by_user.values():
        counts = sorted((tags.count(t) for t in set(tags)), reverse=True)
        assert counts[1] >= 0.1 * len(tags), counts  # the second taste is never a trace
        assert sum(counts[:2]) >= 0.75 * len(tags), counts  # noise is 10%
        seconds.append(counts[1] / len(tags))
    # Second taste: 0.9 * (1 - p), p uniform in [0.5, 0.7], so 0.36 on average.
    assert 0.25 < float(np.mean(seconds)) < 0.45


@pytest.fixture(scope="module")
def datasets(encoder_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    cache = tmp_path_factory.mktemp("item-embeddings")
    return evaluate.synthetic_datasets(
        ["drift", "tastes"], seed=3, encoder_cache=encoder_artifact.parent, embed_cache=cache,
        **SMALL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(datasets: list[AblationData], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ablation")
    return run_ablation(
        datasets, None, out, half_lives_days=(1.0,), seed=0, bootstrap=300,
        timing_users=15, timing_repeats=1,
    ) | {"out": str(out)}  # fmt: skip


@pytest.mark.torch
def test_every_variant_has_finite_metrics_and_a_cost(report: dict) -> None:
    assert set(report["datasets"]) == {"synthetic-drift", "synthetic-tastes"}
    for name, entry in report["datasets"].items():
        assert list(entry["variants"]) == list(VARIANTS), name
        for variant, v in entry["variants"].items():
            assert v["status"] == "ok", (name, variant, v.get("reason"))
            for phase in ("valid", "test"):
                for metric in ("hr", "ndcg", "recall", "diversity", "coverage"):
                    assert math.isfinite(v[phase][metric]), (name, variant, phase, metric)
                assert 0.0 <= v[phase]["ndcg"] <= v[phase]["hr"] <= v[phase]["recall"] <= 1.0
            assert v["cost"]["ms_per_event"] > 0 and v["cost"]["events"] > 0
        assert entry["variants"]["no-multi"]["params"]["max_interests"] == 1
        assert entry["variants"]["no-short"]["params"]["short_weight"] == 0.0
        assert entry["variants"]["no-long"]["params"]["long_return_weight"] == 0.0
        # Topics never rank: switching them off changes the cost only.
        assert entry["topics_cost"]["same_scores"], name
        assert entry["dataset"]["topics"] > 1


@pytest.mark.torch
def test_several_interests_diversify_the_lists_of_two_taste_users(report: dict) -> None:
    multi = report["datasets"]["synthetic-tastes"]["multi_interest"]["diversity"]
    # Not a tie broken by noise: the whole paired-bootstrap interval is above 1.2.
    assert multi["a"] > multi["b"] and multi["low"] > 1.2, multi
    # And the lift comes from the second taste, not from interests opened by
    # the off-taste events: users with one taste at a time gain less.
    one_taste = report["datasets"]["synthetic-drift"]["multi_interest"]["diversity"]
    assert multi["ratio"] > one_taste["ratio"], (multi, one_taste)


@pytest.mark.torch
def test_reports_are_written_with_every_variant(report: dict) -> None:
    out = Path(report["out"])
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["datasets"].keys() == report["datasets"].keys()
    md = (out / "ablation.md").read_text()
    assert "| variant | HR@10 | NDCG@10 | recall@50 | diversity@10 |" in md
    for variant in VARIANTS:
        assert md.count(f"| {variant} |") == 2, variant
    assert "full / no-multi" in md and "Topics:" in md


@pytest.mark.torch
def test_cli_ablation(
    encoder_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.cli import main

    small = functools.partial(
        evaluate.synthetic_datasets, embed_cache=tmp_path / "emb", users=20, items_per_tag=10,
        events_per_user=12,
    )  # fmt: skip
    monkeypatch.setattr(evaluate, "synthetic_datasets", small)
    env = {"INTEREST_STREAM_ENCODER_CACHE": str(encoder_artifact.parent)}
    result = CliRunner().invoke(
        main,
        ["eval", "--ablation", "--synthetic", "tastes", "--variants", "full,no-multi",
         "--half-lives", "1", "--out", str(tmp_path)],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| full |" in result.output and "| no-multi |" in result.output
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert list(report["datasets"]["synthetic-tastes"]["variants"]) == ["full", "no-multi"]


def test_cli_ablation_usage_errors(tmp_path: Path) -> None:
    from streams.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["eval", "--ablation", "--list"])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].startswith("full:")
    bad = runner.invoke(main, ["eval", "--ablation", "--variants", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown variants" in bad.output
    empty = runner.invoke(main, ["eval", "--ablation", "--synthetic", "none"], env={
        "INTEREST_STREAM_DATA": ""})  # fmt: skip
    assert empty.exit_code == 2 and "nothing to run" in empty.output
    mixed = runner.invoke(main, ["eval", "--ablation", "--models", "most-popular"])
    assert mixed.exit_code == 2 and "--models" in mixed.output
    # The plain benchmark refuses the ablation's options rather than ignoring them.
    stray = runner.invoke(main, ["eval", "--half-lives", "1", "--data", str(tmp_path)])
    assert stray.exit_code == 2 and "--half-lives apply only with --ablation" in stray.output
    bad_spec = runner.invoke(main, ["eval", "--ablation", "--composition", "open_below=2"])
    assert bad_spec.exit_code == 2 and "open_below" in bad_spec.output
    # The mode is a name, not a number: checked against the modes there are.
    bad_mode = runner.invoke(main, ["eval", "--ablation", "--composition", "mode=average"])
    assert bad_mode.exit_code == 2 and "softmax, quota" in bad_mode.output
    from streams.cli.evaluate import _composition

    assert _composition("mode=quota,temperature=2") == (
        {"mode": "quota", "temperature": 2.0},
        False,
    )


def test_an_unknown_variant_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown variants"):
        run_ablation([], ["nope"])
    assert ablation.VARIANTS["no-topics"].tuned_as == "full"
