"""Interest shift detection on synthetic users with known shifts, and its rate on MovieLens-100K.

    .venv/bin/python benchmarks/shift_detection.py [--quick] [--users 1000] [--events 120]
        [--seed 2] [--embedding encoder|tags] [--encoder-cache DIR]
        [--data /work/shared/data/ml-100k] [--no-movielens] [--jobs 1]
        [--out benchmarks/results/shift_detection.json]

**Workload.** `streams.workload.synthetic_workload` with ``shift_kinds``
(sudden, gradual, recurring) and ``drift_fraction=0.75``: a quarter of the
users never shift, the others are split evenly (at random) over the three
kinds; a recurring user has two true shifts (the move, kind ``recurring``,
and the move back, kind ``return``). ``--events`` events per user,
``--events`` items per tag (so nobody runs out of a tag), gradual ramps of
20 events. Items are embedded by the ONNX all-MiniLM-L6-v2 export
(``--embedding encoder``, cached; title and detail sentence) or, with
``--embedding tags``, by a deterministic non-encoder embedding: each tag a
seeded random direction plus as much seeded noise per item (same-tag cosine
about 0.5, other tags about 0, close to what the encoder gives these titles).

**Replay.** Each user's events go through `models.core.step` one event at
a time (default `models.core.CoreParams`), so that the state after every
event is seen, where the workers will compute the signal. For each event
with a positive weight these signals are recorded (no signal: not observed):

* ``block`` (the chosen one, `models.interest.shift.block_distance`): on the
  window after the event, the cosine distance between the direction of the
  last 5 positive events and that of the 15 before them;
* ``consecutive`` (the plain baseline, `models.interest.shift.consecutive_distance`):
  the cosine distance between the item and the previous positive event's item;
* ``surprise``: 1 - cosine of the item with the user's mid-term direction
  before the event (`models.core.mid_direction`: the interests, weighted);
* ``short_long``: 1 - cosine of the window's direction with the long-term
  profile, after the event.

**Detectors.** The chosen one is `models.interest.shift.observe` (a compact
Page-Hinkley, ``mode="up"``, settings `ShiftSpec`); the baseline is the same
detector with the same settings on ``consecutive``. For the choice, river's
``PageHinkley`` (same settings: its flags must equal the port's), ``ADWIN``
(``delta=0.9, clock=1, grace_period=5, min_window_length=3``) and ``KSWIN``
(``alpha=0.001, window_size=30, stat_size=8``) run on every signal, each in
the best setting found while tuning (on ``--seed 1``; the default run is
``--seed 2``, so the figures are not on the tuning users). Every detector
flags, resets and goes on.

**Measures.** Every `Drift` record is a true shift starting at its event
index ``s`` (the first event the shift touches; for a gradual one, the first
of its ramp). Its tolerance window is events ``[s, min(s + 30, s'))``, with
``s'`` the user's next shift start. A shift is *detected* when a flag falls
in its window; its *delay* is ``f - s + 1`` for the first such flag ``f``:
the events seen from the start of the shift up to and including the one
that raised the flag (every event of the user counts, observed or not). A
*false alarm* is a flag outside every tolerance window; a second flag in a
window already detected is a *repeat* (not a false alarm; also reported,
and ``strict_false_alarms_per_1000`` counts both). Rates are per 1,000 events
of all users (shifting or not), every event counted. Targets: >= 95%
detected, median delay <= 8 events, <= 0.5 false alarms per 1,000 events.

**MovieLens-100K.** Every user's ratings, in time order, through the same
replay (rating weights: 1 and 2 stars are negative, not observed), items
embedded as the other benchmarks do (`models.evaluation.baselines.encode_catalogue`;
with ``--embedding tags`` a deterministic genre embedding: the sum of seeded
genre directions plus seeded noise). Reported: flags per 1,000 events and
the share of users with at least one flag, for the chosen detector and the
baseline; and for a few flags, the user's top genres before and after
(`models.catalogue.Catalogue.tag_weights` of the reference and recent blocks).

Writes ``--out`` (JSON) and a bar chart beside it (``.png``). ``--quick``
(40 users x 60 events, 10 MovieLens users, river's detectors on the chosen
signal only) runs in about 30 s on a loaded two-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.behaviour import Behaviour, event_weight
from models.catalogue import Catalogue
from models.core import CoreParams, mid_direction, step
from models.interest import levels
from models.interest.shift import (
    DetectorState,
    ShiftSpec,
    block_distance,
    blocks,
    consecutive_distance,
    observe,
)
from models.window import window_vector

from _results import RESULTS, save

ML100K = Path("/work/shared/data/ml-100k")
SIGNALS = ("block", "consecutive", "surprise", "short_long")
TOLERANCE = 30
KINDS = ("sudden", "gradual", "recurring", "return")

# -- embeddings -----------------------------------------------------------------------------


def tag_embedding(labels: Sequence[Sequence[str]], dim: int = 384, seed: int = 0) -> np.ndarray:
    """Deterministic item vectors: the sum of each label's seeded direction, plus as much noise.

    >>> v = tag_embedding([("a",), ("a",), ("b",)])
    >>> bool(0.4 < v[0] @ v[1] < 0.6), bool(abs(v[0] @ v[2]) < 0.15)
    (True, True)
    """
    names = sorted({g for gs in labels for g in gs})
    rng = np.random.default_rng(seed)
    centres = {g: rng.standard_normal(dim) / np.sqrt(dim) for g in names}
    out = np.zeros((len(labels), dim), dtype=np.float32)
    for i, gs in enumerate(labels):
        base = sum((centres[g] for g in gs), np.zeros(dim))
        base = base / max(np.linalg.norm(base), 1e-12)
        noise = rng.standard_normal(dim) / np.sqrt(dim)
        v = base + noise
        out[i] = v / np.linalg.norm(v)
    return out


def encoder_embedding(texts: list[str], encoder_cache: Path | None) -> np.ndarray:
    from models.encoder import ensure_exported
    from models.encoder.embedding_cache import cached_embeddings

    return cached_embeddings(texts, ensure_exported(encoder_cache))


def build_catalogue(ids: Sequence[str], vectors: np.ndarray, tags: Sequence[Sequence[str]]):
    cat = Catalogue(vectors.shape[1])
    for item_id, vec, t in zip(ids, vectors, tags, strict=True):
        cat.upsert(item_id, vec, tuple(t))
    return cat


# -- replay ---------------------------------------------------------------------------------

_CATALOGUE: Catalogue | None = None  # set before the worker processes fork
_SPEC = ShiftSpec()


def replay_user(events: Sequence[Behaviour]) -> dict[str, np.ndarray]:
    """Per event: the four signals (NaN where not observed) and the event weight."""
    cat, params = _CATALOGUE, CoreParams()
    assert cat is not None
    n = len(events)
    out = {name: np.full(n, np.nan) for name in SIGNALS}
    weights = np.zeros(n)
    state, previous = None, None
    for i, event in enumerate(events):
        vec = cat.vector(event.item_id)
        weight = event_weight(event, params.type_weights)
        weights[i] = weight
        before = mid_direction(state, params) if state is not None else np.zeros(0)
        state = step(state, [event], cat, event.ts, params).state
        if weight <= 0 or vec is None:
            continue
        if before.shape == vec.shape and before.any():
            out["surprise"][i] = 1.0 - float(before @ vec) / max(float(np.linalg.norm(vec)), 1e-12)
        short, long = window_vector(state.window, cat), levels.unit(state.long_term)
        if short.any() and long.any():
            out["short_long"][i] = 1.0 - float(short @ long)
        for name, value in (
            ("block", block_distance(state.window, cat, _SPEC)),
            ("consecutive", consecutive_distance(previous, vec)),
        ):
            if value is not None:
                out[name][i] = value
        previous = vec
    out["weight"] = weights
    return out


def replay(
    streams: dict[str, list[Behaviour]], cat: Catalogue, jobs: int
) -> dict[str, dict[str, np.ndarray]]:
    global _CATALOGUE
    _CATALOGUE = cat
    users = list(streams)
    if jobs <= 1:
        results = [replay_user(streams[u]) for u in users]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(replay_user, [streams[u] for u in users], chunksize=8)
    return dict(zip(users, results, strict=True))


# -- detectors ------------------------------------------------------------------------------


def port_flags(signal: np.ndarray, spec: ShiftSpec) -> list[int]:
    """Event indices where `observe` flags, fed the observed (finite) values in order."""
    state, flags = DetectorState(), []
    for i in np.flatnonzero(np.isfinite(signal)):
        state, flagged = observe(state, float(signal[i]), spec)
        if flagged:
            flags.append(int(i))
    return flags


def river_flags(signal: np.ndarray, make: Callable[[], object]) -> list[int]:
    detector, flags = make(), []
    for i in np.flatnonzero(np.isfinite(signal)):
        detector.update(float(signal[i]))
        if detector.drift_detected:
            flags.append(int(i))
    return flags


def river_detectors(spec: ShiftSpec) -> dict[str, Callable[[], object]]:
    from river import drift

    return {
        "river.PageHinkley": lambda: drift.PageHinkley(
            min_instances=spec.min_instances,
            delta=spec.delta,
            threshold=spec.threshold,
            alpha=spec.alpha,
            mode=spec.mode,
        ),
        "river.ADWIN": lambda: drift.ADWIN(delta=0.9, clock=1, grace_period=5, min_window_length=3),
        "river.KSWIN": lambda: drift.KSWIN(alpha=0.001, window_size=30, stat_size=8, seed=1),
    }


# -- measures -------------------------------------------------------------------------------


def score(
    flags: dict[str, list[int]],
    truth: dict[str, list[tuple[int, str]]],
    n_events: dict[str, int],
    tolerance: int = TOLERANCE,
) -> dict[str, object]:
    """Detection share, delays and false alarms (module docstring), overall and per kind.

    >>> s = score({"a": [12, 14, 50], "b": [3]}, {"a": [(10, "sudden")]}, {"a": 60, "b": 40})
    >>> s["detected"], s["delay_median"], s["false_alarms"], s["repeats"]
    (1.0, 3.0, 2, 1)
    """
    delays: dict[str, list[int]] = {k: [] for k in KINDS}
    totals: dict[str, int] = {k: 0 for k in KINDS}
    false_alarms = repeats = 0
    quiet_alarms = quiet_events = 0  # users who never shift
    for user, fs in flags.items():
        shifts = sorted(truth.get(user, []))
        windows = [
            (s, min(s + tolerance, shifts[j + 1][0]) if j + 1 < len(shifts) else s + tolerance, k)
            for j, (s, k) in enumerate(shifts)
        ]
        for _, _, kind in windows:
            totals[kind] = totals.get(kind, 0) + 1
            delays.setdefault(kind, [])
        hit: set[int] = set()
        for f in fs:
            inside = [j for j, (s, e, _) in enumerate(windows) if s <= f < e]
            if not inside:
                false_alarms += 1
            elif inside[0] in hit:
                repeats += 1
            else:
                hit.add(inside[0])
                s, _, kind = windows[inside[0]]
                delays[kind].append(f - s + 1)
        if not shifts:
            quiet_alarms += len(fs)
            quiet_events += n_events[user]
    events = sum(n_events[u] for u in flags)

    def summary(ds: list[int], total: int) -> dict[str, float | int | None]:
        return {
            "shifts": total,
            "detected": len(ds) / total if total else None,
            "delay_median": float(np.median(ds)) if ds else None,
            "delay_p90": float(np.percentile(ds, 90)) if ds else None,
        }

    every = [d for ds in delays.values() for d in ds]
    out: dict[str, object] = {
        **summary(every, sum(totals.values())),
        "false_alarms": false_alarms,
        "repeats": repeats,
        "events": events,
        "false_alarms_per_1000": 1000 * false_alarms / events if events else 0.0,
        "strict_false_alarms_per_1000": 1000 * (false_alarms + repeats) / events if events else 0.0,
        "no_shift_users_false_alarms_per_1000": (
            1000 * quiet_alarms / quiet_events if quiet_events else None
        ),
        "flags_per_1000": 1000 * sum(len(f) for f in flags.values()) / events if events else 0.0,
    }
    out["per_kind"] = {k: summary(delays[k], totals[k]) for k in totals if totals[k]}
    return out


def meets_targets(s: dict) -> bool:
    return (
        s["detected"] is not None
        and s["detected"] >= 0.95
        and s["delay_median"] is not None
        and s["delay_median"] <= 8
        and s["false_alarms_per_1000"] <= 0.5
    )


# -- runs -----------------------------------------------------------------------------------


def to_behaviours(events: Iterable[dict]) -> dict[str, list[Behaviour]]:
    streams: dict[str, list[Behaviour]] = {}
    for e in events:
        event = Behaviour(
            e["user_id"],
            e["item_id"],
            e["type"],
            float(e["ts"]),
            e["event_id"],
            rating=e.get("rating"),
        )
        streams.setdefault(e["user_id"], []).append(event)
    return streams


def synthetic_run(args: argparse.Namespace) -> tuple[dict, dict]:
    from streams.workload import SHIFT_KINDS, synthetic_workload

    started = time.perf_counter()
    work = synthetic_workload(
        users=args.users,
        events_per_user=args.events,
        items_per_tag=args.events,
        drift_fraction=0.75,
        shift_kinds=SHIFT_KINDS,
        seed=args.seed,
    )
    tags = [i["tags"] for i in work.items]
    if args.embedding == "encoder":
        vectors = encoder_embedding([i["text"] for i in work.items], args.encoder_cache)
    else:
        vectors = tag_embedding(tags)
    cat = build_catalogue([i["item_id"] for i in work.items], vectors, tags)
    streams = to_behaviours(work.events)
    signals = replay(streams, cat, args.jobs)
    replay_s = time.perf_counter() - started
    truth: dict[str, list[tuple[int, str]]] = {}
    for d in work.drifts:
        truth.setdefault(d.user_id, []).append((d.event_index, d.kind))
    n_events = {u: len(evs) for u, evs in streams.items()}

    spec = ShiftSpec()
    chosen = {u: port_flags(s["block"], spec) for u, s in signals.items()}
    baseline = {u: port_flags(s["consecutive"], spec) for u, s in signals.items()}
    result = {
        "workload": work.description,
        "users_by_kind": _users_by_kind(work.drifts, args.users),
        "replay_s": round(replay_s, 1),
        "chosen": score(chosen, truth, n_events),
        "baseline": score(baseline, truth, n_events),
    }
    result["chosen"]["meets_targets"] = meets_targets(result["chosen"])
    result["baseline"]["meets_targets"] = meets_targets(result["baseline"])

    # The choice: every detector on every signal (river's on the chosen signal only with --quick).
    comparison: dict[str, dict[str, dict]] = {}
    started = time.perf_counter()
    parity = True
    for name, make in river_detectors(spec).items():
        for sig in SIGNALS if not args.quick else ("block",):
            flags = {u: river_flags(s[sig], make) for u, s in signals.items()}
            comparison.setdefault(name, {})[sig] = _brief(score(flags, truth, n_events))
            if name == "river.PageHinkley":
                port = {u: port_flags(s[sig], spec) for u, s in signals.items()}
                parity = parity and port == flags
    for sig in SIGNALS:
        flags = {u: port_flags(s[sig], spec) for u, s in signals.items()}
        comparison.setdefault("shift.observe (port)", {})[sig] = _brief(
            score(flags, truth, n_events)
        )
    result["comparison"] = comparison
    result["port_equals_river_page_hinkley"] = parity
    result["detectors_s"] = round(time.perf_counter() - started, 1)
    return result, signals


def _users_by_kind(drifts, users: int) -> dict[str, int]:
    kinds: dict[str, str] = {}
    for d in drifts:
        kinds.setdefault(d.user_id, d.kind)
    out = {k: sum(1 for v in kinds.values() if v == k) for k in ("sudden", "gradual", "recurring")}
    out["never"] = users - len(kinds)
    return out


def _brief(s: dict) -> dict:
    keys = ("detected", "delay_median", "delay_p90", "false_alarms_per_1000", "repeats")
    return {k: s[k] for k in keys} | {"meets_targets": meets_targets(s)}


def movielens_run(args: argparse.Namespace) -> dict:
    from models.datasets import item_texts, load_movielens

    started = time.perf_counter()
    log = load_movielens(args.data, max_users=args.ml_users)
    labels = [g or ("(none)",) for g in log.genres]
    if args.embedding == "encoder":
        vectors = encoder_embedding(list(item_texts(log)), args.encoder_cache)
    else:
        vectors = tag_embedding(labels)
    cat = build_catalogue(log.item_ids, vectors, labels)
    streams: dict[str, list[Behaviour]] = {}
    for u, (items, ts, ratings) in enumerate(
        zip(log.sequences(), log.sequence_ts(), log.sequence_ratings(), strict=True)
    ):
        user = log.user_ids[u]
        streams[user] = [
            Behaviour(user, log.item_ids[i], "rating", float(t), f"ml-{user}-{k}", rating=float(r))
            for k, (i, t, r) in enumerate(zip(items, ts, ratings, strict=True))
        ]
    signals = replay(streams, cat, args.jobs)
    spec = ShiftSpec()
    out: dict[str, object] = {
        "users": len(streams),
        "events": sum(len(v) for v in streams.values()),
        "observed_events": int(sum(np.isfinite(s["block"]).sum() for s in signals.values())),
        "embedding": "all-MiniLM-L6-v2 (title and genres)"
        if args.embedding == "encoder"
        else "deterministic genre embedding (not the encoder)",
    }
    for name, sig in (("chosen", "block"), ("baseline", "consecutive")):
        flags = {u: port_flags(s[sig], spec) for u, s in signals.items()}
        total = sum(len(f) for f in flags.values())
        out[name] = {
            "flags": total,
            "flags_per_1000_events": 1000 * total / out["events"],
            "users_with_a_flag": sum(1 for f in flags.values() if f) / len(flags),
            "flags_per_user_median": float(np.median([len(f) for f in flags.values()])),
        }
        if name == "chosen":
            out["examples"] = _examples(streams, flags, cat, spec)
    out["block_signal"] = _quantiles(np.concatenate([s["block"] for s in signals.values()]))
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _examples(streams, flags, cat: Catalogue, spec: ShiftSpec, n: int = 3) -> list[dict]:
    """The top genres before and after the first flag of the first ``n`` flagged users."""
    from models.state import WindowEntry
    from models.window import slide

    params, out = CoreParams(), []
    for user, fs in flags.items():
        if not fs or len(out) >= n:
            continue
        window: tuple[WindowEntry, ...] = ()
        for event in streams[user][: fs[0] + 1]:
            weight = event_weight(event, params.type_weights)
            window = slide(window, WindowEntry(event.item_id, event.type, event.ts, weight),
                           params.window)  # fmt: skip
        pair = blocks(window, cat, spec)
        if pair is None:
            continue
        recent, reference = pair
        out.append({
            "user": user,
            "event_index": fs[0],
            "before": [t for t, _ in cat.tag_weights(reference.astype(np.float32))],
            "after": [t for t, _ in cat.tag_weights(recent.astype(np.float32))],
        })  # fmt: skip
    return out


def _quantiles(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    return {f"p{q}": round(float(np.percentile(x, q)), 4) for q in (10, 50, 90, 99)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=120, help="events (and items a tag) per user")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--embedding", choices=("encoder", "tags"), default="encoder")
    parser.add_argument("--encoder-cache", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=ML100K)
    parser.add_argument("--no-movielens", action="store_true")
    parser.add_argument("--ml-users", type=int, default=None, help="first N MovieLens users")
    parser.add_argument("--jobs", type=int, default=1, help="replay processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "shift_detection.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.events = min(args.users, 40), min(args.events, 60)
        args.ml_users = args.ml_users or 10

    from threadpoolctl import threadpool_limits

    # Many tiny matrix products: a multi-threaded BLAS makes them slower, not faster.
    threadpool_limits(1)
    started, spec = time.perf_counter(), ShiftSpec()
    synthetic, _ = synthetic_run(args)
    result: dict[str, object] = {
        "command": " ".join(["benchmarks/shift_detection.py", *(argv or sys.argv[1:])]),
        "spec": asdict(spec),
        "signal": f"block: 1 - cos(last {spec.recent} positive window events, "
        f"the {spec.reference} before them)",
        "baseline": "the same detector on 1 - cos(item, previous positive item)",
        "tolerance_events": TOLERANCE,
        "embedding": args.embedding,
        "synthetic": synthetic,
    }
    if not args.no_movielens and (args.data / "u.data").is_file():
        result["movielens"] = movielens_run(args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, jobs={args.jobs}"
    _print(result)
    bars = {
        label: {
            "detected %": 100 * (s["detected"] or 0.0),
            "median delay": s["delay_median"] or 0.0,
            "p90 delay": s["delay_p90"] or 0.0,
            "false alarms /1000": s["false_alarms_per_1000"],
        }
        for label, s in (
            ("block distance (chosen)", synthetic["chosen"]),
            ("consecutive items (baseline)", synthetic["baseline"]),
        )
    }
    save(
        args.out,
        result,
        bars,
        ylabel="value",
        title=f"Shift detection, {synthetic['workload'].split(',')[0]} (Page-Hinkley)",
    )
    return result


def _print(result: dict) -> None:
    syn = result["synthetic"]
    print(syn["workload"], syn["users_by_kind"])
    for name in ("chosen", "baseline"):
        s = syn[name]
        print(
            f"{name:9s} detected {s['detected']:.3f}  delay median {s['delay_median']} "
            f"p90 {s['delay_p90']}  false alarms/1000 {s['false_alarms_per_1000']:.3f} "
            f"(strict {s['strict_false_alarms_per_1000']:.3f})  targets met: {s['meets_targets']}"
        )
        for kind, k in s["per_kind"].items():
            print(
                f"    {kind:9s} {k['shifts']:4d} shifts  detected {k['detected']:.3f}  "
                f"median {k['delay_median']}  p90 {k['delay_p90']}"
            )
    for det, per in syn["comparison"].items():
        for sig, s in per.items():
            d = "-" if s["detected"] is None else f"{s['detected']:.3f}"
            print(
                f"  {det:22s} {sig:12s} detected {d}  median {s['delay_median']}  "
                f"p90 {s['delay_p90']}  fa/1000 {s['false_alarms_per_1000']:.3f}"
            )
    print("port equals river.PageHinkley:", syn["port_equals_river_page_hinkley"])
    ml = result.get("movielens")
    if ml:
        for name in ("chosen", "baseline"):
            m = ml[name]
            print(
                f"movielens {name:9s} {m['flags_per_1000_events']:.2f} flags/1000 events, "
                f"{100 * m['users_with_a_flag']:.1f}% of {ml['users']} users flagged"
            )
    print(f"total {result['seconds']} s")


if __name__ == "__main__":
    main()
