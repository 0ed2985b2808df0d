"""The fuzz properties at scale: 10,000+ generated records per topic through the processors.

The same generators and checks as ``tests/test_fuzz.py`` (`tests.fuzz_records`,
`tests.fuzz_harness`), run until every topic has at least ``--records``
generated records: behaviours and wakeups through a `BehaviourProcessor`,
items through an `ItemProcessor`, each stream on a fresh in-memory SQLite
store. Writes ``benchmarks/results/fuzz.json`` and a bar chart beside it: per
topic, the records of the streams whose properties held (generated, applied,
dead-lettered by reason), the records of the streams that failed, and each
distinct failure once, naming the record it failed on.

Usage::

    python benchmarks/fuzz.py [--records 10000] [--seed 0] [--out benchmarks/results/fuzz.json]

Exits 1 when a property failed on any stream (the figures are still written).
No shrinking here: ``tests/test_fuzz.py`` shrinks what it finds.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from _results import RESULTS, save

# The generators and checks live with the tests; run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fuzz_records as fr
from tests.fuzz_harness import Tally, run_behaviours, run_items

CFG = fr.FuzzConfig()
#: Records per generated stream: large enough for repeats and several users,
#: small enough for hypothesis to build without running out of choices.
STREAM = 40


_CUTS = st.lists(st.integers(0, STREAM), max_size=4)  # micro-batch boundaries
#: Per topic: the streams that fill it and how they are run (wakeups come
#: mixed into behaviour streams, so their own streams are mostly wakeups).
_STREAMS = {
    fr.BEHAVIOURS: (fr.behaviour_streams(CFG, STREAM, STREAM), run_behaviours),
    fr.WAKEUPS: (fr.behaviour_streams(CFG, STREAM, STREAM, wakeup_share=0.8), run_behaviours),
    fr.ITEMS: (fr.item_streams(STREAM, STREAM), run_items),
}


@dataclass
class Run:
    """What the streams gave: the tally of those that held, and what failed, once each."""

    tally: Tally = field(default_factory=Tally)
    failed_streams: Counter[str] = field(default_factory=Counter)
    failed_records: Counter[str] = field(default_factory=Counter)
    #: Each kind of failure (problem and record label) -> the message of its first case.
    failures: dict[str, str] = field(default_factory=dict)
    failure_counts: Counter[str] = field(default_factory=Counter)

    def seen(self, topic: str) -> int:
        return self.tally.generated[topic] + self.failed_records[topic]


def _one_run(topic: str, run: Run, seed: int, examples: int) -> None:
    """``examples`` generated streams for ``topic`` through the processors.

    A stream whose properties fail (or whose processor raises) is recorded
    and the run goes on: the figures count every record generated.
    """
    streams, process = _STREAMS[topic]

    @settings(
        max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @hypothesis.seed(seed)
    @given(stream=streams, cuts=_CUTS)
    def check(stream: list[fr.Fuzzed], cuts: list[int]) -> None:
        try:
            run.tally.add(process(stream, CFG, cuts))
        except Exception as exc:  # a property failed, or a processor raised
            message = f"{type(exc).__name__}: {exc}"
            kind = message.splitlines()[0].split(" key=")[0][:300]  # the record's bytes vary
            run.failures.setdefault(kind, message[:4000])
            run.failure_counts[kind] += 1
            run.failed_streams[topic] += 1
            run.failed_records.update(r.topic for r in stream)

    check()


def fuzz(records: int, seed: int, examples_per_run: int = 25) -> tuple[Run, float]:
    """Generate streams until each topic has seen ``records`` records."""
    run = Run()
    start = time.perf_counter()
    run_seed = seed
    for topic in _STREAMS:
        while run.seen(topic) < records:
            _one_run(topic, run, run_seed, examples_per_run)
            run_seed += 1
            seen = {t: run.seen(t) for t in _STREAMS}
            print(f"{topic}: {seen} records, {sum(run.failed_streams.values())} streams failed",
                  flush=True)  # fmt: skip
    return run, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="generated records per topic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # a dead letter is logged as a warning: tens of thousands
    warnings.simplefilter("ignore", hypothesis.errors.HypothesisWarning)  # large reprs

    run, seconds = fuzz(args.records, args.seed)
    tally, failures = run.tally, list(run.failures.values())
    for topic in _STREAMS:
        tally.generated[topic] += 0  # a topic whose every stream failed is listed too
    counts = tally.as_dict()
    for topic, c in counts.items():
        c["in_failed_streams"] = run.failed_records[topic]
    total = sum(run.seen(t) for t in _STREAMS)
    result = {
        "records_per_topic_target": args.records,
        "seed": args.seed,
        "topics": counts,
        "properties_held": not failures,
        "streams_failed": dict(run.failed_streams),
        "failure_kinds": dict(run.failure_counts.most_common()),
        "failures": failures,
        "seconds": round(seconds, 2),
        "records_per_second": round(total / seconds, 1) if seconds else None,
        "hypothesis": hypothesis.__version__,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    bars = {
        "generated (properties held)": {t: float(c["generated"]) for t, c in counts.items()},
        "applied": {t: float(c["applied"]) for t, c in counts.items()},
        "dead-lettered": {t: float(c["dead_lettered"]) for t, c in counts.items()},
    }
    if failures:
        bars["in failed streams"] = {t: float(n) for t, n in run.failed_records.items()}
    save(args.out, result, bars, ylabel="records", title="Fuzzed records through the processors")
    for topic, c in counts.items():
        reasons = ", ".join(f"{r} {n}" for r, n in c["dead_lettered_by_reason"].items())
        print(f"{topic:11} generated {c['generated']:6}  applied {c['applied']:6}  "
              f"dead-lettered {c['dead_lettered']:6}  ({reasons})")  # fmt: skip
    print(f"{total} records in {seconds:.1f} s; properties held: {not failures}")
    for kind, n in run.failure_counts.most_common():
        print(f"FAILED x{n}: {kind}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
