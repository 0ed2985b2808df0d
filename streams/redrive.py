"""Re-drive dead letters: publish their original bytes to the topic they came from.

Dead letters keep every rejected record whole (key, value, source topic,
partition, offset, reason), so a record set aside for a reason that has since
been fixed is not lost: a state that was unreadable and is readable again
(``state_unreadable``), a bug fixed in a new worker (``internal_error``), an
item that finally arrived (``pending_overflow``). Re-driving is safe to repeat:
every behaviour carries an event id (explicit, or derived from its fields),
and the worker applies an event id once; a second copy becomes a
``duplicate`` dead letter, never a second application.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streams.admin import BrokerUnreachable
from streams.topics import MAX_MESSAGE_BYTES, Topics


@dataclass
class RedriveReport:
    """What a re-drive read and published, by reason."""

    read: int = 0
    next_offset: int = 0
    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def redrive(
    bootstrap: str,
    topics: Topics,
    reasons: Collection[str],
    *,
    from_offset: int = 0,
    dry_run: bool = False,
    timeout: float = 10.0,
    **security: object,
) -> RedriveReport:
    """Publish the dead letters with one of ``reasons`` back to their source topic.

    Reads ``topics.dead_letters`` from ``from_offset`` to its current end.
    Only letters from interest-stream's input topics are re-driven (never the
    deltas or dead-letters topics); the report's ``next_offset`` is where a
    later run can start.
    """
    inputs = {topics.behaviours, topics.items, topics.wakeups}
    report = RedriveReport(next_offset=from_offset)
    tp = TopicPartition(topics.dead_letters, 0)
    try:
        consumer = KafkaConsumer(
            **security,
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
    except KafkaError as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} ({exc!r}): check --bootstrap "
            "(or INTEREST_STREAM_BOOTSTRAP_SERVERS) and the security settings"
        ) from exc
    producer = None if dry_run else KafkaProducer(
        **security, bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES, acks="all"
    )  # fmt: skip
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, from_offset)
        deadline = time.monotonic() + timeout
        while report.next_offset < end and time.monotonic() < deadline:
            for record in consumer.poll(200).get(tp, []):
                report.read += 1
                report.next_offset = record.offset + 1
                _redrive_one(record.value, reasons, inputs, producer, report)
        if report.next_offset < end:
            raise TimeoutError(
                f"read dead letters up to offset {report.next_offset} of {end} in {timeout:g}s"
            )
        if producer is not None:
            producer.flush()
    finally:
        consumer.close()
        if producer is not None:
            producer.close()
    return report


def _redrive_one(
    value: bytes | None,
    reasons: Collection[str],
    inputs: Collection[str],
    producer: KafkaProducer | None,
    report: RedriveReport,
) -> None:
    try:
        letter = json.loads(value or b"")
        reason, topic = letter["reason"], letter["source"]["topic"]
        key = None if letter["key_b64"] is None else base64.b64decode(letter["key_b64"])
        body = None if letter["value_b64"] is None else base64.b64decode(letter["value_b64"])
    except (ValueError, KeyError, TypeError):
        report.skipped["unreadable_letter"] = report.skipped.get("unreadable_letter", 0) + 1
        return
    if reason not in reasons or topic not in inputs:
        report.skipped[reason] = report.skipped.get(reason, 0) + 1
        return
    if producer is not None:
        producer.send(topic, key=key, value=body)
    report.published[reason] = report.published.get(reason, 0) + 1
