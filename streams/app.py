"""The Faust app: two agents that decode, batch, call the shell, produce.

Per micro-batch the behaviours agent (1) runs `BehaviourProcessor.process`
in a thread, which writes the users' states, (2) drops the deltas of users
whose stored state another worker has moved on since (a paused zombie's
late batch: `BehaviourProcessor.drop_superseded`), (3) produces the deltas
and dead letters and waits until the broker has them (after a publish slow
enough for a handover, it logs the deltas that went out behind a newer
owner's: `BehaviourProcessor.published_superseded`), and only then (4) lets
Faust ack the batch, whose offsets the consumer commits. Store or broker
failures are retried with backoff instead of raised: raising would let Faust
ack the batch and lose it. Failures tied to one record or user never get
here: the processors isolate them (`streams.failures`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import faust
from faust.types import EventT

from models.core import CoreParams
from models.encoder.base import Encoder
from streams import transport
from streams.faust_tables import TablelessManager
from streams.gc_pauses import process_pauses
from streams.health import Health, describe
from streams.model_watch import ModelWatch
from streams.processor import (
    BehaviourProcessor,
    CatalogueSync,
    ItemProcessor,
    Outcome,
    Output,
    RawRecord,
)
from streams.security import ssl_context
from streams.settings import Settings
from streams.shared_popularity import SharedPopularity
from streams.shared_topics import SharedTopics
from streams.stores.base import Store
from streams.topics import MAX_MESSAGE_BYTES

log = logging.getLogger("interest_stream.app")

T = TypeVar("T")


@dataclass
class Runtime:
    """What the agents work with, built once per worker."""

    settings: Settings
    store: Store
    behaviours: BehaviourProcessor
    items: ItemProcessor
    #: Where the agents report an action stuck retrying (readiness, `streams.health`).
    health: Health = field(default_factory=Health)


def build_runtime(
    settings: Settings, store: Store, encoder: Encoder, health: Health | None = None
) -> Runtime:
    shared = None
    if settings.topics_enabled:
        shared = SharedTopics(store, encoder.dim, max_topics=settings.max_topics)
    sync = CatalogueSync(store, encoder.dim, shared)
    topics = settings.topics
    params = settings.core_params()
    popularity = None
    if settings.popularity_prior:
        popularity = SharedPopularity(
            store,
            params.popularity,
            flush_events=settings.popularity_flush_events,
            flush_seconds=settings.popularity_flush_seconds,
        )
    return Runtime(
        settings=settings,
        store=store,
        behaviours=BehaviourProcessor(
            store,
            sync,
            encoder,
            params,
            topics,
            limits=settings.limits(),
            delta_schema=settings.delta_schema,
            watch=_model_watch(settings, params),
            popularity=popularity,
        ),
        items=ItemProcessor(store, sync, encoder, topics),
        health=health or Health(settings.health_stall_seconds, settings.health_startup_seconds),
    )


def _model_watch(settings: Settings, params: CoreParams) -> ModelWatch | None:
    """Hot reload of a learned model's folder (`streams.model_watch`), when one runs."""
    artifact = getattr(params.updater, "artifact", None)
    if artifact is None or settings.updater_watch_seconds <= 0:
        return None
    return ModelWatch(settings.updater, artifact.model_version, settings.updater_watch_seconds)


def app_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """The `faust.App` settings of a worker: broker, consumer group timing, limits."""
    return dict(
        broker=f"{transport.SCHEME}://{bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(Path(settings.data_dir) / "faust"),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        broker_commit_interval=settings.commit_interval_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(1.0, settings.session_timeout_seconds / 3),
        # Static membership (Settings.group_instance_id); None: dynamic.
        consumer_group_instance_id=settings.group_instance_id or None,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        consumer_auto_offset_reset="earliest",
        # No Faust tables (state lives in the store): no 1 s wait for them at start.
        TableManager=TablelessManager,
    )


