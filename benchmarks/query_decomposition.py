"""Query decomposition against the hand-annotated query set, per split, and its cost.

Scores `models.interest.query.decompose` on ``tests/fixtures/queries.jsonl``
with `models.interest.query.score_decomposition` (phrase-level precision and
recall with polarity, Jaccard >= 0.5 on content tokens, one-to-one), for the
``dev`` split (written before the rules were tuned), the ``holdout`` split
(written after, the rules left unchanged since) and both together. It also
times one decomposition, and lists every case that is not matched exactly,
so a regression shows which query broke.

Usage::

    python benchmarks/query_decomposition.py [--cases tests/fixtures/queries.jsonl]
        [--out benchmarks/results/query_decomposition.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from models.interest.query import QueryError, decompose, match_count, score_decomposition

from _results import RESULTS, save

CASES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "queries.jsonl"
SPLITS = ("dev", "holdout")


def load_cases(path: Path) -> list[dict]:
    """The annotated cases, one JSON object a line (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _predict(query: str) -> list[tuple[str, str]]:
    try:
        return [(p.text, p.sign) for p in decompose(query)]
    except QueryError:
        return []


def mismatches(cases: list[dict]) -> list[dict]:
    """The cases whose predicted phrases do not match the annotation exactly."""
    out = []
    for case in cases:
        pred = _predict(case["query"])
        gold = [(p["text"], p["polarity"]) for p in case["phrases"]]
        if not (match_count(pred, gold) == len(pred) == len(gold)):
            out.append(
                {
                    "query": case["query"],
                    "split": case.get("split", "dev"),
                    "predicted": [{"text": t, "polarity": s} for t, s in pred],
                    "expected": case["phrases"],
                }
            )
    return out


def seconds_per_query(cases: list[dict], repeats: int = 5) -> float:
    """The best of ``repeats`` passes over all queries, seconds per query."""
    queries = [c["query"] for c in cases]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for q in queries:
            _predict(q)
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--out", type=Path, default=RESULTS / "query_decomposition.json")
    args = parser.parse_args()

    cases = load_cases(args.cases)
    scores = {
        split: score_decomposition([c for c in cases if c.get("split", "dev") == split])
        for split in SPLITS
    }
    scores["total"] = score_decomposition(cases)
    report = {
        "cases": str(args.cases),
        "match": "same polarity and Jaccard >= 0.5 on content tokens, one to one, best first",
        "scores": scores,
        "seconds_per_query": seconds_per_query(cases),
        "mismatches": mismatches(cases),
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
    }
    save(
        args.out,
        report,
        {
            metric: {split: s[metric] for split, s in scores.items()}
            for metric in ("precision", "recall", "f1")
        },
        ylabel="phrase-level score",
        title="Query decomposition vs hand annotation",
    )
    for split, s in scores.items():
        print(
            f"{split:8s} n={s['n']:3d}  precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
            f"f1 {s['f1']:.3f}  exact {s['exact']:.3f}"
        )
    print(
        f"{report['seconds_per_query'] * 1e6:.1f} us/query, {len(report['mismatches'])} mismatches"
    )


if __name__ == "__main__":
    main()
