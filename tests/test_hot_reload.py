"""Hot reload: a new model export is picked up by a running worker, users move over.

Unit tests of `streams.model_watch.ModelWatch`, and one end-to-end test on
the embedded broker: a worker runs a learned model, the model folder is
replaced mid-stream, and every delta of the events after the switch names
the new version; no event is lost or applied twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from models.learned import save_artifact
from models.learned.artifact import MANIFEST
from models.state import UserState
from streams.admin import ensure_topics
from streams.model_watch import ModelWatch
from streams.tail import TopicTail
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import open_store, spawn_worker, stop_worker
from tests.pipeline_fixtures import Pipeline, backend_settings
from tests.test_pipeline_e2e import event_records, item_records, scenario
from tests.updater_fixtures import random_cell_weights


def _export(folder: Path, item_ids: list[str], seed: int, text_dim: int = 16) -> str:
    weights = random_cell_weights(np.random.default_rng(seed), len(item_ids), text_dim)
    return save_artifact(folder, weights, item_ids, config={"seed": seed}).model_version


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_hands_over_a_new_version_once_and_only_after_its_interval(
    tmp_path: Path,
) -> None:
    ids = [f"m{i}" for i in range(5)]
    first = _export(tmp_path / "model", ids, seed=1)
    clock = _Clock()
    watch = ModelWatch(tmp_path / "model", first, interval=10.0, clock=clock)
    clock.now = 11.0
    assert watch.poll() is None, "same version: nothing to do"
    second = _export(tmp_path / "model", ids, seed=2)
    clock.now = 15.0
    assert watch.poll() is None, "not yet: the interval has not passed since the last look"
    clock.now = 22.0
    updater = watch.poll()
    assert updater is not None and updater.artifact.model_version == second != first
    assert watch.current == second
    clock.now = 40.0
    assert watch.poll() is None, "handed over once"


def test_a_half_written_export_is_refused_and_taken_once_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"m{i}" for i in range(5)]
    folder = tmp_path / "model"
    first = _export(folder, ids, seed=1)
    staged = tmp_path / "staged"
    second = _export(staged, ids, seed=2)
    # The manifest of the new version has landed, its weights not yet.
    shutil.copy(staged / MANIFEST, folder / MANIFEST)
    clock = _Clock()
    watch = ModelWatch(folder, first, interval=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="interest_stream.model_watch"):
        for t in (2.0, 4.0):
            clock.now = t
            assert watch.poll() is None
    refused = [r for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(refused) == 1, "said once per version, retried every poll"
    shutil.copy(staged / "weights.npz", folder / "weights.npz")
    clock.now = 6.0
    updater = watch.poll()
    assert updater is not None and updater.artifact.model_version == second
    (folder / MANIFEST).unlink()
    clock.now = 8.0
    assert watch.poll() is None, "a folder caught mid-rename keeps the running model"


@pytest.mark.broker
def test_a_model_replaced_mid_stream_is_picked_up_without_a_restart(
    request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    items, events = scenario("hr-", users=4, events=16)
    ids = [i["item_id"] for i in items]
    folder = tmp_path / "model"
    dim = json.loads((encoder_artifact / "manifest.json").read_text())["dim"]
    old = _export(folder, ids, seed=11, text_dim=dim)
    settings, bootstrap = backend_settings(
        "embedded-sqlite", request, tmp_path / "w", encoder_artifact
    )
    settings = settings.replace(updater=str(folder), updater_watch_seconds=0.5)
    ensure_topics(bootstrap, settings.topics)
    log_path = tmp_path / "worker.log"
    worker = spawn_worker(settings, bootstrap, log_path)
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES)
    topics = settings.topics
    try:
        with TopicTail(bootstrap, {topics.deltas: settings.partitions}) as tail:
            pipe = Pipeline(
                "embedded-sqlite", bootstrap, settings, worker, producer, tail, log_path
            )
            pipe.send(topics.items, item_records(items))
            half = len(events) // 2
            pipe.send(topics.behaviours, event_records(events[:half]))
            before = {e["event_id"] for e in events[:half]}
            new = _export(folder, ids, seed=12, text_dim=dim)  # the new export, in place
            assert new != old
            time.sleep(1.0)  # past the watch interval: the next batch looks
            pipe.send(topics.behaviours, event_records(events[half:]))
            deltas = [json.loads(r.value) for r in tail.records(topics.deltas)]
        after = [d for d in deltas if d["cause"]["kind"] == "events"
                 and not set(d["cause"]["event_ids"]) & before]  # fmt: skip
        first = [d for d in deltas if set(d["cause"]["event_ids"]) <= before]
        assert first and {d["model"] for d in first} == {f"learned-gru({old}, heads=1)"}
        assert after and {d["model"] for d in after} == {f"learned-gru({new}, heads=1)"}
        assert "hot reload" in log_path.read_text()
        store = open_store(settings)
        try:
            states = store.get_states(sorted({e["user_id"] for e in events}))
        finally:
            store.close()
        sent = {u: sum(e["user_id"] == u for e in events) for u in states}
        assert set(states) == set(sent)
        for user, state in states.items():
            assert isinstance(state, UserState), user
            assert state.updater == f"learned-gru({new}, heads=1)", user
            assert state.events_applied == sent[user], "no event lost or applied twice"
    finally:
        producer.close()
        stop_worker(worker)
