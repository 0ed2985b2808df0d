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

`send_query` publishes a natural-language ``query`` behaviour and waits for
the delta it causes (``interest-stream query``).
"""

from __future__ import annotations

import base64
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


def send_query(
    settings: Settings,
    bootstrap: str,
    user: str,
    text: str,
    *,
    timeout: float = 30.0,
    **security: object,
) -> dict:
    """Publish a natural-language ``query`` behaviour for ``user``; return the delta it caused.

    The delta (decoded JSON) carries the user's resulting ``top_k`` and, in
    ``interest.query``, the phrases the query was decomposed into. Raises
    ``ValueError`` with the reason when the workers dead-letter the query
    (for example ``invalid_query``: no interest phrase in it), and
    ``TimeoutError`` when no answer comes within ``timeout`` seconds.
    """
    event_id = f"query-{uuid.uuid4().hex}"
    topics = settings.topics
    consumer = KafkaConsumer(**security, bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        assigned = []
        for topic in (topics.deltas, topics.dead_letters):
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise LookupError(f"topic {topic!r} does not exist at {bootstrap}")
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_end()
        for tp in assigned:
            consumer.position(tp)
        record = {"user_id": user, "type": "query", "text": text, "ts": time.time(),
                  "event_id": event_id}  # fmt: skip
        producer = KafkaProducer(**security, bootstrap_servers=bootstrap, acks="all")
        try:
            producer.send(topics.behaviours, key=user.encode(), value=json.dumps(record).encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for tp, batch in consumer.poll(200).items():
                for rec in batch:
                    if tp.topic == topics.deltas:
                        delta = _delta_of(rec.value, event_id)
                        if delta is not None:
                            return delta
                    else:
                        _raise_if_rejected(rec.value, event_id)
        raise TimeoutError(
            f"no answer to the query after {timeout:.0f}s: "
            "is a worker with the behaviours role running on this broker?"
        )
    finally:
        consumer.close()


def _delta_of(value: bytes | None, event_id: str) -> dict | None:
    try:
        delta = json.loads(value or b"")
    except ValueError:
        return None
    cause = delta.get("cause") if isinstance(delta, dict) else None
    if isinstance(cause, dict) and event_id in (cause.get("event_ids") or ()):
        return delta
    return None


def _raise_if_rejected(value: bytes | None, event_id: str) -> None:
    try:
        letter = json.loads(value or b"")
        original = json.loads(base64.b64decode(letter["value_b64"]))
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(original, dict) and original.get("event_id") == event_id:
        raise ValueError(f"the query was rejected: {letter.get('reason')}: {letter.get('message')}")
