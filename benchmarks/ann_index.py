"""Approximate ranking for large catalogues: which index library, and what it costs the core.

Two parts, one run, same machine:

* ``libraries``: four maintained ANN libraries from PyPI (hnswlib, usearch,
  faiss-cpu, voyager), each as an HNSW graph of the same degree and build
  width, on the same seeded catalogue of clustered unit vectors (``--items``
  rows of 384 dims, sentence-embedding-like: a common component, a few
  hundred topics, per-item noise). Per library: bulk build time, the cost
  of an online change (update an item's vector, remove one, add one; or
  "unsupported"), query latency at k=10 and at k=``--candidates`` (the
  core's candidate fetch) and recall@10 against brute force.
* ``core``: the core's own ranking (`models.core.rank_many`) of user states
  built by `models.core.step` from `streams.workload.synthetic_workload`
  events, on a catalogue of ``--items`` rows (the workload's items inside
  a bigger synthetic catalogue), exact against the index path: recall@10
  of the index path against the exact list, and the per-user ranking
  latency of both, one user at a time and a micro-batch at once.
* ``text`` (not in ``all``): the same comparison on the catalogue
  ``interest-stream bench --catalogue-size N`` ranks against: the load
  workload's 480 items and ``--items`` - 480 generated ones
  (`streams.workload.catalogue_items`), MiniLM vectors of their texts
  (`streams.loadtest.encode_items`, cached on disk once encoded), at the
  default and the swept candidate counts.

Usage::

    python benchmarks/ann_index.py [--part all|libraries|core|text] [--items 100000] [--users 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models import ann
from models.ann import AnnSpec
from models.behaviour import Behaviour
from models.catalogue import Catalogue
from models.core import CoreParams, prepare, rank, rank_exact, rank_many
from models.ranking import Ranked
from models.state import UserState
from streams.workload import TAGS, Workload, synthetic_workload

from _results import RESULTS, save

DIM = 384
#: Graph degree and build width used for every library (the core's defaults).
M, EF_CONSTRUCTION = 16, 100


class Space:
    """A seeded space of sentence-embedding-like unit vectors, drawn by topic.

    A common component (MiniLM's vectors share one: their mean cosine is
    about 0.1-0.2), one of ``topics`` directions per item at a random
    strength, and isotropic noise; unit length.
    """

    def __init__(self, seed: int, dim: int = DIM, topics: int = 400, noise: float = 0.9) -> None:
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.common = _unit(self.rng.standard_normal(dim).astype(np.float32))
        self.centres = _unit(self.rng.standard_normal((topics, dim)).astype(np.float32))

    def sample(self, which: np.ndarray) -> np.ndarray:
        """One vector per entry of ``which`` (topic numbers)."""
        n, dim = len(which), self.centres.shape[1]
        strength = self.rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
        noise = self.rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
        return _unit(0.4 * self.common + strength * self.centres[which] + self.noise * noise)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / norm).astype(np.float32)


def clustered(n: int, seed: int, dim: int = DIM, topics: int = 400) -> np.ndarray:
    """``n`` vectors of a `Space`, topics drawn uniformly."""
    space = Space(seed, dim, topics)
    return space.sample(space.rng.integers(topics, size=n))


def queries_near(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Unit queries like a user's interest: the normalised mean of a few items of one topic."""
    rng = np.random.default_rng(seed)
    picks = x[rng.integers(len(x), size=(n, 1))]
    q = picks[:, 0] + 0.3 * rng.standard_normal((n, x.shape[1])).astype(np.float32) / np.sqrt(
        x.shape[1]
    )
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return part


def recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's true top-``k`` that ``found`` (any width) holds."""
    return float(
        np.mean(
            [
                len(set(f.tolist()) & set(t[:k].tolist())) / k
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


# -- the libraries, behind one small shape ----------------------------------------


class _Lib:
    name = ""

    def build(self, x: np.ndarray, threads: int) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        raise NotImplementedError

    def update(self, key: int, vec: np.ndarray) -> None:
        raise NotImplementedError

    def remove(self, key: int) -> None:
        raise NotImplementedError

    def add(self, key: int, vec: np.ndarray) -> None:
        raise NotImplementedError


class _Hnswlib(_Lib):
    name = "hnswlib"

    def build(self, x: np.ndarray, threads: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(len(x) + 10_000, M=M, ef_construction=EF_CONSTRUCTION, random_seed=0)
        self.index.add_items(x, np.arange(len(x)), num_threads=threads)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.set_ef(max(ef, k))
        return self.index.knn_query(q, k=k, num_threads=1)[0]

    def update(self, key: int, vec: np.ndarray) -> None:
        self.index.add_items(vec[None], [key], num_threads=1)  # same label: moved in place

    def remove(self, key: int) -> None:
        self.index.mark_deleted(key)

    def add(self, key: int, vec: np.ndarray) -> None:
        self.index.add_items(vec[None], [key], num_threads=1)


class _Usearch(_Lib):
    name = "usearch"

    def build(self, x: np.ndarray, threads: int) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=x.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
        )
        self.index.add(np.arange(len(x)), x, threads=threads)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = max(ef, k)
        return self.index.search(q, k, threads=1).keys

    def update(self, key: int, vec: np.ndarray) -> None:
        self.index.remove(key)  # no in-place update: remove, then add under the same key
        self.index.add(key, vec)

    def remove(self, key: int) -> None:
        self.index.remove(key)

    def add(self, key: int, vec: np.ndarray) -> None:
        self.index.add(key, vec)


class _Faiss(_Lib):
    name = "faiss-cpu"

    def build(self, x: np.ndarray, threads: int) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(x)
        faiss.omp_set_num_threads(1)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.hnsw.efSearch = max(ef, k)
        return self.index.search(q, k)[1]

    def update(self, key: int, vec: np.ndarray) -> None:
        raise NotImplementedError("IndexHNSWFlat cannot change or remove a vector (rebuild)")

    def remove(self, key: int) -> None:
        raise NotImplementedError("IndexHNSWFlat cannot remove a vector (rebuild)")

    def add(self, key: int, vec: np.ndarray) -> None:
        self.index.add(vec[None])  # sequential ids only: key must be ntotal


class _Voyager(_Lib):
    name = "voyager"

    def build(self, x: np.ndarray, threads: int) -> None:
        from voyager import Index, Space

        self.index = Index(
            Space.InnerProduct,
            num_dimensions=x.shape[1],
            M=M,
            ef_construction=EF_CONSTRUCTION,
            random_seed=0,
            max_elements=len(x) + 10_000,
        )
        self.index.add_items(x, ids=list(range(len(x))), num_threads=threads)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.index.query(q, k=k, num_threads=1, query_ef=max(ef, k))[0]

    def update(self, key: int, vec: np.ndarray) -> None:
        self.index.add_item(vec, id=key)  # an existing id: moved in place (hnswlib underneath)

    def remove(self, key: int) -> None:
        self.index.mark_deleted(key)

    def add(self, key: int, vec: np.ndarray) -> None:
        self.index.add_item(vec, id=key)


LIBRARIES: dict[str, Callable[[], _Lib]] = {
    "hnswlib": _Hnswlib,
    "usearch": _Usearch,
    "faiss-cpu": _Faiss,
    "voyager": _Voyager,
}


def _timed(fn: Callable[[], object], reps: int) -> float | None:
    """Mean seconds of ``fn`` over ``reps`` calls; None when the library cannot do it."""
    try:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as exc:
        print(f"  unsupported: {type(exc).__name__}: {exc}", flush=True)
        return None


def compare_libraries(
    n: int, n_queries: int, candidates: int, threads: int, names: list[str]
) -> dict[str, dict[str, object]]:
    x = clustered(n, seed=1)
    q = queries_near(x, n_queries, seed=2)
    t = time.perf_counter()
    truth = exact_top(x, q, 10)
    truth = np.array([row[np.argsort(-(x[row] @ qq))] for row, qq in zip(truth, q, strict=True)])
    brute_s = (time.perf_counter() - t) / n_queries
    out: dict[str, dict[str, object]] = {
        "brute-force": {"query_k10_s": brute_s, "recall_at_10": 1.0}
    }
    rng = np.random.default_rng(3)
    for name in names:
        lib = LIBRARIES[name]()
        start = time.perf_counter()
        lib.build(x, threads)
        build_s = time.perf_counter() - start
        row: dict[str, object] = {"build_s": build_s}
        for k, ef in ((10, 64), (candidates, candidates)):
            start = time.perf_counter()
            found = lib.search(q, k, ef)
            row[f"query_k{k}_s"] = (time.perf_counter() - start) / n_queries
            row[f"recall_at_10_k{k}"] = recall(np.asarray(found), truth)
        row.update(_online_changes(lib, n, rng))
        out[name] = row
        print(
            f"{name:10s} build {build_s:6.1f}s  k10 {row['query_k10_s'] * 1e6:6.0f}us "
            f"r@10 {row['recall_at_10_k10']:.3f}  k{candidates} "
            f"{row[f'query_k{candidates}_s'] * 1e6:6.0f}us r@10 "
            f"{row[f'recall_at_10_k{candidates}']:.3f}  update {row['update_s']} "
            f"remove {row['remove_s']} add {row['add_s']}",
            flush=True,
        )
    return out


def _online_changes(lib: _Lib, n: int, rng: np.random.Generator) -> dict[str, float | None]:
    """Seconds per update of an item's vector, per removal, per new item (None: cannot)."""
    fresh = clustered(2, seed=4)
    keys = iter(rng.choice(n, size=200, replace=False).tolist())
    new_keys = iter(range(n, n + 100))
    return {
        "update_s": _timed(lambda: lib.update(next(keys), fresh[0]), 100),
        "remove_s": _timed(lambda: lib.remove(next(keys)), 100),
        "add_s": _timed(lambda: lib.add(next(new_keys), fresh[1]), 100),
    }


# -- the core's ranking, exact against the index ----------------------------------


def core_catalogue(work: Workload, space: Space) -> Catalogue:
    """The workload's items, each a vector of its tag's topic (topic ``j`` for tag ``j``)."""
    cat = Catalogue(DIM)
    topic = {tag: j for j, tag in enumerate(TAGS)}
    vectors = space.sample(np.array([topic[it["tags"][0]] for it in work.items]))
    for it, vec in zip(work.items, vectors, strict=True):
        cat.upsert(it["item_id"], vec, it["tags"])
    return cat


def grow(cat: Catalogue, space: Space, size: int) -> None:
    """Filler items over all the space's topics (the workload's tags among them) up to ``size``."""
    missing = size - len(cat)
    if missing <= 0:
        return
    which = space.rng.integers(len(space.centres), size=missing)
    start = len(cat)
    for j, vec in enumerate(space.sample(which)):
        cat.upsert(f"f{start + j:07d}", vec)


def user_states(work: Workload, cat: Catalogue, params: CoreParams) -> list[UserState]:
    """Each workload user's state after all their events, by `models.core.prepare`.

    Only the first half of `step`: the ranking after every event is not
    what is measured, and the states do not depend on it.
    """
    states: dict[str, UserState] = {}
    for e in work.events:
        event = Behaviour(e["user_id"], e["item_id"], e["type"], e["ts"], e["event_id"])
        prepared = prepare(states.get(event.user_id), [event], cat, params)
        state = prepared.state if prepared.result is None else prepared.result.state
        if state is not None:
            states[event.user_id] = state
    return [states[u] for u in sorted(states)]


def _stats(seconds: list[float]) -> dict[str, float]:
    arr = np.array(seconds)
    return {
        "median_ms": float(np.median(arr) * 1e3),
        "p99_ms": float(np.percentile(arr, 99) * 1e3),
        "mean_ms": float(arr.mean() * 1e3),
    }


def _per_user(
    fn: Callable[[UserState, Catalogue, CoreParams], list[Ranked]],
    states: list[UserState],
    cat: Catalogue,
    params: CoreParams,
) -> tuple[list[list[Ranked]], list[float]]:
    """Each user's list by ``fn`` alone, and the seconds it took."""
    lists, times = [], []
    for state in states:
        start = time.perf_counter()
        lists.append(fn(state, cat, params))
        times.append(time.perf_counter() - start)
    return lists, times


def _recall(found: list[list[Ranked]], truth: list[list[Ranked]]) -> float:
    shares = [
        len({i for i, _ in f} & {i for i, _ in t}) / len(t)
        for f, t in zip(found, truth, strict=True)
        if t
    ]
    return float(np.mean(shares))


def compare_core(
    sizes: list[int], users: int, sweep: list[int], seed: int, noise: float
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Exact against index ranking at each catalogue size; the candidate sweep at the last."""
    work = synthetic_workload(users=users, events_per_user=60, seed=seed)
    space = Space(seed + 100, noise=noise)
    cat = core_catalogue(work, space)
    exact = CoreParams(ann=AnnSpec(min_items=0))
    states = user_states(work, cat, exact)
    rows = []
    for size in sizes:
        grow(cat, space, size)
        fast = CoreParams(ann=AnnSpec(min_items=1))
        start = time.perf_counter()
        ann.index_for(cat, fast.ann)
        sync_s = time.perf_counter() - start
        start = time.perf_counter()
        cat.moments()
        moments_s = time.perf_counter() - start
        truth, exact_t = _per_user(rank_exact, states, cat, exact)
        found, index_t = _per_user(rank, states, cat, fast)
        start = time.perf_counter()
        batched = rank_many(states, cat, fast)
        batch_s = (time.perf_counter() - start) / len(states)
        assert batched == found, "rank_many differs from rank one user at a time"
        row = {
            "items": len(cat),
            "index_catch_up_s": sync_s,
            "moments_catch_up_s": moments_s,
            "recall_at_10": _recall(found, truth),
            "exact": _stats(exact_t),
            "index": _stats(index_t),
            "index_batched_per_user_ms": batch_s * 1e3,
        }
        rows.append(row)
        print(
            f"{len(cat):7d} items  catch-up {sync_s:5.1f}s  recall@10 {row['recall_at_10']:.3f}  "
            f"exact p50 {row['exact']['median_ms']:6.1f} p99 {row['exact']['p99_ms']:6.1f} ms  "
            f"index p50 {row['index']['median_ms']:5.2f} p99 {row['index']['p99_ms']:5.2f} ms  "
            f"batched {batch_s * 1e3:5.2f} ms/user",
            flush=True,
        )
    swept = []
    for m in sweep:
        params = CoreParams(ann=AnnSpec(min_items=1, candidates=m))
        found, times = _per_user(rank, states, cat, params)
        swept.append({"candidates": m, "recall_at_10": _recall(found, truth), **_stats(times)})
        last = swept[-1]
        print(
            f"  candidates {m:4d}: recall@10 {last['recall_at_10']:.3f}  "
            f"p50 {last['median_ms']:.2f} ms  p99 {last['p99_ms']:.2f} ms",
            flush=True,
        )
    return rows, swept


def text_catalogue(size: int, users: int, seed: int) -> tuple[Workload, Catalogue]:
    """The bench's ``--catalogue-size`` catalogue (seed ``seed``) and ``users`` of its users.

    `synthetic_workload` draws its items before its users, so ``users``
    users over the load workload's items (60 per tag, the same seed) see
    the catalogue the bench's 500 do.
    """
    from models.encoder import ensure_exported
    from streams.loadtest import ITEMS_PER_TAG, encode_items
    from streams.workload import catalogue_items

    work = synthetic_workload(users=users, events_per_user=60, items_per_tag=ITEMS_PER_TAG,
                              seed=seed)  # fmt: skip
    generated = catalogue_items(max(0, size - len(work.items)), seed=seed)
    started, artifact = time.perf_counter(), str(ensure_exported().parent)
    # Apart, as the bench encodes them: the generated items' cached chunks are the bench's.
    rows = [p.rows for p in (encode_items(work.items, artifact), encode_items(generated, artifact))]
    print(f"{len(work.items) + len(generated):,} texts encoded (or read from the cache) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    cat = Catalogue(DIM)
    for row in [*rows[0], *rows[1]]:
        cat.upsert(row.item_id, row.vector, row.tags)
    return work, cat


def compare_text(size: int, users: int, sweep: list[int], seed: int) -> dict[str, object]:
    """Exact against index ranking on the bench's text catalogue, at each candidate count."""
    work, cat = text_catalogue(size, users, seed)
    exact = CoreParams(ann=AnnSpec(min_items=0))
    states = user_states(work, cat, exact)
    start = time.perf_counter()
    ann.index_for(cat, AnnSpec(min_items=1))
    build_s = time.perf_counter() - start
    cat.moments()
    truth, exact_t = _per_user(rank_exact, states, cat, exact)
    swept = []
    for m in sorted({AnnSpec().candidates, *sweep}):
        found, times = _per_user(
            rank, states, cat, CoreParams(ann=AnnSpec(min_items=1, candidates=m))
        )
        swept.append({"candidates": m, "recall_at_10": _recall(found, truth), **_stats(times)})
        print(
            f"  text catalogue {len(cat):,}: candidates {m:4d}: recall@10 "
            f"{swept[-1]['recall_at_10']:.3f}  p99 {swept[-1]['p99_ms']:.2f} ms",
            flush=True,
        )
    return {
        "items": len(cat), "users": len(states), "index_build_s": build_s,
        "exact": _stats(exact_t), "candidate_sweep": swept,
        "catalogue": f"synthetic_workload(seed={seed}) items + catalogue_items(seed={seed}), "
        "all-MiniLM-L6-v2 fp32 vectors of their texts",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "libraries", "core", "text"), default="all")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sizes", default="5000,10000,20000,50000", help="smaller sizes too")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--sweep", default="50,100,200,400", help="candidates tried at --items")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="threads of the library builds")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--noise", type=float, default=0.9, help="per-item noise (core part)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ann_index.json")
    args = parser.parse_args()
    result: dict[str, object] = {}
    if args.out.exists():  # one part at a time keeps the other's figures
        result = json.loads(args.out.read_text())
    if args.part in ("all", "libraries"):
        names = [n for n in args.libraries.split(",") if importlib.util.find_spec(_MODULE[n])]
        result["libraries"] = compare_libraries(
            args.items, args.queries, args.candidates, args.threads, names
        )
        result["library_setup"] = {
            "items": args.items, "dim": DIM, "M": M, "ef_construction": EF_CONSTRUCTION,
            "build_threads": args.threads, "queries": args.queries,
        }  # fmt: skip
    if args.part in ("all", "core"):
        sizes = [int(x) for x in args.sizes.split(",") if x and int(x) < args.items]
        rows, swept = compare_core(
            [*sizes, args.items],
            args.users,
            [int(x) for x in args.sweep.split(",")],
            args.seed,
            args.noise,
        )
        result["core"] = {"by_size": rows, "candidate_sweep": swept}
        result["core_setup"] = {
            "workload": f"synthetic_workload(users={args.users}, events_per_user=60, "
            f"seed={args.seed}) in a catalogue of clustered filler items",
            "default_spec": str(AnnSpec()),
        }
    if args.part == "text":
        sweep = [int(x) for x in args.sweep.split(",")]
        result["text"] = compare_text(args.items, args.users, sweep, args.seed)
    result["machine"] = {"python": platform.python_version(), "processor": platform.processor(),
                         "cpus": os.cpu_count()}  # fmt: skip
    bars: dict[str, dict[str, float]] = {}
    core = result.get("core")
    if args.part == "text":
        text = result["text"]
        bars = {"recall@10": {str(r["candidates"]): r["recall_at_10"]
                              for r in text["candidate_sweep"]}}  # fmt: skip
        save(args.out, result, bars, ylabel="recall@10 against exact",
             title=f"Index path on the bench's {text['items']:,}-item text catalogue")  # fmt: skip
        return
    if isinstance(core, dict):
        bars = {
            "exact p99 ms": {f"{r['items']:,}": r["exact"]["p99_ms"] for r in core["by_size"]},
            "index p99 ms": {f"{r['items']:,}": r["index"]["p99_ms"] for r in core["by_size"]},
        }
    else:
        libs = result["libraries"]
        bars = {"build s": {n: float(r.get("build_s", 0.0)) for n, r in libs.items()}}
    save(args.out, result, bars, ylabel="ms per user (p99)" if core else "seconds",
         title="Ranking one user: exact vs through the index", log_scale=bool(core))  # fmt: skip


#: The module each library is imported as (a missing one is skipped).
_MODULE = {"hnswlib": "hnswlib", "usearch": "usearch", "faiss-cpu": "faiss", "voyager": "voyager"}


if __name__ == "__main__":
    main()
