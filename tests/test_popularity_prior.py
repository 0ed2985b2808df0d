"""The cold-start popularity prior in the workers: shared counts, and the cold user's list.

Tier 2: the processors with the embedded store (SQLite) and the ONNX encoder.
The pure parts (`KeyedPopularity`, `models.core.with_prior`) are tested in
``test_popularity.py`` and ``test_interest_structure.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from models.core import CoreParams, rank
from models.encoder import OnnxEncoder
from models.interest.popularity import KeyedPopularity
from streams.app import build_runtime
from streams.processor import BehaviourProcessor, CatalogueSync, ItemProcessor, Outcome, RawRecord
from streams.settings import Settings, SettingsError
from streams.shared_popularity import SharedPopularity, blob_name
from streams.stores.sqlite import SqliteStore
from streams.workload import synthetic_workload, to_json_bytes

SETTINGS = Settings(top_k=5)
TOPICS = SETTINGS.topics
NOW = 1_750_000_000.0
WORKLOAD = synthetic_workload(users=3, items_per_tag=4, events_per_user=6, seed=3)
JAZZ = [i["item_id"] for i in WORKLOAD.items if i["tags"] == ["jazz"]]
#: Newcomers are users within their first 3 events here (20 by default), and the
#: prior of a few events is trusted fully (by default it weighs m / (m + 1000)).
DEFAULTS = SETTINGS.core_params()
PARAMS = dataclasses.replace(
    DEFAULTS,
    popularity=dataclasses.replace(DEFAULTS.popularity, newcomer_events=3, prior_events=0.0),
)
BLOB = blob_name(PARAMS.popularity.half_life_s)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Worker:
    """One worker's processors over a shared store, with or without the prior."""

    def __init__(
        self,
        store: SqliteStore,
        encoder: OnnxEncoder,
        clock: Clock,
        *,
        prior: bool = True,
        reload_seconds: float = 0.0,
        params: CoreParams = PARAMS,
    ) -> None:
        self.sync = CatalogueSync(store, encoder.dim)
        self.items = ItemProcessor(store, self.sync, encoder, TOPICS)
        self.shared = (
            SharedPopularity(
                store,
                params.popularity,
                flush_events=4,
                flush_seconds=60.0,
                reload_seconds=reload_seconds,
                clock=clock,
            )
            if prior
            else None
        )
        self.behaviours = BehaviourProcessor(
            store, self.sync, encoder, params, TOPICS, clock=lambda: NOW, popularity=self.shared
        )
        self._offset = 0

    def send(self, *events: dict) -> Outcome:
        records = []
        for e in events:
            key = e["user_id"].encode()
            records.append(RawRecord(TOPICS.behaviours, 0, self._offset, key, to_json_bytes(e)))
            self._offset += 1
        return self.behaviours.process(records)


def view(user: str, item: str, n: int) -> dict:
    return {"user_id": user, "item_id": item, "type": "view", "ts": NOW - 900 + n,
            "event_id": f"{user}-{n}"}  # fmt: skip


def ask(user: str, text: str, n: int = 0) -> dict:
    return {"user_id": user, "type": "query", "ts": NOW - 100 + n, "text": text,
            "event_id": f"{user}-q{n}"}  # fmt: skip


def deltas(out: Outcome) -> list[dict]:
    return [json.loads(o.value) for o in out.outputs if o.topic == TOPICS.deltas]


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.sqlite")


def test_workers_share_newcomer_counts_through_the_store_and_batch_their_writes(
    store: SqliteStore, onnx_cpu_encoder: OnnxEncoder, tmp_path: Path
) -> None:
    clock = Clock()
    a = Worker(store, onnx_cpu_encoder, clock)
    b = Worker(store, onnx_cpu_encoder, clock, reload_seconds=1e9)  # reads once, then stale
    a.items.process([RawRecord(TOPICS.items, 0, n, i["item_id"].encode(), to_json_bytes(i))
                     for n, i in enumerate(WORKLOAD.items)])  # fmt: skip
    b.send(view("b1", JAZZ[0], 0))  # b reads the (absent) blob: version 0
    assert store.get_blob(BLOB) is None, "1 pending event: not due (4 events or 60 s)"

    first = a.send(view("n1", JAZZ[0], 0), view("n1", JAZZ[1], 1), view("n2", JAZZ[0], 2))
    assert first.counts["popularity_counted"] == 3 and "popularity_writes" not in first.counts
    assert store.get_blob(BLOB) is None
    # n1's 4th event comes after its first 3 (no longer a newcomer: not counted);
    # a skip is no consumption.
    second = a.send(
        view("n1", JAZZ[2], 3), view("n1", JAZZ[3], 4), view("n3", JAZZ[0], 5),
        {**view("n3", JAZZ[3], 6), "type": "skip"},
    )  # fmt: skip
    assert second.counts["popularity_counted"] == 2 and second.counts["popularity_writes"] == 1
    blob = store.get_blob(BLOB)
    assert blob is not None and blob.version == 1 and a.shared.writes == 1
    counts = KeyedPopularity.from_bytes(blob.data)
    assert counts.events == 5 and counts.counts_at(NOW, [JAZZ[0]])[0] > 2.99

    nothing = a.send(ask("n4", "jazz music"))  # a query counts nothing: no write
    assert "popularity_writes" not in nothing.counts and store.get_blob(BLOB).version == 1

    clock.t = 61.0  # b's pending event is due by time; b's version is stale
    late = b.send(view("b2", JAZZ[1], 0))
    assert late.counts["popularity_writes"] == 1 and b.shared.writes == 1
    merged = KeyedPopularity.from_bytes(store.get_blob(BLOB).data)
    assert store.get_blob(BLOB).version == 2 and merged.events == 7, "b added on top of a"
    assert merged.counts_at(NOW, [JAZZ[0]])[0] > 3.99

    restarted = SharedPopularity(SqliteStore(tmp_path / "state.sqlite"), PARAMS.popularity)
    restarted.refresh(force=True)
    assert restarted.current == merged and restarted.version == 2

    a.shared.flush_seconds = 1e9  # one pending event, not due; a clean stop writes it
    a.send(view("n5", JAZZ[1], 7))
    assert a.shared.pending_events == 1 and store.get_blob(BLOB).version == 2
    a.behaviours.close()
    assert a.shared.pending_events == 0 and store.get_blob(BLOB).version == 3
    assert KeyedPopularity.from_bytes(store.get_blob(BLOB).data).events == 8


