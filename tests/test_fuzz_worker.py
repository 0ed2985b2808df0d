"""Fuzzed records through a real worker process on the embedded broker.

The in-memory properties of ``tests/test_fuzz.py`` again, end to end: a few
hundred generated `behaviours`, `items` and wakeups records (a fixed seed)
published to tansu and read by ``interest-stream worker``; afterwards every
invalid record is on ``dead-letters`` with a reason and its original bytes,
every valid event is in its user's stored state exactly once, every number
is finite, and the users with valid events got deltas.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.admin import ensure_topics, wait_committed
from streams.processor import RawRecord
from streams.tail import TopicTail, ends_of, publish
from streams.topics import MAX_MESSAGE_BYTES
from streams.worker import open_store, spawn_worker, stop_worker
from tests import fuzz_records as fr
from tests.fuzz_harness import (
    Placed,
    catalogue_values,
    check_dead_letters,
    check_deltas,
    check_items,
    check_states,
    mentioned_users,
    strict_json,
    topic_name,
)
from tests.pipeline_fixtures import backend_settings

pytestmark = pytest.mark.broker

SEED = 20251110


def _publish(producer: KafkaProducer, topics, records: list[fr.Fuzzed]) -> list[Placed]:
    """Produce ``records`` in order, each to its topic; where each one landed.

    A record with neither key nor value is left out: kafka-python cannot send one.
    """
    placed = []
    for topic in (fr.ITEMS, fr.BEHAVIOURS, fr.WAKEUPS):
        mine = [r for r in records if r.topic == topic and (r.key, r.value) != (None, None)]
        name = topic_name(topics, topic)
        positions = publish(producer, name, [(r.key, r.value) for r in mine])
        placed += [
            Placed(r, RawRecord(name, partition, offset, r.key, r.value))
            for r, (partition, offset) in zip(mine, positions, strict=True)
        ]
    return placed


def test_fuzzed_records_through_a_real_worker(
    request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    settings, bootstrap = backend_settings("embedded-sqlite", request, tmp_path, encoder_artifact)
    topics = settings.topics
    ensure_topics(bootstrap, topics)
    # The worker reads these a little later than they are made: "ahead" records
    # are generated at least 10 minutes past the contract's day of slack.
    cfg = fr.FuzzConfig(now=time.time(), slack=600.0)
    items = [r for stream in fr.draw_examples(fr.item_streams(10, 20), 6, SEED) for r in stream]
    events = [
        r
        for stream in fr.draw_examples(fr.behaviour_streams(cfg, 20, 40, 0.25), 10, SEED)
        for r in stream
    ]
    assert len(items) >= 60 and len(events) >= 200 and any(r.valid for r in events)

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES)
    log = tmp_path / "worker.log"
    worker = spawn_worker(settings, bootstrap, log)
    tail = TopicTail(bootstrap, {topics.deltas: settings.partitions, topics.dead_letters: 1})
    try:
        with tail:
            catalogue = publish(producer, topics.items, catalogue_values(cfg))
            placed = _publish(producer, topics, items)
            ends = ends_of(catalogue + [(p.raw.partition, p.raw.offset) for p in placed])
            alive = lambda: worker.poll() is None  # noqa: E731
            wait_committed(bootstrap, settings.app_id, topics.items, ends, timeout=120,
                           alive=alive)  # fmt: skip
            placed += _publish(producer, topics, events)
            for topic in (topics.behaviours, topics.wakeups):
                here = [(p.raw.partition, p.raw.offset) for p in placed if p.raw.topic == topic]
                wait_committed(bootstrap, settings.app_id, topic, ends_of(here), timeout=120,
                               alive=alive)  # fmt: skip
            time.sleep(2)  # outputs are flushed before the commit; let the tail read them
            letters = [strict_json(r.value) for r in tail.records(topics.dead_letters)]
            deltas = [strict_json(r.value) for r in tail.records(topics.deltas)]
    finally:
        stop_worker(worker)
        producer.close()
        print(log.read_text(errors="replace")[-3000:])

    # Records with no key land on any partition: their order is not the stream's.
    tally, applied = check_dead_letters(placed, letters, ordered=False)
    store = open_store(settings)
    try:
        states = store.get_states(sorted(mentioned_users(placed)))
        item_ids = sorted(
            {p.rec.item_id for p in placed if p.rec.topic == fr.ITEMS and p.rec.item_id}
        )
        stored = store.get_items(item_ids)
    finally:
        store.close()
    check_states(applied, states, cfg.catalogue)
    check_deltas(placed, deltas, states)
    check_items(placed, stored, ordered=False)
    # A user with a list got deltas. (Valid events can leave none: weights that
    # round to zero in float32, or events decayed to nothing, give no direction.)
    listed = {
        p.rec.user_id for p in applied if p.rec.item_id in cfg.catalogue
        and states[p.rec.user_id].top_k  # type: ignore[union-attr]
    }  # fmt: skip
    got = {d["user_id"] for d in deltas if d["cause"]["kind"] == "events"}
    assert listed and listed <= got, f"no deltas for {sorted(listed - got)}"
    counts = json.dumps(tally.as_dict(), sort_keys=True)
    print(f"fuzzed through the worker: {counts}")
    assert tally.applied[fr.BEHAVIOURS] and sum(tally.dead_lettered[fr.BEHAVIOURS].values())
