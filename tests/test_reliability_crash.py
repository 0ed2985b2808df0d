"""Issue 10, item 4: kill -9 the worker at random points; nothing lost, nothing twice.

On Apache Kafka + Apache Cassandra (the session engines of
`tests.engine_fixtures`; this test only kills workers, never an engine).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from streams.admin import ensure_topics
from streams.tail import ends_of
from streams.worker import open_store
from tests.pipeline_fixtures import backend_settings
from tests.reliability_fixtures import Rig, check_guarantee, seeded_stream

pytestmark = pytest.mark.broker

USERS, EVENTS_PER_USER, SEED = 400, 50, 10  # 20,000 events
RATE = 150.0  # events/s: publishing lasts ~135 s, the kills land while it goes on
#: The kills come when the group has committed these shares of the stream (seeded).
KILL_SPREAD = (0.03, 0.45)
#: How each kill is timed once its share is committed: after a seeded random
#: delay, or right after the worker logs a batch it has stored and published
#: (before Faust commits it), so that restarts surely replay applied events.
KILL_TIMING = ("random", "after-write", "random", "after-write", "random")


def test_kill_9_at_random_points_leaves_every_state_as_an_uninterrupted_run(
    request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    """20,000 events of 400 users; the worker is killed with SIGKILL at 5 seeded
    random points while they are published (once the group has committed a
    seeded random share of the stream, plus a seeded random delay or the next
    stored but uncommitted batch), and restarted each time.

    Afterwards, for every user, the stored state equals the state of an
    uninterrupted run (the same events replayed per user in partition order
    through ``models.core.step``): every field equal except ``version``, the
    interest vector bit for bit, the top-K items equal in order and the scores
    within 1e-6 (`tests.reliability_fixtures` says why); ``events_applied`` and
    ``recent_event_ids`` count each published event exactly once. A
    downstream `RecommendationView` fed with the whole deltas topic holds
    exactly each user's stored top-K items, and no two ``events`` deltas of a
    user name the same event.
    """
    began = time.monotonic()
    settings, bootstrap = backend_settings("kafka-cassandra", request, tmp_path, encoder_artifact)
    # Frequent commits, and batches of up to 1,000 events gathered for up to
    # 100 ms: a worker behind its stream writes each user's state once per
    # batch, one Cassandra compare-and-set, so the bigger batches cut the
    # processing of this stream from ~205 s to ~155 s (the 5 ms default is
    # for latency). Two of the kills wait for a batch stored but not yet
    # committed, so restarts surely replay applied events. Static
    # membership, as a restarted container keeps its pod name: each restart
    # takes the dead worker's place at once instead of after its 6 s session
    # (the dynamic-membership restart: tests/test_crash_recovery.py).
    settings = settings.replace(
        top_k=10,
        batch_max=1000,
        batch_within_seconds=0.1,
        commit_interval_seconds=0.5,
        group_instance_id="crash-worker",
    )
    ensure_topics(bootstrap, settings.topics)
    open_store(settings).close()  # the keyspace, before the worker races for it
    stream = seeded_stream(USERS, EVENTS_PER_USER, SEED)
    records = stream.event_records()
    rng = random.Random(SEED)
    rig = Rig(settings, bootstrap, tmp_path)
    kills: list[int] = []
    try:
        worker = rig.spawn()
        rig.publish_items(stream)
        publishing = rig.publish_async(records, rate=RATE)
        targets = sorted(int(rng.uniform(*KILL_SPREAD) * len(records)) for _ in KILL_TIMING)
        done = 0
        for target, timing in zip(targets, KILL_TIMING, strict=True):
            done = rig.wait_progress(max(done, target), timeout=180)  # (re)started, committing
            if timing == "random":
                time.sleep(rng.uniform(0.05, 1.0))
            else:
                rig.wait_batch_written(worker, timeout=60)
            rig.kill(worker)  # SIGKILL: no final commit, no goodbye to the group
            done = rig.committed_total()
            kills.append(done)
            assert done < len(records), "killed after everything was committed"
            worker = rig.spawn()
        published_while_killing = not publishing.done()
        positions = publishing.result(timeout=300)
        rig.wait_committed(settings.topics.behaviours, ends_of(positions), timeout=240)
        processed = time.monotonic()
        replays = rig.log_text().count("skip replayed event")
        # Static membership: every restart rejoined as the same member, in the
        # first worker's generation (a dynamic join would start a new one).
        joined = {w.name: _generation(w.log.read_text(errors="replace")) for w in rig.workers}
    finally:
        rig.close()
    try:
        counts = check_guarantee(rig, stream, positions)
    except AssertionError:
        print(rig.log_tail())
        raise
    print(
        f"\ncrash: {len(records)} events, {len(stream.users)} users, killed at committed "
        f"{kills}, {replays} replayed events skipped after restarts, view {counts}, "
        f"processed in {processed - began:.0f} s, checked in {time.monotonic() - processed:.0f} s"
    )
    assert len(set(joined.values())) == 1 and None not in joined.values(), joined
    assert published_while_killing, "every kill should land while events are being published"
    assert replays > 0, "no kill landed between a state write and its commit"


def _generation(log: str) -> int | None:
    """The group generation a worker joined in, from its log; None if it never joined."""
    found = re.search(r"Joined group '[^']+' \(generation (\d+)\)", log)
    return int(found.group(1)) if found else None
