"""Issue 10, item 5: workers leave and join one group mid-stream; a zombie is fenced.

On Apache Kafka + Apache Cassandra (the session engines; only workers are
stopped, paused and started here). Two workers share one consumer group
(same ``app_id``) and one store; the group's session timeout is 6 s.
"""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import pytest

from streams.admin import ensure_topics
from streams.settings import Settings
from streams.tail import ends_of
from streams.worker import open_store
from tests.pipeline_fixtures import backend_settings
from tests.reliability_fixtures import Rig, Worker, check_guarantee, seeded_stream

pytestmark = pytest.mark.broker

USERS, EVENTS_PER_USER = 160, 20  # 3,200 events
#: A's log lines for a late batch it held back, or (a pause after its last
#: check) published late and named.
HELD_BACK = (b"fenced off", b"not publishing deltas", b"published deltas of")
LATE = re.compile(r"published deltas of user=(?P<user>\S+) at v(?P<version>\d+) late")


def _rig(request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path) -> Rig:
    settings, bootstrap = backend_settings("kafka-cassandra", request, tmp_path, encoder_artifact)
    settings = settings.replace(top_k=10, batch_max=100, commit_interval_seconds=0.5)
    ensure_topics(bootstrap, settings.topics)
    open_store(settings).close()
    return Rig(settings, bootstrap, tmp_path)


def _partitions_of(worker: Worker, settings: Settings) -> set[int]:
    """Behaviour partitions the worker processed a batch of, from its log."""
    return _partitions_in(worker.log.read_text(errors="replace"), settings)


def _partitions_in(log: str, settings: Settings) -> set[int]:
    topic = settings.topics.behaviours
    found = set()
    for line in log.splitlines():
        if "] batch " in line:
            for part in line.split(f"{topic}[")[1:]:
                found.add(int(part.split("]", 1)[0]))
    return found