def test_a_cold_user_is_ranked_by_the_query_composed_with_the_shared_prior(
    store: SqliteStore, onnx_cpu_encoder: OnnxEncoder
) -> None:
    clock = Clock()
    a = Worker(store, onnx_cpu_encoder, clock)
    off = Worker(store, onnx_cpu_encoder, clock, prior=False)
    a.items.process([RawRecord(TOPICS.items, 0, n, i["item_id"].encode(), to_json_bytes(i))
                     for n, i in enumerate(WORKLOAD.items)])  # fmt: skip
    newcomers = [view(f"n{u}", JAZZ[(u + j) % 4], 3 * u + j) for u in range(4) for j in range(2)]
    assert a.send(*newcomers).counts["popularity_writes"] == 1

    (cold,) = deltas(a.send(ask("cold", "space adventures")))
    (plain,) = deltas(off.send(ask("plain", "space adventures")))
    assert cold["interest"]["popularity_prior"] == {"query_weight": 0.125}
    assert "popularity_prior" not in plain["interest"]
    space = {i["item_id"] for i in WORKLOAD.items if i["tags"] == ["space"]}
    alone = [r["item_id"] for r in plain["top_k"]]
    assert set(alone[:4]) == space and not set(alone) & set(JAZZ), "the query alone: its tag"
    top = [r["item_id"] for r in cold["top_k"]]
    assert set(top[:4]) == set(JAZZ), "the newcomers' items lead"

    # Exactly the core's ranking with the stored counts read at the query's time.
    state = store.get_states(["cold"])["cold"]
    ids, _, alive = a.sync.catalogue.rows()
    counts = KeyedPopularity.from_bytes(store.get_blob(BLOB).data)
    prior = counts.prior(state.query.ts, ids, alive)
    expected = rank(state, a.sync.catalogue, PARAMS, prior)
    assert [(item, pytest.approx(score)) for item, score in expected] == [
        (r["item_id"], r["score"]) for r in cold["top_k"]
    ]
    assert state.top_k == tuple(expected)

    # Once the user has consumed an item the prior steps aside.
    (warm,) = deltas(a.send(view("cold", top[0], 50)))
    assert "popularity_prior" not in warm["interest"]

    # With the default trust, a prior of 8 events weighs 8 / 1008: the query leads.
    wary = Worker(store, onnx_cpu_encoder, clock, params=DEFAULTS)
    (asked,) = deltas(wary.send(ask("wary", "space adventures")))
    assert asked["interest"]["popularity_prior"] == {"query_weight": 0.125}
    assert {r["item_id"] for r in asked["top_k"][:4]} == space
    shrunk = counts.prior_rows(
        state.query.ts, counts.rows_of(ids), alive, DEFAULTS.popularity.prior_events
    )
    np.testing.assert_allclose(
        shrunk,
        prior
        * counts.counts_at(state.query.ts, ids).sum()
        / (counts.counts_at(state.query.ts, ids).sum() + 1000.0),
    )


def test_the_setting_switches_the_prior_off_and_sets_its_flush() -> None:
    class Dim:
        dim = 8

    store = SqliteStore(":memory:")
    on = build_runtime(Settings(popularity_flush_events=7), store, Dim())  # type: ignore[arg-type]
    assert isinstance(on.behaviours.popularity, SharedPopularity)
    assert on.behaviours.popularity.flush_events == 7
    off = build_runtime(Settings(popularity_prior=False), store, Dim())  # type: ignore[arg-type]
    assert off.behaviours.popularity is None
    params = Settings(popularity_cold_items=3, popularity_query_weight=2.0).core_params()
    assert (params.popularity.cold_items, params.popularity.query_weight) == (3, 2.0)
    bad_settings = (
        {"popularity_cold_items": -1},
        {"popularity_flush_events": 0},
        {"popularity_flush_seconds": -1.0},
        {"popularity_query_weight": float("nan")},
        {"popularity_prior_events": -1.0},
    )
    for bad in bad_settings:
        with pytest.raises(SettingsError):
            Settings(**bad)
