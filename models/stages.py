"""Where a worker's time goes: wall time per named stage, exclusive of nested stages.

The shell opens a `StageClock` around a micro-batch (`measuring`); code on
that thread marks its parts with ``with stage("rank"):``. A stage nested in
another is charged to itself only: the outer stage's figure excludes it, so
the figures of one batch add up to the time measured. With no clock open
(tests, the offline evaluation) `stage` only checks a thread-local and
costs well under a microsecond.

>>> clock = StageClock()
>>> with measuring(clock):
...     with stage("core"):
...         with stage("rank"):
...             pass
>>> sorted(clock.seconds)
['core', 'other', 'rank']
>>> all(s >= 0 for s in clock.seconds.values())
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_local = threading.local()


@dataclass
class StageClock:
    """Seconds per stage, summed over everything measured with it."""

    seconds: dict[str, float] = field(default_factory=dict)
    #: Open stages on this clock, innermost last: [name, start, seconds of children].
    _open: list[list] = field(default_factory=list, repr=False)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def merge(self, other: dict[str, float]) -> None:
        for name, seconds in other.items():
            self.add(name, seconds)


@contextmanager
def measuring(clock: StageClock) -> Iterator[StageClock]:
    """Charge the `stage` blocks run on this thread to ``clock`` until the block ends.

    The block's time outside every stage is charged to ``other``, so the
    clock's figures add up to the block's wall time.
    """
    previous = getattr(_local, "clock", None)
    _local.clock = clock
    start, before = time.perf_counter(), sum(clock.seconds.values())
    try:
        yield clock
    finally:
        _local.clock = previous
        inside = sum(clock.seconds.values()) - before
        clock.add("other", max(0.0, time.perf_counter() - start - inside))


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` on the open clock (no clock open: nothing)."""
    clock: StageClock | None = getattr(_local, "clock", None)
    if clock is None:
        yield
        return
    frame = [name, time.perf_counter(), 0.0]
    clock._open.append(frame)
    try:
        yield
    finally:
        clock._open.pop()
        elapsed = time.perf_counter() - frame[1]
        clock.add(name, elapsed - frame[2])
        if clock._open:
            clock._open[-1][2] += elapsed
