"""Full-catalogue metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.datasets import Split
from models.evaluation.baselines import decayed_counts
from models.evaluation.metrics import (
    MetricAccumulator,
    evaluate,
    rank_targets,
    seen_mask,
    summarize_ranks,
    top_k,
)


def test_rank_counts_only_unseen_candidates() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    none = np.zeros_like(scores, dtype=bool)
    assert rank_targets(scores, np.array([3]), none).tolist() == [4]
    seen = seen_mask([np.array([0, 2])], 5)
    assert rank_targets(scores, np.array([3]), seen).tolist() == [2]


def test_target_is_never_masked() -> None:
    scores = np.array([[0.1, 0.9, 0.5]])
    seen = seen_mask([np.array([1, 2])], 3)  # the target 2 was had before (a repeat)
    assert rank_targets(scores, np.array([2]), seen).tolist() == [1]
    assert seen[0, 2]  # the caller's mask is not changed


def test_ties_are_pessimistic() -> None:
    scores = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    none = np.zeros_like(scores, dtype=bool)
    assert rank_targets(scores, np.array([0, 3]), none).tolist() == [3, 4]


def test_nan_scores_count_as_minus_inf() -> None:
    scores = np.array([[np.nan, 0.5, np.nan]])
    none = np.zeros_like(scores, dtype=bool)
    assert rank_targets(scores, np.array([1]), none).tolist() == [1]
    assert rank_targets(scores, np.array([0]), none).tolist() == [3]


def test_summaries_by_hand() -> None:
    m = summarize_ranks(np.array([1, 3, 11]), k=10)
    assert m["hr"] == pytest.approx(2 / 3)
    assert m["ndcg"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # 1/log2(4) = 0.5
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)


def test_top_k_orders_ties_by_index_and_skips_seen() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    seen = seen_mask([np.array([1])], 5)
    assert top_k(scores, seen, 3).tolist() == [[0, 2, 3]]
    assert top_k(scores, seen, 10)[0, :4].tolist() == [0, 2, 3, 4]
    assert top_k(scores, seen, 10)[0, 4:].tolist() == [-1] * 6  # seen and padding


def test_accumulator_coverage_and_chunks() -> None:
    acc = MetricAccumulator(n_items=6, k=2)
    s1 = np.array([[6.0, 5, 4, 3, 2, 1]])
    acc.update(s1, np.array([2]), seen_mask([np.array([0])], 6))  # list [1, 2], rank 2
    s2 = np.array([[1.0, 2, 3, 4, 5, 6]])
    acc.update(s2, np.array([0]), seen_mask([np.array([])], 6))  # list [5, 4], rank 6
    r = acc.result()
    assert r["users"] == 2
    assert r["hr"] == pytest.approx(0.5)
    assert r["ndcg"] == pytest.approx((1 / math.log2(3)) / 2)
    assert r["mrr"] == pytest.approx((1 / 2 + 1 / 6) / 2)
    assert r["coverage"] == pytest.approx(4 / 6)


def test_evaluate_masks_history_per_phase() -> None:
    split = Split(
        train=[np.array([0, 1])],
        train_ts=[np.array([1.0, 2.0])],
        valid=np.array([2]),
        valid_ts=np.array([3.0]),
        test=np.array([3]),
        test_ts=np.array([4.0]),
        n_items=5,
    )
    # Item 2 outscores item 3, but it is the validation item: masked at test time.
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0]])
    valid = evaluate(lambda u, p: scores, split, "valid", k=1)
    test = evaluate(lambda u, p: scores, split, "test", k=1)
    assert valid["hr"] == 1.0 and test["hr"] == 1.0 and test["mrr"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u, p: scores[:, :3], split, "test")


def test_decayed_counts_by_hand() -> None:
    ts = np.array([0.0, 10.0, 20.0])
    items = np.array([0, 1, 0])
    at = np.array([20.0, 10.0, 5.0])
    got = decayed_counts(ts, items, at, 2, half_life_s=10.0)
    np.testing.assert_allclose(got, [[1.25, 0.5], [0.5, 1.0], [2**-0.5, 0.0]], rtol=1e-12)
    plain = decayed_counts(ts, items, at, 2, half_life_s=math.inf)
    assert plain.tolist() == [[2.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    # Far apart in time: the rescaling keeps the numbers finite and right.
    far = decayed_counts(np.array([0.0, 1e6]), np.array([0, 1]), np.array([1e6]), 2, 100.0)
    assert np.all(np.isfinite(far)) and far[0, 1] == 1.0 and far[0, 0] == 0.0
