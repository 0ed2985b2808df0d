"""Ask the workers for users' full current recommendations (a snapshot).

A downstream consumer that lost its view of a user (or never had one) does
not rebuild it from the whole delta history: it asks. The request is a
wakeup record with ``snapshot`` set to a fresh request id, keyed by the user
so it lands on the user's partition and is answered in order with the user's
events; the worker that owns the partition publishes a ``snapshot`` delta
(the current version, the full ``top_k`` and the interest summary, nothing
added or removed) to ``recommendation-deltas``. Everyone consuming that
topic sees it; the requester matches it by ``cause.request_id``.

A user the workers have never seen gets version 0 and an empty list.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams import codec
from streams.settings import Settings


def request_snapshots(
    settings: Settings,
    bootstrap: str,
    users: Sequence[str],
    *,
    timeout: float = 30.0,
    **security: object,
) -> dict[str, dict]:
    """The snapshot delta of each of ``users`` (decoded JSON), keyed by user id.

    Raises ``TimeoutError`` naming the users still unanswered after
    ``timeout`` seconds (no worker with the behaviours role running?).
    """
    users = list(dict.fromkeys(users))
    if not users:
        return {}
    request_id = f"snap-{uuid.uuid4().hex}"
    topic = settings.topics.deltas
    consumer = KafkaConsumer(**security, bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist at {bootstrap}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_end()
        for tp in assigned:  # resolve the end now: answers come after it
            consumer.position(tp)
        _send_requests(settings, bootstrap, users, request_id, security)
        return _collect(consumer, set(users), request_id, timeout)
    finally:
        consumer.close()


def _send_requests(
    settings: Settings,
    bootstrap: str,
    users: list[str],
    request_id: str,
    security: dict[str, object],
) -> None:
    producer = KafkaProducer(**security, bootstrap_servers=bootstrap, acks="all")
    try:
        for user in users:
            value = codec.encode_wakeup(codec.Wakeup(user, snapshot=request_id))
            producer.send(settings.topics.wakeups, key=user.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _collect(
    consumer: KafkaConsumer, wanted: set[str], request_id: str, timeout: float
) -> dict[str, dict]:
    answers: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while wanted - answers.keys():
        if time.monotonic() > deadline:
            missing = sorted(wanted - answers.keys())
            raise TimeoutError(
                f"no snapshot after {timeout:.0f}s for {len(missing)} user(s) "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
                "is a worker with the behaviours role running on this broker?"
            )
        for batch in consumer.poll(200).values():
            for record in batch:
                delta = _snapshot_of(record.value, request_id)
                if delta is not None and delta["user_id"] in wanted:
                    answers[delta["user_id"]] = delta
    return answers


def _snapshot_of(value: bytes | None, request_id: str) -> dict | None:
    """The delta if it answers ``request_id``; other deltas and junk are skipped."""
    try:
        delta = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(delta, dict):
        return None
    cause = delta.get("cause")
    if not isinstance(cause, dict) or cause.get("request_id") != request_id:
        return None
    return delta
