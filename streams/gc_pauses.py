"""The worker's garbage-collector pauses, timed into its stage breakdown.

CPython's cyclic collector stops every thread of the process while it runs,
so a batch that meets a full (generation 2) collection waits for it; on the
bench's workload a full pass took up to 60 ms in
`benchmarks/processor_cost.py`. `GcPauses` times every collection through
``gc.callbacks``; the worker adds the total to ``/livez`` ``stages`` ->
``gc`` per batch and logs the longest pause in its batch line, so a tail
that comes from the collector shows as such in `interest-stream bench`.
(Measured there: about 0.1 s of collections per 1,400 events, the longest
pause 4-9 ms, so `gc.freeze` after start-up bought nothing measurable and is
not done.)
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable


class GcPauses:
    """Seconds spent in garbage collections since the last `take`, and the longest one.

    >>> pauses = GcPauses()
    >>> pauses.install()
    >>> _ = gc.collect()
    >>> seconds, longest, count = pauses.take()
    >>> count >= 1 and seconds >= longest > 0
    True
    >>> pauses.uninstall()
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._seconds = 0.0
        self._longest = 0.0
        self._count = 0

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        # Called inside the collection, GIL held: collections never overlap,
        # so _started needs no lock of its own.
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            pause = self._clock() - self._started
            self._started = None
            with self._lock:
                self._seconds += pause
                self._longest = max(self._longest, pause)
                self._count += 1

    def take(self) -> tuple[float, float, int]:
        """(seconds, longest pause, collections) since the last call; resets them."""
        with self._lock:
            out = (self._seconds, self._longest, self._count)
            self._seconds, self._longest, self._count = 0.0, 0.0, 0
        return out


_PROCESS: GcPauses | None = None


def process_pauses() -> GcPauses:
    """This process's one installed `GcPauses` (a second app in it shares the count)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = GcPauses()
        _PROCESS.install()
    return _PROCESS
