"""The Faust app: two agents that decode, batch, call the shell, produce.

Per micro-batch the behaviours agent (1) runs `BehaviourProcessor.process`
in a thread, which writes the users' states, (2) produces the deltas and dead
letters and waits until the broker has them, and only then (3) lets Faust
ack the batch, whose offsets the consumer commits. Store or broker failures
are retried with backoff instead of raised: raising would let Faust ack the
batch and lose it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import faust
from faust.types import EventT

from models.encoder.base import Encoder
from streams import transport
from streams.broker import ssl_context
from streams.processor import (
    BehaviourProcessor,
    CatalogueSync,
    ItemProcessor,
    Outcome,
    Output,
    RawRecord,
)
from streams.settings import Settings
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


def build_runtime(settings: Settings, store: Store, encoder: Encoder) -> Runtime:
    sync = CatalogueSync(store, encoder.dim)
    topics = settings.topics
    return Runtime(
        settings=settings,
        store=store,
        behaviours=BehaviourProcessor(store, sync, encoder, settings.core_params(), topics),
        items=ItemProcessor(store, sync, encoder, topics),
    )


def create_app(settings: Settings, bootstrap: str, runtime: Runtime) -> faust.App:
    topics = settings.topics
    app = faust.App(
        settings.app_id,
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
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        consumer_auto_offset_reset="earliest",
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    outputs = {
        name: app.topic(name, **raw)
        for name in (topics.deltas, topics.dead_letters, topics.wakeups)
    }

    async def produce(batch: Sequence[Output]) -> None:
        futures = [await outputs[o.topic].send(key=o.key, value=o.value) for o in batch]
        await asyncio.gather(*futures)

    async def run_batch(
        events: list[EventT], process: Callable[[list[RawRecord]], Outcome]
    ) -> None:
        records = [_raw(e) for e in events]
        t0 = time.perf_counter()
        outcome = await _retrying("process", lambda: asyncio.to_thread(process, records))
        t1 = time.perf_counter()
        await _retrying("produce", lambda: produce(outcome.outputs))
        t2 = time.perf_counter()
        first, last = records[0], records[-1]
        log.info(
            "batch %s[%d]@%d..%s[%d]@%d: %s process=%.0fms produce=%.0fms",
            first.topic, first.partition, first.offset,
            last.topic, last.partition, last.offset,
            outcome.counts, (t1 - t0) * 1000, (t2 - t1) * 1000,
        )  # fmt: skip

    def batched_agent(name: str, sources: tuple[str, ...], process: Callable) -> None:
        async def agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(
                settings.batch_max, within=settings.batch_within_seconds
            ):
                await run_batch(events, process)

        app.agent(app.topic(*sources, **raw), name=name)(agent)

    # Only the agents of this worker's roles subscribe: encoder (GPU) workers
    # run "items" alone, under their own consumer group.
    if "behaviours" in settings.role_set:
        batched_agent("behaviours", (topics.behaviours, topics.wakeups), runtime.behaviours.process)
    if "items" in settings.role_set:
        batched_agent("items", (topics.items,), runtime.items.process)
    return app


def _raw(event: EventT) -> RawRecord:
    msg = event.message
    stamp = None if msg.timestamp is None else int(msg.timestamp * 1000)
    return RawRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value, stamp)


async def _retrying(what: str, action: Callable[[], Awaitable[T]], max_delay: float = 30.0) -> T:
    """Retry an infrastructure action forever with capped exponential backoff.

    Blocking the partition is the safe choice: the batch is neither lost nor
    acked until its states are written and its outputs are on the broker.
    """
    delay = 0.2
    while True:
        try:
            return await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, delay)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)


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
