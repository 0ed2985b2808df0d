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

Usage::

    python benchmarks/ann_index.py [--items 100000] [--users 60] [--out benchmarks/results/ann_index.json]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _results import RESULTS, save

DIM = 384
#: Graph degree and build width used for every library (the core's defaults).
M, EF_CONSTRUCTION = 16, 100


def clustered(n: int, seed: int, dim: int = DIM, topics: int = 400) -> np.ndarray:
    """``n`` unit vectors that look like sentence embeddings to an index.

    A common component (MiniLM's vectors share one: their mean cosine is
    about 0.1-0.2), one of ``topics`` directions per item at a random
    strength, and isotropic noise; unit length.
    """
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(topics, size=n)
    strength = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
    noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x = 0.4 * common + strength * centres[which] + 0.9 * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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
        np.mean([len(set(f.tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)])
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
    truth = np.array([row[np.argsort(-(x[row] @ qq))] for row, qq in zip(truth, q)])
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
        fresh = clustered(200, seed=4)
        keys = rng.choice(n, size=200, replace=False)
        it = iter(range(200))
        row["update_s"] = _timed(lambda: lib.update(int(keys[next(it)]), fresh[0]), 100)
        it2 = iter(range(100, 200))
        row["remove_s"] = _timed(lambda: lib.remove(int(keys[next(it2)])), 100)
        it3 = iter(range(200))
        row["add_s"] = _timed(lambda: lib.add(n + next(it3), fresh[1]), 100)
        out[name] = row
        print(
            f"{name:10s} build {build_s:6.1f}s  k10 {row['query_k10_s'] * 1e6:6.0f}us "
            f"r@10 {row['recall_at_10_k10']:.3f}  k{candidates} "
            f"{row[f'query_k{candidates}_s'] * 1e6:6.0f}us r@10 "
            f"{row[f'recall_at_10_k{candidates}']:.3f}  update {row['update_s']} "
            f"remove {row['remove_s']} add {row['add_s']}",
            flush=True,
        )
        del lib
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="threads of the bulk builds")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--out", type=Path, default=RESULTS / "ann_index.json")
    args = parser.parse_args()
    libs = compare_libraries(
        args.items, args.queries, args.candidates, args.threads, args.libraries.split(",")
    )
    result = {
        "libraries": libs,
        "setup": {"items": args.items, "dim": DIM, "M": M, "ef_construction": EF_CONSTRUCTION},
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
    }
    bars = {"build s": {n: float(r.get("build_s", 0.0)) for n, r in libs.items()}}
    save(args.out, result, bars, ylabel="seconds", title="ANN libraries")


if __name__ == "__main__":
    main()
