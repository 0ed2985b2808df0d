"""Follow output topics from a background thread (demo, tests, benchmarks).

Uses manual partition assignment, not a consumer group: it reads everything
from the beginning and commits nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    at: float  # wall clock when read


class TopicTail:
    """Collects every record of some topics as it arrives.

    The example needs a running broker at ``bootstrap``, so it is not run:

    >>> with TopicTail(bootstrap, {"recommendation-deltas": 4}) as tail:  # doctest: +SKIP
    ...     tail.wait_for(lambda recs: len(recs) >= 10, timeout=30)
    """

    def __init__(self, bootstrap: str, partitions: dict[str, int], **security: object) -> None:
        self._consumer = KafkaConsumer(
            **security,
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,  # receive times measure latency: do not park fetches
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self._consumer.assign(
            [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
        )
        self._records: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tail", daemon=True)

    def __enter__(self) -> TopicTail:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def records(self, topic: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._records if topic is None or r.topic == topic]

    def wait_for(
        self, ready: Callable[[list[Received]], bool], timeout: float, topic: str | None = None
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records(topic)
            if ready(recs):
                return recs
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s ({len(recs)} records)")
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for tp, batch in self._consumer.poll(100).items():
                    now = time.time()
                    got = [
                        Received(tp.topic, tp.partition, r.offset, r.key, r.value, now)
                        for r in batch
                    ]
                    with self._lock:
                        self._records.extend(got)
        finally:
            self._consumer.close()


def publish(
    producer: KafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]],
    *,
    rate: float = 0.0,
    stop: threading.Event | None = None,
) -> list[tuple[int, int]]:
    """Produce records in order, paced at ``rate``/s (0: as fast as possible).

    Returns the (partition, offset) each record was written at. Once ``stop``
    is set (a caller interrupted, say by Ctrl-C) no further record is sent:
    the positions of those sent so far are returned.
    """
    futures = []
    start = time.monotonic()
    for i, (key, value) in enumerate(records):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                if stop is not None and stop.wait(delay):
                    break
                if stop is None:
                    time.sleep(delay)
        if stop is not None and stop.is_set():
            break
        futures.append(producer.send(topic, key=key, value=value))
    producer.flush()
    return [(meta.partition, meta.offset) for meta in (f.get(timeout=30) for f in futures)]


def ends_of(positions: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the last of ``positions``."""
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends
