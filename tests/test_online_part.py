"""The online collaborative part of new items: prototypes, updater, shared blob, worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.encoder import OnnxEncoder
from models.learned import LearnedUpdater, save_artifact
from models.learned.prototypes import ItemPrototypes
from streams.processor import BehaviourProcessor, CatalogueSync, ItemProcessor, RawRecord
from streams.settings import Settings
from streams.shared_prototypes import SharedPrototypes, blob_name
from streams.stores.sqlite import SqliteStore
from streams.workload import synthetic_workload, to_json_bytes
from tests.updater_fixtures import COLD, random_learned_updater, small_catalogue


def test_prototypes_add_merge_and_round_trip_their_bytes() -> None:
    a, b = ItemPrototypes("v1"), ItemPrototypes("v1")
    a.add("x", np.array([1.0, 0.0]))
    b.add("x", np.array([0.0, 1.0]))
    b.add("y", np.array([2.0, 2.0]))
    m = a.merged(b)
    assert m.counts == {"x": 2.0, "y": 1.0} and m.sums["x"].tolist() == [1.0, 1.0]
    assert a.counts == {"x": 1.0}, "merging leaves both sides as they were"
    back = ItemPrototypes.from_bytes(m.to_bytes())
    assert back.model_version == "v1" and back.counts == m.counts
    assert back.sums["y"].tolist() == [2.0, 2.0]
    assert len(ItemPrototypes.from_bytes(ItemPrototypes("v2").to_bytes())) == 0
    with pytest.raises(ValueError, match="do not merge"):
        a.merged(ItemPrototypes("v2"))
    with pytest.raises(ValueError, match="not item prototypes"):
        ItemPrototypes.from_bytes(b"garbage")
    with pytest.raises(ValueError, match="not finite"):
        a.add("z", np.array([np.nan, 0.0]))


def test_mix_moves_only_cold_rows_with_observations_and_shrinks_by_count() -> None:
    reps = np.zeros((3, 2), dtype=np.float32)
    p = ItemPrototypes("v")
    for _ in range(5):
        p.add("c1", np.array([3.0, 4.0]))
    p.add("warm", np.array([1.0, 0.0]))
    out = p.mix(["warm", "c1", "c2"], reps, np.array([False, True, True]), scale=2.0, prior=5.0)
    assert out[0].tolist() == [0.0, 0.0], "a trained item keeps its learned vector"
    assert out[2].tolist() == [0.0, 0.0], "a cold item nobody chose keeps its text"
    np.testing.assert_allclose(out[1], 0.5 * 2.0 * np.array([0.6, 0.8]), rtol=1e-6)


def test_a_cold_item_rises_for_users_like_those_who_chose_it(tmp_path: Path) -> None:
    updater = random_learned_updater(tmp_path / "m")
    cat = small_catalogue()
    cold = f"m{sorted(COLD)[0]}"
    hidden = np.full(updater.cell.hidden_dim, 0.5, dtype=np.float32)
    zero = np.zeros(cat.dim, dtype=np.float32)
    ids = cat.rows()[0]
    before = updater.scores(hidden, zero, cat, 0.0)
    p = ItemPrototypes(updater.artifact.model_version)
    for _ in range(20):
        p.add(cold, updater.cell.query(hidden))
    updater.set_prototypes(p)
    after = updater.scores(hidden, zero, cat, 0.0)
    row = ids.index(cold)
    assert after[row] > before[row]
    rank = lambda s: int((s > s[row]).sum())  # noqa: E731
    assert rank(after) < rank(before)
    others = [i for i in range(len(ids)) if i != row]
    np.testing.assert_array_equal(after[others], before[others])
    assert not np.array_equal(updater.represent(cold, cat.vector(cold)),
                              updater.cell.represent(cold, cat.vector(cold)))  # fmt: skip
    with pytest.raises(ValueError, match="given to"):
        updater.set_prototypes(ItemPrototypes("another-model"))


def test_two_workers_share_the_part_through_the_store_and_a_restart_keeps_it(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "state.sqlite")
    one = random_learned_updater(tmp_path / "m")
    two = LearnedUpdater.load(tmp_path / "m")
    a, b = SharedPrototypes(store, one), SharedPrototypes(store, two)
    a.refresh(force=True)
    b.refresh(force=True)
    q = one.cell.query(np.ones(one.cell.hidden_dim, dtype=np.float32))
    for shared in (a, b, a):  # b writes on a stale version after a's first write
        batch = ItemPrototypes(shared.model_version)
        batch.add("m3", q)
        shared.learn(batch)
    restarted = LearnedUpdater.load(tmp_path / "m")
    again = SharedPrototypes(SqliteStore(tmp_path / "state.sqlite"), restarted)
    again.refresh(force=True)
    assert restarted.prototypes is not None and restarted.prototypes.counts == {"m3": 3.0}
    np.testing.assert_allclose(restarted.prototypes.sums["m3"], 3 * q, rtol=1e-6)
    assert store.get_blob(blob_name(one.artifact.model_version)) is not None


def test_the_worker_learns_the_part_from_events_on_items_the_model_never_saw(
    tmp_path: Path, onnx_cpu_encoder: OnnxEncoder
) -> None:
    w = synthetic_workload(users=3, items_per_tag=4, events_per_user=8, seed=3)
    trained = [i["item_id"] for i in w.items[::2]]  # half the catalogue is "new"
    rng = np.random.default_rng(0)
    from tests.updater_fixtures import random_cell_weights

    weights = random_cell_weights(rng, len(trained), onnx_cpu_encoder.dim)
    save_artifact(tmp_path / "m", weights, trained)
    settings = Settings(top_k=5, updater=str(tmp_path / "m"))
    store = SqliteStore(":memory:")
    sync = CatalogueSync(store, onnx_cpu_encoder.dim)
    items = ItemProcessor(store, sync, onnx_cpu_encoder, settings.topics)
    params = settings.core_params()
    behaviours = BehaviourProcessor(store, sync, onnx_cpu_encoder, params, settings.topics,
                                    clock=lambda: 1_750_000_000.0)  # fmt: skip
    items.process([RawRecord(settings.topics.items, 0, n, i["item_id"].encode(), to_json_bytes(i))
                   for n, i in enumerate(w.items)])  # fmt: skip
    records = [
        RawRecord(settings.topics.behaviours, 0, n, e["user_id"].encode(), to_json_bytes(e), 1000)
        for n, e in enumerate(w.events)
    ]
    for rec in records:  # one event per batch: every event after a user's first is learned from
        behaviours.process([rec])
    blob = store.get_blob(blob_name(params.updater.artifact.model_version))
    assert blob is not None
    learned = ItemPrototypes.from_bytes(blob.data)
    firsts = {}
    for e in w.events:
        firsts.setdefault(e["user_id"], e["event_id"])
    want = {}
    for e in w.events:
        positive = e["type"] not in ("skip", "dislike")
        if e["item_id"] not in trained and e["event_id"] not in firsts.values() and positive:
            want[e["item_id"]] = want.get(e["item_id"], 0.0) + 1.0
    assert learned.counts == want
    assert not set(learned.counts) & set(trained)
    assert params.updater.prototypes is not None