def test_a_worker_stopped_and_another_started_mid_stream_changes_nothing(
    request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    """Workers A and B share the stream; A is stopped with SIGTERM (as an
    orchestrator stops a pod) and C started while events are published.

    Afterwards every state equals an uninterrupted run's and the downstream
    view equals the stored lists (as in the crash test,
    `tests.reliability_fixtures`), and on the deltas topic no user's non-replay
    delta has a version below an earlier one of that user.
    """
    began = time.monotonic()
    rig = _rig(request, encoder_artifact, tmp_path)
    stream = seeded_stream(USERS, EVENTS_PER_USER, seed=21)
    records = stream.event_records()
    try:
        a, b = rig.spawn("worker-a"), rig.spawn("worker-b")
        rig.publish_items(stream)
        publishing = rig.publish_async(records, rate=120)
        done = rig.wait_progress(0, timeout=120)
        deadline = time.monotonic() + 60
        while not (_partitions_of(a, rig.settings) and _partitions_of(b, rig.settings)):
            assert time.monotonic() < deadline, "the two workers never shared the partitions"
            time.sleep(0.2)
        rig.stop(a)
        left_at = rig.committed_total()
        assert a.proc.returncode is not None
        rig.spawn("worker-c")
        done = rig.wait_progress(left_at, timeout=120)
        published_during_handover = not publishing.done()
        positions = publishing.result(timeout=120)
        rig.wait_committed(rig.settings.topics.behaviours, ends_of(positions), timeout=180)
        processed = time.monotonic()
    finally:
        rig.close()
    try:
        counts = check_guarantee(rig, stream, positions)
    except AssertionError:
        print(rig.log_tail())
        raise
    print(
        f"\nhandover: {len(records)} events, A left at {left_at} committed, view {counts}, "
        f"processed in {processed - began:.0f} s, checked in {time.monotonic() - processed:.0f} s"
    )
    assert 0 < left_at < len(records) and done > left_at
    assert published_during_handover, "the handover should happen while events are published"


def test_a_paused_worker_comes_back_fenced_and_publishes_nothing_stale(
    request: pytest.FixtureRequest, encoder_artifact: Path, tmp_path: Path
) -> None:
    """Of workers A and B, A is frozen with SIGSTOP at a seeded random moment
    while it works through a backlog; after the 6 s session timeout the group
    hands its partitions to B, which works through A's backlog (its commits on
    A's partitions pass A's by three batches); then A gets SIGCONT and finishes
    the batch it was in.

    A's late state writes must be rejected by the store's version fence (its
    log says "fenced off"), or, when the pause came after its writes, its
    late deltas held back because B has moved those users on ("not
    publishing deltas"). A pause between that last check and the broker's
    ack cannot be fenced without Kafka transactions: those deltas go out
    behind B's, and A must name each of them ("published deltas of
    user=... late") and the view must drop them as stale. Apart from those,
    in partition order, no user's non-replay delta has a version below an
    earlier delta of that user. Everything else as in the crash test. The
    stream goes out as a warm-up and three unpaced bursts, one per pause; a
    pause that lands between two batches (nothing to fence) is repeated with
    the next burst.
    """
    began = time.monotonic()
    rig = _rig(request, encoder_artifact, tmp_path)
    stream = seeded_stream(USERS, EVENTS_PER_USER, seed=22)
    records = stream.event_records()
    warm, rest = records[:600], records[600:]
    bursts = [rest[: len(rest) // 3], rest[len(rest) // 3 : 2 * len(rest) // 3]]
    bursts.append(rest[2 * len(rest) // 3 :])
    rng = random.Random(22)
    pauses = []
    try:
        a = rig.spawn("worker-a")
        rig.spawn("worker-b")
        rig.publish_items(stream)
        positions = rig.publish(warm)
        rig.wait_committed(rig.settings.topics.behaviours, ends_of(positions), timeout=120)
        while bursts:
            mark = a.log.stat().st_size
            positions += rig.publish(bursts.pop(0))  # unpaced: a backlog for both workers
            ends = ends_of(positions)
            mine = _wait_batch_since(a, rig.settings, mark)  # A is into the burst
            time.sleep(rng.uniform(0.0, 0.3))
            rig.kill(a, signal.SIGSTOP)
            stopped_at = time.monotonic()
            frozen = rig.committed()
            # B gets A's partitions after the session timeout and gets past A's batch
            _wait_committed_past(rig, frozen, mine, ends, timeout=90)
            rig.kill(a, signal.SIGCONT)
            time.sleep(3.0)  # A finishes its batch, finds itself out of the group, rejoins
            late = a.log.read_bytes()[mark:]
            fenced = sum(late.count(m) for m in HELD_BACK)
            pauses.append((round(time.monotonic() - stopped_at, 1), fenced))
            if fenced:
                break
        for burst in bursts:
            positions += rig.publish(burst)
        rig.wait_committed(rig.settings.topics.behaviours, ends_of(positions), timeout=180)
        processed = time.monotonic()
        fenced_lines = [
            line
            for line in a.log.read_text(errors="replace").splitlines()
            if any(m.decode() in line for m in HELD_BACK)
        ]
        published_late = {
            (m["user"], int(m["version"])) for m in map(LATE.search, fenced_lines) if m
        }
    finally:
        rig.close()
    try:
        assert fenced_lines, f"A's late batch was never held back (pauses: {pauses})"
        counts = check_guarantee(rig, stream, positions, published_late=published_late)
    except AssertionError:
        print(rig.log_tail())
        raise
    print(
        f"\nzombie: {len(records)} events, pauses (s, fenced lines) {pauses}, "
        f"e.g. {fenced_lines[0][-160:]!r}, view {counts}, "
        f"processed in {processed - began:.0f} s, checked in {time.monotonic() - processed:.0f} s"
    )


def _wait_batch_since(
    worker: Worker, settings: Settings, mark: int, timeout: float = 60.0
) -> set[int]:
    """Wait until ``worker`` logs a behaviour batch after byte ``mark`` of its log;
    the partitions of its batches since then."""
    deadline = time.monotonic() + timeout
    while True:
        mine = _partitions_in(worker.log.read_bytes()[mark:].decode(errors="replace"), settings)
        if mine:
            return mine
        assert time.monotonic() < deadline, f"{worker.name} processed no batch"
        time.sleep(0.05)


def _wait_committed_past(
    rig: Rig,
    frozen: dict[int, int],
    partitions: set[int],
    ends: dict[int, int],
    timeout: float,
) -> None:
    """Until the group's commits on ``partitions`` are three batches past ``frozen``
    (A's uncommitted batches included), or at the end of what was published."""
    step = 3 * rig.settings.batch_max
    want = {p: min(ends.get(p, 0), frozen.get(p, 0) + step) for p in partitions}
    deadline = time.monotonic() + timeout
    while True:
        now = rig.committed()
        if all(now.get(p, 0) >= want[p] for p in partitions):
            return
        assert time.monotonic() < deadline, f"nobody took over {want}: {frozen} -> {now}"
        time.sleep(0.2)
