"""`streams.tail.publish`: paced, in order, and stoppable (pure: a fake producer)."""

from __future__ import annotations

import threading
import time

from streams.tail import publish


class _Sent:
    def __init__(self, offset: int) -> None:
        self.partition, self.offset = 0, offset

    def get(self, timeout: float) -> _Sent:
        return self


class FakeProducer:
    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> _Sent:
        self.values.append(value)
        return _Sent(len(self.values) - 1)

    def flush(self) -> None:
        pass


def test_publish_sends_every_record_in_order_at_the_rate() -> None:
    producer = FakeProducer()
    records = [(b"k", str(i).encode()) for i in range(5)]
    began = time.monotonic()
    positions = publish(producer, "t", records, rate=50.0)  # type: ignore[arg-type]
    assert time.monotonic() - began >= 4 / 50.0
    assert producer.values == [v for _, v in records]
    assert positions == [(0, i) for i in range(5)]


def test_a_set_stop_ends_a_paced_publish_at_once() -> None:
    """What the demo does on Ctrl-C: no waiting for the rest of a paced stream."""
    producer = FakeProducer()
    stop = threading.Event()
    records = [(b"k", str(i).encode()) for i in range(1000)]  # 100 s at 10/s
    threading.Timer(0.35, stop.set).start()
    began = time.monotonic()
    positions = publish(producer, "t", records, rate=10.0, stop=stop)  # type: ignore[arg-type]
    assert time.monotonic() - began < 2.0
    assert 2 <= len(positions) <= 6 and positions == [(0, i) for i in range(len(positions))]
    assert producer.values == [v for _, v in records[: len(positions)]]