def create_app(settings: Settings, bootstrap: str, runtime: Runtime) -> faust.App:
    topics = settings.topics
    app = faust.App(settings.app_id, **app_config(settings, bootstrap))
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    outputs = {
        name: app.topic(name, **raw)
        for name in (topics.deltas, topics.dead_letters, topics.wakeups)
    }

    async def produce(batch: Sequence[Output]) -> None:
        futures = [await outputs[o.topic].send(key=o.key, value=o.value) for o in batch]
        await asyncio.gather(*futures)

    health = runtime.health
    # Not ready until Faust has started (joined the group, recovered): then
    # its app tasks run, this one first.
    health.fail("worker", "starting: joining the consumer group")

    pauses = process_pauses()

    @app.task
    async def started() -> None:
        health.ok("worker")
        _time_commits(app, health)
        pauses.take()  # the start-up's collections are not the stream's

    async def run_batch(
        agent: str,
        events: list[EventT],
        process: Callable[[list[RawRecord]], Outcome],
        recheck: Callable[[Outcome], Outcome] | None,
        late: Callable[[Outcome], int] | None,
    ) -> None:
        records = [_raw(e) for e in events]
        queued = _queued_seconds(records, time.time())

        async def in_thread(what: str, step: Callable[[Any], T], arg: object) -> T:
            """``step(arg)`` in a thread, retried on infrastructure failures."""
            return await _retrying(
                what, lambda: asyncio.to_thread(step, arg), health=health,
                component=f"{agent}.process",
            )  # fmt: skip

        t0 = time.perf_counter()
        outcome = await in_thread("process", process, records)
        tp = time.perf_counter()
        if recheck is not None:  # as late as possible: a pause may have come in between
            outcome = await in_thread("recheck", recheck, outcome)
        t1 = time.perf_counter()
        await _retrying(
            "produce", lambda: produce(outcome.outputs), health=health, component=f"{agent}.produce"
        )
        t2 = time.perf_counter()
        if late is not None and t2 - tp >= settings.session_timeout_seconds / 2:
            # Long enough for the group to have handed the partitions over
            # after the recheck read the versions (a pause): say what went out late.
            outcome.count("published_late", await in_thread("late check", late, outcome))
        health.count(agent, outcome.counts)
        # The thread hop: what `process` took from here less what it measured inside.
        hop = max(0.0, (tp - t0) - sum(outcome.stages.values()))
        stages = {**outcome.stages, "queue": queued, "thread_hop": hop, "recheck": t1 - tp}
        health.time(agent, {**stages, "produce": t2 - t1}, len(records))
        gc_s, gc_longest, collections = pauses.take()  # any thread's, during this batch
        health.time("gc", {"pause": gc_s}, collections)
        first, last = records[0], records[-1]
        log.log(
            logging.INFO if t2 - t0 >= settings.batch_log_seconds else logging.DEBUG,
            "batch %s[%d]@%d..%s[%d]@%d: %s process=%.0fms produce=%.0fms gc=%.0fms",
            first.topic, first.partition, first.offset,
            last.topic, last.partition, last.offset,
            outcome.counts, (t1 - t0) * 1000, (t2 - t1) * 1000, gc_longest * 1000,
        )  # fmt: skip

    def batched_agent(
        name: str,
        sources: tuple[str, ...],
        process: Callable,
        recheck: Callable | None = None,
        late: Callable | None = None,
    ) -> None:
        async def agent(stream: faust.StreamT) -> None:
            batch_max, within = settings.batching(name)
            async for events in stream.take_events(batch_max, within=within):
                await run_batch(name, events, process, recheck, late)

        app.agent(app.topic(*sources, **raw), name=name)(agent)

    # Only the agents of this worker's roles subscribe: encoder (GPU) workers
    # run "items" alone, under their own consumer group.
    if "behaviours" in settings.role_set:
        behaviours = runtime.behaviours
        batched_agent(
            "behaviours",
            (topics.behaviours, topics.wakeups),
            behaviours.process,
            behaviours.drop_superseded,
            behaviours.published_superseded,
        )
    if "items" in settings.role_set:
        batched_agent("items", (topics.items,), runtime.items.process)
    return app


def _time_commits(app: faust.App, health: Health) -> None:
    """Charge the consumer's offset commits (with the producer flush before each) to health.

    Faust commits from its own timer every ``commit_interval_seconds``, off
    the batch path but on the same event loop, so its cost shows in the stage
    breakdown as ``consumer.commit``.
    """
    consumer = app.consumer
    commit = consumer.commit

    async def timed_commit(*args: object, **kwargs: object) -> bool:
        start = time.perf_counter()
        try:
            return await commit(*args, **kwargs)
        finally:
            health.time("consumer", {"commit": time.perf_counter() - start}, 0)

    consumer.commit = timed_commit


def _queued_seconds(records: Sequence[RawRecord], now: float) -> float:
    """Summed seconds the records waited from their broker timestamp to this batch.

    Producer linger, the broker, the fetch wait and the micro-batch wait, per
    record (divided by the record count it is the mean wait). Records without
    a timestamp, or stamped by a producer whose clock runs ahead, count zero.
    """
    stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None]
    return sum(max(0.0, now - ms / 1000.0) for ms in stamps)


def _raw(event: EventT) -> RawRecord:
    msg = event.message
    stamp = None if msg.timestamp is None else int(msg.timestamp * 1000)
    return RawRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value, stamp)


async def _retrying(
    what: str,
    action: Callable[[], Awaitable[T]],
    max_delay: float = 5.0,
    *,
    health: Health | None = None,
    component: str | None = None,
) -> T:
    """Retry an infrastructure action forever with capped exponential backoff.

    Blocking the partition is the safe choice: the batch is neither lost nor
    acked until its states are written and its outputs are on the broker.
    The delay doubles from 0.2 s to ``max_delay`` (5 s): a retry against an
    engine that is down costs one failed request, and a short cap means the
    worker resumes within seconds of the engine's return.
    While it keeps failing, ``component`` (default ``what``) is reported failing
    into ``health`` with the last error, so the worker turns not-ready with
    that reason; it is reported ok once the action succeeds (or is cancelled:
    nothing is stuck any more).
    """
    name = component or what
    delay = 0.2
    try:
        while True:
            try:
                result = await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s failed; retrying in %.1fs", what, delay)
                if health is not None:
                    health.fail(name, describe(exc))
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
            else:
                if health is not None:
                    health.ok(name)
                return result
    except asyncio.CancelledError:
        if health is not None:
            health.ok(name)
        raise


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust credentials for SSL, SASL_PLAINTEXT and SASL_SSL (PLAIN or SCRAM)."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
