"""The demo's learned updater: a training log disjoint from the replay, trained once, reused."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streams.demo_model import (
    demo_updater,
    fingerprint,
    replay_users,
    split_users,
    synthetic_training,
)
from streams.settings import Settings
from streams.worker import NO_MODEL, announce_updater
from streams.workload import synthetic_workload


def _events(workload) -> set[tuple[str, str, float]]:
    return {(e["user_id"], e["item_id"], e["ts"]) for e in workload.events}


def test_the_synthetic_training_log_shares_the_catalogue_not_the_events() -> None:
    replay = synthetic_workload(users=20, events_per_user=15, seed=4)
    train = synthetic_training(seed=4, events_per_user=15, users=50)
    assert train.items == replay.items
    assert len({e["user_id"] for e in train.events}) == 50
    assert not _events(train) & _events(replay)
    assert "user_seed=5" in train.description
    # The replay is what it always was: user_seed only touches the training log.
    assert synthetic_workload(users=20, events_per_user=15, seed=4).events == replay.events


def test_movielens_users_split_into_a_replay_and_a_disjoint_training_log() -> None:
    full = synthetic_workload(users=30, events_per_user=5, seed=2)
    chosen = replay_users(full, first=None, share=0.3, seed=7)
    assert len(chosen) == 9 and chosen == replay_users(full, first=None, share=0.3, seed=7)
    shown, train = split_users(full, chosen)
    assert {e["user_id"] for e in shown.events} == chosen
    assert not {e["user_id"] for e in train.events} & chosen
    assert len(shown.events) + len(train.events) == len(full.events)
    assert {d.user_id for d in shown.drifts} <= chosen
    assert replay_users(full, first=3, share=0.3, seed=7) == {"u001", "u002", "u003"}


@pytest.mark.torch
def test_the_demo_trains_a_loadable_model_once_and_then_reuses_it(tmp_path: Path) -> None:
    from models.learned import LearnedUpdater

    train = synthetic_training(seed=3, events_per_user=10, users=60)
    path = demo_updater(train, root=tmp_path)
    assert path is not None and path.parent.name == fingerprint(train)
    updater = LearnedUpdater.load(path)
    assert updater.artifact.item_ids[:2] == ("i0001", "i0002"), "catalogue ids, no prefix"
    stamp = (path / "weights.npz").stat().st_mtime_ns
    assert demo_updater(train, root=tmp_path) == path
    assert (path / "weights.npz").stat().st_mtime_ns == stamp, "reused, not retrained"
    other = synthetic_training(seed=3, events_per_user=11, users=60)
    assert fingerprint(other) != fingerprint(train)


def test_a_worker_without_a_model_says_so_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="interest_stream.worker"):
        announce_updater(Settings())
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == [NO_MODEL]
    assert "interest-stream train" in NO_MODEL and "INTEREST_STREAM_UPDATER" in NO_MODEL
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="interest_stream.worker"):
        announce_updater(Settings(updater="/models/learned-gru-seed0"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_log_of_typed_behaviours_trains_on_the_weights_the_workers_use() -> None:
    """A view is not a one-star rating: training sees each record's own signed weight."""
    from models.behaviour import TYPE_WEIGHTS
    from models.datasets.synthetic import interactions_from_records

    items = [{"item_id": "a", "title": "A"}, {"item_id": "b", "title": "B"}]
    events = [
        {"user_id": "u", "item_id": "a", "type": "view", "ts": 1.0},
        {"user_id": "u", "item_id": "b", "type": "skip", "ts": 2.0},
        {"user_id": "u", "item_id": "a", "type": "rating", "ts": 3.0, "rating": 5.0},
        {"user_id": "u", "item_id": "b", "type": "like", "ts": 4.0, "weight": 0.25},
    ]
    log = interactions_from_records(items, events, drop_types=frozenset())
    assert log.sequence_weights() is not None
    want = [TYPE_WEIGHTS["view"], -1.0, 2.5 / 1.5, 0.25]
    np.testing.assert_allclose(log.sequence_weights()[0], want, rtol=1e-6)
