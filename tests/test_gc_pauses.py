"""`streams.gc_pauses`: collections are timed, and `take` hands each one over once."""

from __future__ import annotations

import gc

from streams.gc_pauses import GcPauses, process_pauses


def test_collections_are_timed_and_taken_once() -> None:
    ticks = iter([1.0, 1.25, 2.0, 2.5])
    pauses = GcPauses(clock=lambda: next(ticks))
    pauses._on_gc("start", {})
    pauses._on_gc("stop", {})
    pauses._on_gc("start", {})
    pauses._on_gc("stop", {})
    assert pauses.take() == (0.75, 0.5, 2)
    assert pauses.take() == (0.0, 0.0, 0)  # reset: the next batch starts from nothing


def test_a_stop_without_its_start_counts_nothing() -> None:
    pauses = GcPauses(clock=lambda: 5.0)
    pauses._on_gc("stop", {})  # installed mid-collection: its start was not seen
    assert pauses.take() == (0.0, 0.0, 0)


def test_the_process_has_one_installed_counter() -> None:
    first, second = process_pauses(), process_pauses()
    assert first is second and gc.callbacks.count(first._on_gc) == 1
    first.take()
    gc.collect()
    seconds, longest, count = first.take()
    assert count >= 1 and seconds >= longest > 0
