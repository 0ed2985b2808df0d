"""Next-interest prediction: the pure blend, and a small run of benchmarks/next_interest.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.catalogue import Catalogue
from models.core import next_topics
from models.interest.topics import OnlineTopics
from models.state import UserState


def two_topic_catalogue() -> Catalogue:
    rng = np.random.default_rng(0)
    cat = Catalogue(8)
    topics = OnlineTopics(8, max_topics=2, seed=0)
    for axis, word in ((0, "jazz"), (1, "horror")):
        for j in range(15):
            vec = np.eye(8, dtype=np.float32)[axis] + 0.05 * rng.standard_normal(8)
            cat.upsert(f"{word}-{j}", vec, (word,))
            topics.observe(f"{word}-{j}", vec, f"{word} film {j}")
    cat.topics = topics
    return cat


def test_next_topics_blends_the_list_with_the_topic_mix() -> None:
    cat = two_topic_catalogue()
    jazz, horror = cat.topics.topic_of("jazz-0"), cat.topics.topic_of("horror-0")
    assert jazz != horror
    # The user's mix is all jazz; the list is all horror.
    state = UserState("u", topics={jazz: 1.0}, top_k=tuple((f"horror-{j}", 1.0) for j in range(5)))
    assert [t for t, _ in next_topics(state, cat, list_share=0.0)] == [jazz]
    assert [t for t, _ in next_topics(state, cat, list_share=1.0)] == [horror]
    mixed = dict(next_topics(state, cat, n=2, list_share=0.3))
    assert mixed[jazz] == pytest.approx(0.7) and mixed[horror] == pytest.approx(0.3)
    # No list yet: the mix alone; no topic model or no events: nothing.
    assert next_topics(replace(state, top_k=()), cat) == [(jazz, 1.0)]
    assert next_topics(UserState("new"), cat) == []
    cat.topics = None
    assert next_topics(state, cat) == []


def test_next_interest_benchmark_runs_and_its_zero_share_is_persistence(
    tmp_path: Path, encoder_artifact: Path
) -> None:
    from tests.paths import require_ml100k, run_benchmark

    out = tmp_path / "next_interest.json"
    run_benchmark("next_interest.py", "--quick", "--users", "20", "--sweep", "0",
                  "--data", str(require_ml100k()), "--encoder-cache",
                  str(encoder_artifact.parent), "--out", str(out), timeout=600)  # fmt: skip
    report = json.loads(out.read_text())
    assert report["setup"]["users"] == 20 and report["next"]["predictions"] > 300
    for name in ("next", "persistence-mix", "persistence-last", "popular", "next@0"):
        assert 0.0 <= report[name]["acc@1"] <= report[name]["hit@3"] <= 1.0
    # With no list share the blend is the persistence baseline, except for
    # users with no positive topic mass yet (only bad ratings), where it
    # falls back to the list: never worse, and rarely different.
    zero, mix = report["next@0"], report["persistence-mix"]
    assert zero["predictions"] == mix["predictions"]
    assert mix["acc@1"] <= zero["acc@1"] <= mix["acc@1"] + 0.01
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
