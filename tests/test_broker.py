"""The embedded broker's lifecycle and explicit topic creation."""

from __future__ import annotations

import pytest
from kafka.admin import NewTopic

from streams.admin import BrokerError, admin_client, ensure_topics
from streams.embedded_broker import EmbeddedBroker
from streams.topics import Topics

pytestmark = pytest.mark.broker


def test_start_and_stop_leave_nothing_running(tmp_path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path)
    with broker:
        proc = broker._proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None


def test_topics_are_created_with_their_partition_counts(embedded_broker) -> None:
    topics = Topics(partitions=3).prefixed("bt-")
    created = ensure_topics(embedded_broker.bootstrap, topics)
    assert set(created) == {name for name, _, _ in topics.specs()}
    assert ensure_topics(embedded_broker.bootstrap, topics) == []  # idempotent
    admin = admin_client(embedded_broker.bootstrap)
    described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics()}
    admin.close()
    assert described["bt-behaviours"] == 3 and described["bt-dead-letters"] == 1


def test_a_topic_with_the_wrong_partition_count_is_refused(embedded_broker) -> None:
    admin = admin_client(embedded_broker.bootstrap)
    admin.create_topics([NewTopic("wp-behaviours", 1, 1)])
    admin.close()
    with pytest.raises(BrokerError, match="wp-behaviours has 1 partitions"):
        ensure_topics(embedded_broker.bootstrap, Topics(partitions=2).prefixed("wp-"))


def test_a_snapshot_nobody_answers_fails_clearly(embedded_broker) -> None:
    from click.testing import CliRunner

    from streams.cli import main

    bootstrap = embedded_broker.bootstrap
    run = CliRunner().invoke(
        main,
        ["snapshot", "u1", "--bootstrap", bootstrap],
        env={"INTEREST_STREAM_TOPIC_PREFIX": "absent-"},
    )
    assert run.exit_code == 1 and "'absent-recommendation-deltas' does not exist" in run.output

    ensure_topics(bootstrap, Topics().prefixed("idle-"))  # topics, but no worker
    run = CliRunner().invoke(
        main,
        ["snapshot", "u1", "u2", "--bootstrap", bootstrap, "--timeout", "1.5"],
        env={"INTEREST_STREAM_TOPIC_PREFIX": "idle-"},
    )
    assert run.exit_code == 1
    assert "no snapshot after 2s for 2 user(s) (u1, u2)" in run.output
    assert "worker with the behaviours role" in run.output


def test_commit_watch_follows_a_group_over_one_client(embedded_broker) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from streams.admin import CommitWatch, committed

    bootstrap = embedded_broker.bootstrap
    topics = Topics(partitions=2).prefixed("cw-")
    ensure_topics(bootstrap, topics)
    with CommitWatch(bootstrap, "cw-group") as watch:
        assert watch.offsets(topics.behaviours) == {}  # nothing committed yet
        client = watch._admin
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="cw-group")
        try:
            tp = TopicPartition(topics.behaviours, 1)
            consumer.commit({tp: OffsetAndMetadata(7, "", -1)})
        finally:
            consumer.close()
        assert watch.offsets(topics.behaviours) == {1: 7}
        assert watch.offsets(topics.items) == {}  # other topics of the group are left out
        assert watch._admin is client  # the same client for every look
    assert watch._admin is None  # closed on leaving
    assert committed(bootstrap, "cw-group", topics.behaviours) == {1: 7}
